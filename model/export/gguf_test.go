package export

import (
	"bytes"
	"context"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/model/gguf"
	"github.com/fomnet/fomnet/tokenizer"
)

func testModel(t *testing.T) (*model.Model, []float32, *tokenizer.Tokenizer) {
	t.Helper()
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { be.Close() })
	c, _ := model.Preset("tiny")
	c.Tied = false // exercise output.weight too
	m, err := model.New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(11)
	params := make([]float32, m.Layout.Size)
	be.Download(params, m.Params)
	// Larger weights than at initialisation: sharper attention and a wide
	// logit range, so a wrong layout cannot hide in small numbers.
	for i := range params {
		params[i] *= 4
	}
	be.Upload(m.Params, params)
	text := strings.Repeat("오늘 아침에는 비가 조금 내렸다. It rained a little this morning. ", 20)
	tk, err := tokenizer.Train(context.Background(), slices.Values([]string{text}), tokenizer.TrainConfig{Vocab: 300})
	if err != nil {
		t.Fatal(err)
	}
	return m, params, tk
}

// refLogits is an independent float64 Llama forward pass over a GGUF
// file, written from the GGUF llama conventions (interleaved RoPE pairs
// 2j, 2j+1; GGUF dims fastest first), not from package model: the stand-in
// for llama.cpp in this test.
func refLogits(t *testing.T, f *gguf.File, tokens []int32) [][]float64 {
	t.Helper()
	u32 := func(k string) int { return int(f.KV[k].(uint32)) }
	dim, layers, heads, kvh := u32("llama.embedding_length"), u32("llama.block_count"), u32("llama.attention.head_count"), u32("llama.attention.head_count_kv")
	vocab, hd := u32("llama.vocab_size"), u32("llama.rope.dimension_count")
	eps := float64(f.KV["llama.attention.layer_norm_rms_epsilon"].(float32))
	theta := float64(f.KV["llama.rope.freq_base"].(float32))
	// mat returns a tensor as rows (dims[1]) of dims[0] values.
	mat := func(name string) [][]float64 {
		tn, ok := f.Tensor(name)
		if !ok {
			t.Fatalf("no tensor %s", name)
		}
		x, err := gguf.Decode(tn.Type, tn.Data, int(tn.Elements()))
		if err != nil {
			t.Fatal(err)
		}
		cols := int(tn.Dims[0])
		rows := len(x) / cols
		out := make([][]float64, rows)
		for r := range out {
			out[r] = make([]float64, cols)
			for c := range cols {
				out[r][c] = float64(x[r*cols+c])
			}
		}
		return out
	}
	vec := func(name string) []float64 { return mat(name)[0] }
	mul := func(w [][]float64, x []float64) []float64 { // w·x
		out := make([]float64, len(w))
		for r, row := range w {
			for c, v := range row {
				out[r] += v * x[c]
			}
		}
		return out
	}
	norm := func(x, w []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		s := 1 / math.Sqrt(ss/float64(len(x))+eps)
		out := make([]float64, len(x))
		for i := range x {
			out[i] = x[i] * s * w[i]
		}
		return out
	}
	rope := func(v []float64, nh, pos int) {
		for h := 0; h < nh; h++ {
			for j := 0; j < hd/2; j++ {
				ang := float64(pos) * math.Pow(theta, -2*float64(j)/float64(hd))
				a, b := v[h*hd+2*j], v[h*hd+2*j+1]
				v[h*hd+2*j] = a*math.Cos(ang) - b*math.Sin(ang)
				v[h*hd+2*j+1] = b*math.Cos(ang) + a*math.Sin(ang)
			}
		}
	}
	emb := mat("token_embd.weight")
	T := len(tokens)
	x := make([][]float64, T)
	for p, id := range tokens {
		x[p] = append([]float64(nil), emb[id]...)
	}
	for l := 0; l < layers; l++ {
		pre := func(s string) string { return "blk." + string(rune('0'+l)) + "." + s }
		wq, wk, wv, wo := mat(pre("attn_q.weight")), mat(pre("attn_k.weight")), mat(pre("attn_v.weight")), mat(pre("attn_output.weight"))
		qs, ks, vs := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for p := range T {
			xn := norm(x[p], vec(pre("attn_norm.weight")))
			qs[p], ks[p], vs[p] = mul(wq, xn), mul(wk, xn), mul(wv, xn)
			rope(qs[p], heads, p)
			rope(ks[p], kvh, p)
		}
		for p := range T {
			att := make([]float64, heads*hd)
			for h := 0; h < heads; h++ {
				g := h / (heads / kvh)
				sc := make([]float64, p+1)
				mx := math.Inf(-1)
				for s := 0; s <= p; s++ {
					for j := 0; j < hd; j++ {
						sc[s] += qs[p][h*hd+j] * ks[s][g*hd+j]
					}
					sc[s] /= math.Sqrt(float64(hd))
					mx = math.Max(mx, sc[s])
				}
				var sum float64
				for s := range sc {
					sc[s] = math.Exp(sc[s] - mx)
					sum += sc[s]
				}
				for s := range sc {
					for j := 0; j < hd; j++ {
						att[h*hd+j] += sc[s] / sum * vs[s][g*hd+j]
					}
				}
			}
			o := mul(wo, att)
			for i := range x[p] {
				x[p][i] += o[i]
			}
		}
		wg, wu, wd := mat(pre("ffn_gate.weight")), mat(pre("ffn_up.weight")), mat(pre("ffn_down.weight"))
		for p := range T {
			xn := norm(x[p], vec(pre("ffn_norm.weight")))
			g, u := mul(wg, xn), mul(wu, xn)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := mul(wd, g)
			for i := range x[p] {
				x[p][i] += d[i]
			}
		}
	}
	out := mat("output.weight")
	if len(out) != vocab || len(out[0]) != dim {
		t.Fatalf("output.weight %d×%d", len(out), len(out[0]))
	}
	logits := make([][]float64, T)
	for p := range T {
		logits[p] = mul(out, norm(x[p], vec("output_norm.weight")))
	}
	return logits
}

