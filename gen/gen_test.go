package gen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// testGenerator is a tiny model (random weights: its text is noise, but
// noise decoded exactly) with a tokenizer of the built-in corpus, and a
// job of 11 bilingual prompts in shards of 4.
func testGenerator(t testing.TB, sampling Sampling) *Generator {
	t.Helper()
	var texts []string
	for _, f := range sharding.Builtin() {
		texts = append(texts, strings.Split(string(f.Text), "\n\n")...)
	}
	tk, err := tokenizer.Train(context.Background(), slices.Values(texts), tokenizer.TrainConfig{Vocab: 320})
	if err != nil {
		t.Fatal(err)
	}
	be := cpu.MustNew(cpu.Options{Threads: 2})
	t.Cleanup(func() { be.Close() })
	c, _ := model.Preset("tiny")
	m, err := model.New(be, c)
	if err != nil {
		t.Fatal(err)
	}
	m.Init(7)
	var prompts []Prompt
	for i := range 11 {
		if i%2 == 0 {
			prompts = append(prompts, Prompt{Prompt: fmt.Sprintf("민수: 오늘 %d번째 이야기를", i), Lang: "ko"})
		} else {
			prompts = append(prompts, Prompt{Prompt: fmt.Sprintf("Story %d: once upon a time", i), Lang: "en"})
		}
	}
	spec := &Spec{Format: SpecFormat, Generator: "bafy-test", Prompts: "bafk-test", PromptCount: len(prompts),
		Sampling: sampling, PerShard: 4, Stage: "pretrain", Licence: "CC0-1.0"}
	if err := spec.Check(); err != nil {
		t.Fatal(err)
	}
	return &Generator{M: m, Tok: tk, Spec: spec, Prompts: prompts, Batch: 3}
}

var testSampling = Sampling{Temperature: 0.9, TopP: 0.95, MaxTokens: 24, Seed: 5}

// TestShardDeterministic: a shard is the same bytes however many sequences
// are decoded at once, and its records are the prompts' in order.
func TestShardDeterministic(t *testing.T) {
	g := testGenerator(t, testSampling)
	if g.Spec.Shards() != 3 {
		t.Fatalf("%d shards", g.Spec.Shards())
	}
	a, err := g.Shard(2, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, batch := range []int{1, 64} {
		g.Batch = batch
		b, err := g.Shard(2, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("batch %d: other bytes:\n%s\n%s", batch, a, b)
		}
	}
	recs, err := g.ParseShard(2, a)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || recs[0].I != 8 || recs[2].I != 10 || recs[0].Completion == "" {
		t.Fatalf("records %+v", recs)
	}
}

// TestVerifyCatchesCheats: an honest shard passes; a changed completion,
// a shard made with other sampling settings or another seed, and shards
// whose records are reordered, missing or differently encoded are caught
// with a fraud proof naming the shard (and the record).
func TestVerifyCatchesCheats(t *testing.T) {
	g := testGenerator(t, testSampling)
	honest, err := g.Shard(1, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Verify(1, honest, 2, 99); err != nil {
		t.Fatalf("honest shard: %v", err)
	}
	recs, _ := g.ParseShard(1, honest)
	encode := func(rs []Record) []byte {
		var b bytes.Buffer
		for _, r := range rs {
			b.Write(r.encode())
		}
		return b.Bytes()
	}
	edited := slices.Clone(recs)
	edited[2].Completion += " 그리고 끝."
	edited[2].Text = edited[2].Prompt + edited[2].Completion
	other := func(s Sampling) []byte {
		h := testGenerator(t, s)
		b, err := h.Shard(1, nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	hotter, reseeded := testSampling, testSampling
	hotter.Temperature = 1.3
	reseeded.Seed++
	cheats := map[string][]byte{
		"edited completion":  encode(edited),
		"hotter sampling":    other(hotter),
		"another seed":       other(reseeded),
		"records reordered":  encode([]Record{recs[1], recs[0], recs[2], recs[3]}),
		"a record missing":   encode(recs[:3]),
		"spaces in the JSON": bytes.Replace(honest, []byte(`"i":`), []byte(`"i": `), 1),
		"another shard":      mustShard(t, g, 0),
	}
	for name, b := range cheats {
		if bytes.Equal(b, honest) {
			t.Fatalf("%s: the same bytes as the honest shard", name)
		}
		err := g.Verify(1, b, len(recs), 1)
		var fp *FraudProof
		if !errors.As(err, &fp) || fp.Shard != 1 {
			t.Fatalf("%s: %v, want a fraud proof", name, err)
		}
		t.Logf("%s: %v", name, fp)
	}
}

func mustShard(t *testing.T, g *Generator, k int) []byte {
	b, err := g.Shard(k, nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzReadPrompts: any bytes are a prompt set or an error naming the
// line; never a panic.
func FuzzReadPrompts(f *testing.F) {
	f.Add([]byte(`{"prompt":"민수: 안녕","lang":"ko"}` + "\n" + `{"prompt":"Once"}` + "\n"))
	f.Add([]byte(`{"prompt":""}`))
	f.Add([]byte(`{"prompt":"a","lang":"fr"}{"x":1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := ReadPrompts(bytes.NewReader(b))
		if err != nil {
			return
		}
		for _, p := range ps {
			if p.Prompt == "" || p.Lang != "" && p.Lang != "ko" && p.Lang != "en" {
				t.Fatalf("prompt %+v", p)
			}
		}
	})
}

// FuzzParseShard: any bytes are shard 1's records or a fraud proof; never
// a panic.
func FuzzParseShard(f *testing.F) {
	g := testGenerator(f, Sampling{MaxTokens: 6, Seed: 1})
	b, err := g.Shard(1, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, err := g.ParseShard(1, b)
		var fp *FraudProof
		if err != nil && !errors.As(err, &fp) {
			t.Fatalf("error %v is no fraud proof", err)
		}
		if err == nil && len(recs) != 4 {
			t.Fatalf("%d records", len(recs))
		}
	})
}

// FuzzParseSpec: any bytes are a checked spec, whose canonical encoding
// reads back to the same spec, or an error; never a panic.
func FuzzParseSpec(f *testing.F) {
	s := &Spec{Format: SpecFormat, Generator: "bafy-g", Prompts: "bafk-p", PromptCount: 3, Sampling: testSampling, PerShard: 2, Stage: "pretrain", Licence: "CC0-1.0"}
	b, err := s.Encode()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"fomnet":"gen/v1","sampling":{"seed":18446744073709551615}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSpec(b)
		if err != nil {
			return
		}
		c, err := s.Encode()
		if err != nil {
			t.Fatalf("checked spec %+v does not encode: %v", s, err)
		}
		s2, err := ParseSpec(c)
		if err != nil || *s2 != *s {
			t.Fatalf("spec %+v reads back as %+v (%v)", s, s2, err)
		}
	})
}
