package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/model/gguf"
	"github.com/fomnet/fomnet/tokenizer"
)

// HFOptions choose what HF writes.
type HFOptions struct {
	// DType of model.safetensors: "f32" (default) or "bf16".
	DType string
}

// hfDType maps a --dtype to the safetensors dtype, torch_dtype and
// encoding.
func hfDType(s string) (st, torch string, typ gguf.Type, err error) {
	switch s {
	case "", "f32", "fp32", "float32":
		return "F32", "float32", gguf.F32, nil
	case "bf16", "bfloat16":
		return "BF16", "bfloat16", gguf.BF16, nil
	}
	return "", "", 0, fmt.Errorf("export: dtype %q for hf (f32, bf16)", s)
}

// HF writes a Hugging Face Llama model directory at dir (which must not
// exist; it appears atomically): model.safetensors under the Llama tensor
// names, config.json for LlamaForCausalLM, tokenizer.json,
// tokenizer_config.json and generation_config.json — what the transformers
// library loads with AutoModelForCausalLM and AutoTokenizer.
func HF(dir string, c model.Config, params []float32, tk *tokenizer.Tokenizer, o HFOptions) error {
	stType, torch, typ, err := hfDType(o.DType)
	if err != nil {
		return err
	}
	if tk.Vocab() > c.Vocab {
		return fmt.Errorf("export: the tokenizer has %d tokens, the model %d", tk.Vocab(), c.Vocab)
	}
	lay := model.NewLayout(c)
	if len(params) != lay.Size {
		return fmt.Errorf("export: %d parameters for a model of %d", len(params), lay.Size)
	}
	var tensors []model.STensor
	for _, t := range lay.Tensors {
		data, err := gguf.Encode(typ, params[t.Offset:t.Offset+t.Size])
		if err != nil {
			return err
		}
		tensors = append(tensors, model.STensor{Name: t.Name, DType: stType, Shape: t.Shape, Data: data})
	}
	var st bytes.Buffer
	if err := model.WriteSafetensors(&st, tensors, map[string]string{"format": "pt"}); err != nil {
		return err
	}
	cfg, err := model.MarshalHFConfigAs(c, torch)
	if err != nil {
		return err
	}
	tj, err := tk.MarshalJSON()
	if err != nil {
		return err
	}
	special := func(s string) any {
		if _, ok := tk.SpecialID(s); ok {
			return s
		}
		return nil
	}
	tc := map[string]any{
		"tokenizer_class":              "PreTrainedTokenizerFast",
		"bos_token":                    special(tokenizer.BOS),
		"eos_token":                    special(tokenizer.EOS),
		"pad_token":                    special(tokenizer.PAD),
		"add_bos_token":                false,
		"add_eos_token":                false,
		"clean_up_tokenization_spaces": false,
		"model_max_length":             c.MaxSeq,
	}
	gen := map[string]any{"bos_token_id": c.BOS, "eos_token_id": c.EOS, "max_length": c.MaxSeq,
		"do_sample": true, "temperature": 0.8, "top_k": 40, "top_p": 0.95}
	if tk.Chat() {
		// apply_chat_template renders the project's chat format, and
		// generation ends a turn at <|end|> as at EOS.
		end, _ := tk.SpecialID(tokenizer.EndTurn)
		tc["chat_template"] = tokenizer.ChatTemplate
		gen["eos_token_id"] = []int{c.EOS, int(end)}
	}
	tcfg, _ := json.MarshalIndent(tc, "", "  ")
	if pad, ok := tk.SpecialID(tokenizer.PAD); ok {
		gen["pad_token_id"] = pad
	}
	gcfg, _ := json.MarshalIndent(gen, "", "  ")
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("export: %s already exists; refusing to overwrite it", dir)
	}
	return fsutil.WriteDir(dir, map[string][]byte{
		"model.safetensors":      st.Bytes(),
		"config.json":            append(cfg, '\n'),
		"tokenizer.json":         tj,
		"tokenizer_config.json":  append(tcfg, '\n'),
		"generation_config.json": append(gcfg, '\n'),
	})
}

