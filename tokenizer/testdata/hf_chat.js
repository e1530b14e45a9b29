// Renders conversations with a chat template through Hugging Face's Jinja
// (@huggingface/jinja, as transformers.js does; raise_exception built in)
// and encodes the result with Hugging Face tokenizers, as transformers'
// apply_chat_template does: argv: tokenizer.json, template file,
// conversations ([{messages, add_generation_prompt}]). Prints, per
// conversation, {text, ids} or {error}. Used by TestChatTemplateHF.
const fs = require('fs');
const { Tokenizer } = require(process.env.HF_TOKENIZERS_MODULE || 'tokenizers');
const { Template } = require(process.env.HF_JINJA_MODULE || '@huggingface/jinja');
(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const tmpl = new Template(fs.readFileSync(process.argv[3], 'utf8'));
  const convs = JSON.parse(fs.readFileSync(process.argv[4], 'utf8'));
  const out = [];
  for (const c of convs) {
    let text;
    try {
      text = tmpl.render({ messages: c.messages, add_generation_prompt: c.add_generation_prompt });
    } catch (e) {
      out.push({ error: String(e.message) });
      continue;
    }
    const enc = await tok.encode(text, null, { addSpecialTokens: false });
    out.push({ text, ids: Array.from(enc.getIds()) });
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
