package export

import (
	"fmt"
	"io"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/model/gguf"
	"github.com/fomnet/fomnet/tokenizer"
)

// GGUF token types (llama.cpp's llama_token_type).
const (
	tokNormal  int32 = 1
	tokControl int32 = 3
	tokUnused  int32 = 5
)

// fileType is general.file_type for a tensor type (llama.cpp's
// llama_ftype: all F32, mostly F16, mostly Q8_0, mostly BF16).
func fileType(t gguf.Type) uint32 {
	switch t {
	case gguf.F16:
		return 1
	case gguf.Q8_0:
		return 7
	case gguf.BF16:
		return 32
	}
	return 0
}

// ropeToInterleaved permutes the rows of a q_proj or k_proj weight
// ([heads·hd, dim], row-major) from the Hugging Face RoPE layout, which
// rotates dimension j of a head with j+hd/2, to GGUF's llama layout, which
// rotates 2j with 2j+1: row j of a head moves to 2j, row j+hd/2 to 2j+1.
func ropeToInterleaved(w []float32, heads, hd, dim int) []float32 {
	out := make([]float32, len(w))
	half := hd / 2
	for h := 0; h < heads; h++ {
		for j := 0; j < hd; j++ {
			dst := 2*j + 0
			if j >= half {
				dst = 2*(j-half) + 1
			}
			copy(out[(h*hd+dst)*dim:(h*hd+dst+1)*dim], w[(h*hd+j)*dim:(h*hd+j+1)*dim])
		}
	}
	return out
}

// ggufName maps a Hugging Face Llama tensor name to GGUF's.
func ggufName(hf string) (string, bool) {
	switch hf {
	case "model.embed_tokens.weight":
		return "token_embd.weight", true
	case "model.norm.weight":
		return "output_norm.weight", true
	case "lm_head.weight":
		return "output.weight", true
	}
	var layer int
	var rest string
	if n, _ := fmt.Sscanf(hf, "model.layers.%d.%s", &layer, &rest); n != 2 {
		return "", false
	}
	m := map[string]string{
		"input_layernorm.weight":          "attn_norm.weight",
		"self_attn.q_proj.weight":         "attn_q.weight",
		"self_attn.k_proj.weight":         "attn_k.weight",
		"self_attn.v_proj.weight":         "attn_v.weight",
		"self_attn.o_proj.weight":         "attn_output.weight",
		"post_attention_layernorm.weight": "ffn_norm.weight",
		"mlp.gate_proj.weight":            "ffn_gate.weight",
		"mlp.up_proj.weight":              "ffn_up.weight",
		"mlp.down_proj.weight":            "ffn_down.weight",
	}[rest]
	if m == "" {
		return "", false
	}
	return fmt.Sprintf("blk.%d.%s", layer, m), true
}

// GGUFOptions choose what GGUF writes.
type GGUFOptions struct {
	// Type of the matrices (F32, F16, BF16, Q8_0). Norm weights stay F32,
	// as llama.cpp requires; a matrix whose rows are not a multiple of 32
	// values falls back from Q8_0 to F16.
	Type gguf.Type
	// Name is general.name.
	Name string
}

