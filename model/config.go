package model

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// Config is the shape of a Llama-style decoder: pre-norm RMSNorm blocks,
// grouped-query attention with RoPE, a SwiGLU MLP, and an optional tied
// output embedding. Field names follow Hugging Face's LlamaConfig where one
// exists.
type Config struct {
	Dim       int     // hidden size (hidden_size)
	Layers    int     // transformer blocks (num_hidden_layers)
	Heads     int     // query heads (num_attention_heads); Dim % Heads == 0
	KVHeads   int     // key/value heads (num_key_value_heads); Heads % KVHeads == 0
	FFNDim    int     // SwiGLU inner size (intermediate_size)
	Vocab     int     // vocabulary size (vocab_size)
	MaxSeq    int     // longest sequence (max_position_embeddings)
	RopeTheta float64 // RoPE base (rope_theta)
	NormEps   float64 // RMSNorm epsilon (rms_norm_eps)
	Tied      bool    // lm_head shares embed_tokens (tie_word_embeddings)
	// EOS is the token that ends a document. Attention never crosses it and
	// positions restart after it (intra-document masking).
	EOS int
	// BOS is the token that starts a sequence during generation.
	BOS int
}

// HeadDim is Dim / Heads.
func (c Config) HeadDim() int { return c.Dim / c.Heads }

// Validate reports the first field that is out of range.
func (c Config) Validate() error {
	var errs []error
	pos := func(name string, v int) {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s = %d must be positive", name, v))
		}
	}
	pos("dim", c.Dim)
	pos("layers", c.Layers)
	pos("heads", c.Heads)
	pos("kv_heads", c.KVHeads)
	pos("ffn_dim", c.FFNDim)
	pos("vocab", c.Vocab)
	pos("max_seq", c.MaxSeq)
	for _, f := range []struct {
		name  string
		v, hi int
	}{{"dim", c.Dim, 1 << 16}, {"layers", c.Layers, 1 << 10}, {"heads", c.Heads, 1 << 10},
		{"ffn_dim", c.FFNDim, 1 << 18}, {"vocab", c.Vocab, 1 << 22}, {"max_seq", c.MaxSeq, 1 << 20}} {
		if f.v > f.hi {
			errs = append(errs, fmt.Errorf("%s = %d exceeds the supported maximum %d", f.name, f.v, f.hi))
		}
	}
	if len(errs) == 0 {
		if c.Dim%c.Heads != 0 {
			errs = append(errs, fmt.Errorf("dim %d is not a multiple of heads %d", c.Dim, c.Heads))
		} else if c.HeadDim()%2 != 0 {
			errs = append(errs, fmt.Errorf("head dim %d (dim/heads) must be even for RoPE", c.HeadDim()))
		}
		if c.Heads%c.KVHeads != 0 {
			errs = append(errs, fmt.Errorf("heads %d is not a multiple of kv_heads %d", c.Heads, c.KVHeads))
		}
		if c.EOS < 0 || c.EOS >= c.Vocab {
			errs = append(errs, fmt.Errorf("eos token %d outside vocabulary [0, %d)", c.EOS, c.Vocab))
		}
		if c.BOS < 0 || c.BOS >= c.Vocab {
			errs = append(errs, fmt.Errorf("bos token %d outside vocabulary [0, %d)", c.BOS, c.Vocab))
		}
	}
	if !(c.RopeTheta > 1) {
		errs = append(errs, fmt.Errorf("rope_theta %v must be > 1", c.RopeTheta))
	}
	if !(c.NormEps > 0 && c.NormEps < 1) {
		errs = append(errs, fmt.Errorf("norm_eps %v must lie in (0, 1)", c.NormEps))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("model config: %w", err)
	}
	return nil
}

// Byte-level token ids used until a trained tokenizer is supplied: the 256
// byte values, then the special tokens.
const (
	ByteEOS   = 256
	ByteBOS   = 257
	BytePad   = 258
	ByteVocab = 259 // smallest vocabulary that holds byte-level tokens
)

