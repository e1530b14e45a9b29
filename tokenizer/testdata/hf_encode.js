// Encodes each line of a JSON array of strings with Hugging Face tokenizers
// (the Rust library's Node bindings) and prints one JSON array of ids per
// input. Used by TestHuggingFaceIdentical.
const fs = require('fs');
const { Tokenizer } = require(process.env.HF_TOKENIZERS_MODULE || 'tokenizers');
(async () => {
  const tok = Tokenizer.fromFile(process.argv[2]);
  const texts = JSON.parse(fs.readFileSync(process.argv[3], 'utf8'));
  const out = [];
  for (const t of texts) {
    const enc = await tok.encode(t, null, { addSpecialTokens: false });
    out.push(Array.from(enc.getIds()));
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(e); process.exit(1); });