// GGUF writes a llama-architecture GGUF v3 file for the model c with
// weights params (Layout order) and its tokenizer: hyperparameters, the
// byte-level BPE vocabulary, merges, token types and special ids in the
// metadata, and every tensor under its GGUF name with Q and K rows in
// GGUF's RoPE layout.
func GGUF(w io.Writer, c model.Config, params []float32, tk *tokenizer.Tokenizer, o GGUFOptions) error {
	if err := c.Validate(); err != nil {
		return err
	}
	lay := model.NewLayout(c)
	if len(params) != lay.Size {
		return fmt.Errorf("export: %d parameters for a model of %d", len(params), lay.Size)
	}
	if tk.Vocab() > c.Vocab {
		return fmt.Errorf("export: the tokenizer has %d tokens, the model %d", tk.Vocab(), c.Vocab)
	}
	hd := c.HeadDim()
	tokens := make([]string, c.Vocab)
	types := make([]int32, c.Vocab)
	for id := range c.Vocab {
		switch s, ok := tk.TokenString(int32(id)); {
		case !ok: // the model's vocabulary is larger than the tokenizer's
			tokens[id], types[id] = fmt.Sprintf("[PAD%d]", id), tokUnused
		case tk.IsSpecial(int32(id)):
			tokens[id], types[id] = s, tokControl
		default:
			// Byte tokens too: type BYTE means SentencePiece's "<0xXX>"
			// spelling, which llama.cpp parses as such; a byte-level BPE
			// vocabulary spells bytes in its alphabet, as normal tokens.
			tokens[id], types[id] = s, tokNormal
		}
	}
	name := o.Name
	if name == "" {
		name = "fomnet"
	}
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: "llama"},
		{Key: "general.name", Value: name},
		{Key: "general.file_type", Value: fileType(o.Type)},
		{Key: "llama.context_length", Value: uint32(c.MaxSeq)},
		{Key: "llama.embedding_length", Value: uint32(c.Dim)},
		{Key: "llama.block_count", Value: uint32(c.Layers)},
		{Key: "llama.feed_forward_length", Value: uint32(c.FFNDim)},
		{Key: "llama.attention.head_count", Value: uint32(c.Heads)},
		{Key: "llama.attention.head_count_kv", Value: uint32(c.KVHeads)},
		{Key: "llama.attention.key_length", Value: uint32(hd)},
		{Key: "llama.attention.value_length", Value: uint32(hd)},
		{Key: "llama.rope.dimension_count", Value: uint32(hd)},
		{Key: "llama.rope.freq_base", Value: float32(c.RopeTheta)},
		{Key: "llama.attention.layer_norm_rms_epsilon", Value: float32(c.NormEps)},
		{Key: "llama.vocab_size", Value: uint32(c.Vocab)},
		{Key: "tokenizer.ggml.model", Value: "gpt2"},
		{Key: "tokenizer.ggml.pre", Value: "default"},
		{Key: "tokenizer.ggml.tokens", Value: tokens},
		{Key: "tokenizer.ggml.token_type", Value: types},
		{Key: "tokenizer.ggml.merges", Value: tk.MergeStrings()},
		{Key: "tokenizer.ggml.bos_token_id", Value: uint32(c.BOS)},
		{Key: "tokenizer.ggml.eos_token_id", Value: uint32(c.EOS)},
		{Key: "tokenizer.ggml.add_bos_token", Value: false},
		{Key: "tokenizer.ggml.add_eos_token", Value: false},
	}
	if pad, ok := tk.SpecialID(tokenizer.PAD); ok {
		kvs = append(kvs, gguf.KV{Key: "tokenizer.ggml.padding_token_id", Value: uint32(pad)})
	}
	if tk.Chat() {
		end, _ := tk.SpecialID(tokenizer.EndTurn)
		kvs = append(kvs, gguf.KV{Key: "tokenizer.chat_template", Value: tokenizer.ChatTemplate},
			gguf.KV{Key: "tokenizer.ggml.eot_token_id", Value: uint32(end)})
	}
	var tensors []gguf.Tensor
	for _, t := range lay.Tensors {
		gn, ok := ggufName(t.Name)
		if !ok {
			return fmt.Errorf("export: no GGUF name for tensor %s", t.Name)
		}
		x := params[t.Offset : t.Offset+t.Size]
		switch {
		case len(t.Shape) == 2 && gn[len(gn)-len("attn_q.weight"):] == "attn_q.weight":
			x = ropeToInterleaved(x, c.Heads, hd, c.Dim)
		case len(t.Shape) == 2 && gn[len(gn)-len("attn_k.weight"):] == "attn_k.weight":
			x = ropeToInterleaved(x, c.KVHeads, hd, c.Dim)
		}
		typ := o.Type
		dims := make([]uint64, len(t.Shape))
		for i, d := range t.Shape { // GGUF lists the fastest dimension first
			dims[len(t.Shape)-1-i] = uint64(d)
		}
		if len(t.Shape) == 1 {
			typ = gguf.F32
		} else if typ == gguf.Q8_0 && dims[0]%gguf.Q8Block != 0 {
			typ = gguf.F16
		}
		data, err := gguf.Encode(typ, x)
		if err != nil {
			return fmt.Errorf("export: tensor %s: %w", t.Name, err)
		}
		tensors = append(tensors, gguf.Tensor{Name: gn, Dims: dims, Type: typ, Data: data})
	}
	return gguf.Write(w, kvs, tensors, 0)
}