// presets are the named shapes. Byte-level EOS/BOS ids are used so that every
// preset can train on raw bytes before the tokenizer lands.
var presets = map[string]Config{
	// tiny: for tests; 112,960 parameters.
	"tiny": {Dim: 64, Layers: 2, Heads: 4, KVHeads: 2, FFNDim: 176, Vocab: 320, MaxSeq: 128,
		RopeTheta: 10000, NormEps: 1e-5, Tied: true, EOS: ByteEOS, BOS: ByteBOS},
	// demo: trains on two CPU cores; about 5.1M parameters, 2.1M of them the
	// (tied) embedding of an 8k vocabulary.
	"demo": {Dim: 256, Layers: 4, Heads: 8, KVHeads: 4, FFNDim: 704, Vocab: 8192, MaxSeq: 512,
		RopeTheta: 10000, NormEps: 1e-5, Tied: true, EOS: ByteEOS, BOS: ByteBOS},
	// gpt2-small-like: GPT-2 small's width, depth and vocabulary in Llama form
	// (SwiGLU at 2/3·4·dim), for comparison with other CPU trainers.
	"gpt2-small-like": {Dim: 768, Layers: 12, Heads: 12, KVHeads: 12, FFNDim: 2048, Vocab: 50304, MaxSeq: 1024,
		RopeTheta: 10000, NormEps: 1e-5, Tied: true, EOS: ByteEOS, BOS: ByteBOS},
	// llama-1b: a 1.1B shape in the manner of Llama 3.2 1B — 16 layers 2048
	// wide, 32 query and 8 KV heads (head dim 64), SwiGLU 8192 — with a
	// 32,768-token vocabulary, untied: 1,107,363,840 parameters. The largest
	// preset that trains on a 24 GB CPU machine (fomnet model plan).
	"llama-1b": {Dim: 2048, Layers: 16, Heads: 32, KVHeads: 8, FFNDim: 8192, Vocab: 32768, MaxSeq: 2048,
		RopeTheta: 500000, NormEps: 1e-5, Tied: false, EOS: ByteEOS, BOS: ByteBOS},
	// kormo-10b: a KORMo-10B-sized shape, config only. dim 4096, 32 query and
	// 8 KV heads (head dim 128), vocab 125,184 untied. 40 layers with a SwiGLU
	// size of 16,384 give 243.28M parameters a block and 10,756,624,384 in all
	// (10.757B, within 0.06% of 10.75B).
	"kormo-10b": {Dim: 4096, Layers: 40, Heads: 32, KVHeads: 8, FFNDim: 16384, Vocab: 125184, MaxSeq: 4096,
		RopeTheta: 500000, NormEps: 1e-5, Tied: false, EOS: ByteEOS, BOS: ByteBOS},
}

// Preset returns a named configuration.
func Preset(name string) (Config, error) {
	c, ok := presets[name]
	if !ok {
		return Config{}, fmt.Errorf("unknown preset %q (known: %v)", name, PresetNames())
	}
	return c, nil
}

// PresetNames lists the presets in order of size.
func PresetNames() []string {
	names := make([]string, 0, len(presets))
	for n := range presets {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool {
		return NumParams(presets[names[i]]) < NumParams(presets[names[j]])
	})
	return slices.Clip(names)
}

// NumParams is the number of parameters.
func NumParams(c Config) int64 { return int64(NewLayout(c).Size) }

// MatmulParams counts the weights that take part in a matrix product per
// token: every projection and the output head (tied or not), not the input
// embedding lookup or the norms.
func MatmulParams(c Config) int64 {
	hd := c.HeadDim()
	attn := int64(c.Dim) * int64(c.Heads*hd+2*c.KVHeads*hd) // q, k, v
	attn += int64(c.Heads*hd) * int64(c.Dim)                // o
	mlp := 3 * int64(c.Dim) * int64(c.FFNDim)
	return int64(c.Layers)*(attn+mlp) + int64(c.Vocab)*int64(c.Dim)
}

// TrainFLOPsPerToken estimates the floating-point operations of one training
// token (forward and backward) at sequence length t: 6 per matmul weight plus
// causal attention, 6·layers·dim·(t+1) (scores and mixing, each 2·dim per key,
// (t+1)/2 keys on average, times 3 for forward and backward). Document masking
// only lowers the true figure.
func TrainFLOPsPerToken(c Config, t int) float64 {
	return 6*float64(MatmulParams(c)) + 6*float64(c.Layers)*float64(c.Dim)*float64(t+1)
}