// ReadHF reads a Hugging Face Llama directory written by HF (or by the
// transformers library for a Llama model of the shapes fomnet supports):
// config.json, model.safetensors (F32, BF16 or F16 tensors under the Llama
// names) and tokenizer.json. It returns the config, the weights in Layout
// order and the tokenizer.json bytes. For F32 files the weights are the
// stored bits exactly.
func ReadHF(dir string) (model.Config, []float32, []byte, error) {
	fail := func(err error) (model.Config, []float32, []byte, error) {
		return model.Config{}, nil, nil, fmt.Errorf("import %s: %w", dir, err)
	}
	cb, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return fail(err)
	}
	c, err := model.UnmarshalHFConfig(cb)
	if err != nil {
		return fail(err)
	}
	tj, err := os.ReadFile(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return fail(err)
	}
	tk, err := tokenizer.Parse(tj)
	if err != nil {
		return fail(fmt.Errorf("tokenizer.json: %w", err))
	}
	if tk.Vocab() > c.Vocab {
		return fail(fmt.Errorf("tokenizer.json has %d tokens, config.json vocab_size %d", tk.Vocab(), c.Vocab))
	}
	wpath := filepath.Join(dir, "model.safetensors")
	fi, err := os.Stat(wpath)
	if err != nil {
		return fail(err)
	}
	// The file must be able to hold what config.json promises (2 bytes a
	// parameter at least) before anything is allocated for it.
	if need := 2 * model.NumParams(c); fi.Size() < need {
		return fail(fmt.Errorf("model.safetensors has %d bytes; config.json describes %d parameters", fi.Size(), model.NumParams(c)))
	}
	wb, err := os.ReadFile(wpath)
	if err != nil {
		return fail(err)
	}
	ts, _, err := model.ReadSafetensors(wb)
	if err != nil {
		return fail(fmt.Errorf("model.safetensors: %w", err))
	}
	byName := map[string]model.STensor{}
	for _, t := range ts {
		byName[t.Name] = t
	}
	// Tied checkpoints from transformers may still store lm_head.weight: a
	// copy of the embedding, accepted as such.
	if lm, ok := byName["lm_head.weight"]; ok && c.Tied {
		emb := byName["model.embed_tokens.weight"]
		if lm.DType != emb.DType || !bytes.Equal(lm.Data, emb.Data) {
			return fail(fmt.Errorf("model.safetensors: tie_word_embeddings is set but lm_head.weight differs from the embedding"))
		}
		delete(byName, "lm_head.weight")
	}
	lay := model.NewLayout(c)
	params := make([]float32, lay.Size)
	for _, t := range lay.Tensors {
		st, ok := byName[t.Name]
		if !ok {
			return fail(fmt.Errorf("model.safetensors: tensor %s is missing", t.Name))
		}
		delete(byName, t.Name)
		if fmt.Sprint(st.Shape) != fmt.Sprint(t.Shape) {
			return fail(fmt.Errorf("model.safetensors: tensor %s has shape %v, config.json implies %v", t.Name, st.Shape, t.Shape))
		}
		var typ gguf.Type
		switch st.DType {
		case "F32":
			typ = gguf.F32
		case "BF16":
			typ = gguf.BF16
		case "F16":
			typ = gguf.F16
		default:
			return fail(fmt.Errorf("model.safetensors: tensor %s is %s (F32, BF16, F16 are read)", t.Name, st.DType))
		}
		x, err := gguf.Decode(typ, st.Data, t.Size)
		if err != nil {
			return fail(fmt.Errorf("model.safetensors: tensor %s: %w", t.Name, err))
		}
		copy(params[t.Offset:], x)
	}
	for name := range byName {
		return fail(fmt.Errorf("model.safetensors: unexpected tensor %s (not in the config's layout)", name))
	}
	return c, params, tj, nil
}