// The GGUF file computes the same next-token logits as the model: an
// independent float64 forward pass over the exported tensors, with GGUF's
// RoPE layout, agrees with package model's logits (F32 to 1e-4 of the
// logit range; F16 to 0.5%; Q8_0 to 10%, with the same top token at most positions).
func TestGGUFLogitsMatchModel(t *testing.T) {
	m, params, tk := testModel(t)
	c := m.Config
	tokens := tk.Encode("오늘 아침에는 비가 It rained")
	if len(tokens) < 6 {
		t.Fatalf("only %d tokens", len(tokens))
	}
	if _, err := m.Forward(tokens, nil, 1, len(tokens), false); err != nil {
		t.Fatal(err)
	}
	want := make([][]float32, len(tokens))
	for p := range tokens {
		want[p] = make([]float32, c.Vocab)
		if err := m.Logits(want[p], 0, p); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		typ      gguf.Type
		tol      float64
		topAgree int // positions (of len(tokens)) whose argmax must agree
	}{{gguf.F32, 1e-4, len(tokens)}, {gguf.F16, 5e-3, len(tokens) - 2}, {gguf.Q8_0, 0.1, len(tokens) - 2}} {
		var buf bytes.Buffer
		if err := GGUF(&buf, m.Config, params, tk, GGUFOptions{Type: c.typ, Name: "test"}); err != nil {
			t.Fatal(err)
		}
		f, err := gguf.Read(buf.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		got := refLogits(t, f, tokens)
		agree := 0
		for p := range tokens {
			lo, hi := math.Inf(1), math.Inf(-1)
			var worst float64
			am, bm := 0, 0
			for i, w := range want[p] {
				lo, hi = math.Min(lo, float64(w)), math.Max(hi, float64(w))
				worst = math.Max(worst, math.Abs(got[p][i]-float64(w)))
				if w > want[p][am] {
					am = i
				}
				if got[p][i] > got[p][bm] {
					bm = i
				}
			}
			if worst > c.tol*(hi-lo) {
				t.Errorf("%s position %d: logits differ by %.3g, range %.3g", c.typ, p, worst, hi-lo)
			}
			if am == bm {
				agree++
			}
		}
		if agree < c.topAgree {
			t.Errorf("%s: top token agrees at %d of %d positions", c.typ, agree, len(tokens))
		}
	}
}

func TestGGUFMetadata(t *testing.T) {
	m, params, tk := testModel(t)
	var buf bytes.Buffer
	if err := GGUF(&buf, m.Config, params, tk, GGUFOptions{Type: gguf.Q8_0}); err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Read(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	toks := f.KV["tokenizer.ggml.tokens"].([]any)
	types := f.KV["tokenizer.ggml.token_type"].([]any)
	if len(toks) != m.Config.Vocab || len(types) != m.Config.Vocab {
		t.Fatalf("%d tokens, %d types for vocab %d", len(toks), len(types), m.Config.Vocab)
	}
	eos := f.KV["tokenizer.ggml.eos_token_id"].(uint32)
	if toks[eos] != tokenizer.EOS || types[eos] != tokControl || types[65] != tokNormal || toks[65] != "A" {
		t.Fatalf("eos %d = %v (%v), token 65 = %v (%v)", eos, toks[eos], types[eos], toks[65], types[65])
	}
	if s, _ := tk.TokenString(int32(tk.Vocab() - 1)); toks[tk.Vocab()-1] != s || types[tk.Vocab()-1] != tokNormal {
		t.Fatalf("last merge token %v", toks[tk.Vocab()-1])
	}
	if types[m.Config.Vocab-1] != tokUnused {
		t.Fatalf("padding token type %v", types[m.Config.Vocab-1])
	}
	if got := len(f.KV["tokenizer.ggml.merges"].([]any)); got != tk.Vocab()-256-len(tk.Specials()) {
		t.Fatalf("%d merges", got)
	}
	if eot := f.KV["tokenizer.ggml.eot_token_id"].(uint32); f.KV["tokenizer.chat_template"] != tokenizer.ChatTemplate || toks[eot] != tokenizer.EndTurn {
		t.Fatalf("chat template %v, end of turn %v", f.KV["tokenizer.chat_template"], toks[eot])
	}
	for _, tn := range f.Tensors {
		switch {
		case len(tn.Dims) == 1 && tn.Type != gguf.F32:
			t.Errorf("%s: norm weight as %s", tn.Name, tn.Type)
		case len(tn.Dims) == 2 && tn.Dims[0]%32 == 0 && tn.Type != gguf.Q8_0:
			t.Errorf("%s %v: %s, want Q8_0", tn.Name, tn.Dims, tn.Type)
		case len(tn.Dims) == 2 && tn.Dims[0]%32 != 0 && tn.Type != gguf.F16:
			t.Errorf("%s %v: %s, want the F16 fallback", tn.Name, tn.Dims, tn.Type)
		}
	}
	if n := len(f.Tensors); n != 2+9*m.Config.Layers+1 {
		t.Fatalf("%d tensors", n)
	}
}
