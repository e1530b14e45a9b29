package sharding

import (
	"context"
	"strings"
	"testing"
)

// The post-training generator is deterministic, keeps its splits apart,
// and its rejected answers are worse in the way they say.
func TestInstructions(t *testing.T) {
	a, b := Instructions(3, 500, false), Instructions(3, 500, false)
	held := Instructions(3, 100, true)
	train := map[string]bool{}
	kinds := map[string]int{}
	for i, in := range a {
		if in != b[i] {
			t.Fatalf("instruction %d differs between two runs: %+v, %+v", i, in, b[i])
		}
		train[in.Prompt] = true
		kinds[in.Kind+"/"+in.Lang+"/"+in.WrongKind]++
		switch {
		case in.Wrong == in.Answer || in.Wrong == "":
			t.Fatalf("%+v: the rejected answer is not different", in)
		case in.WrongKind == "unfinished" && !strings.HasPrefix(in.Answer, in.Wrong):
			t.Fatalf("%+v: an unfinished answer that is not the answer's start", in)
		case in.WrongKind == "language" && scriptOf(in.Wrong) == scriptOf(in.Answer):
			t.Fatalf("%+v: the other language in the same script", in)
		}
		if in.Kind != "translation" && scriptOf(in.Answer) != in.Lang {
			t.Fatalf("%+v: answer not in the question's language", in)
		}
	}
	for _, in := range held {
		if train[in.Prompt] || !in.HeldOut() {
			t.Fatalf("held-out prompt %q is in the training split", in.Prompt)
		}
	}
	t.Logf("kinds: %v", kinds)
	if len(kinds) < 12 {
		t.Fatalf("only %d kinds of instruction and rejection: %v", len(kinds), kinds)
	}
}

func scriptOf(s string) string {
	for _, r := range s {
		if r >= 0xAC00 && r <= 0xD7A3 {
			return "ko"
		}
	}
	return "en"
}

// Built-in instructions and pairs prepare into conversation and pair
// shards, most of them kept by the filters.
func TestPrepareBuiltinPostTraining(t *testing.T) {
	tk := testTokenizer(t)
	for _, cfg := range []PrepareConfig{{Instructions: 400, SyntheticSeed: 1}, {Pairs: 400, SyntheticSeed: 1}} {
		cfg.Filters, cfg.SeqLen, cfg.ShardTokens = DefaultFilters(), 64, 1<<14
		p, err := Prepare(context.Background(), cfg, tk, t.TempDir(), nil)
		if err != nil {
			t.Fatal(err)
		}
		r := p.Manifest.Report
		t.Logf("instructions %d pairs %d: kept %d of %d, dropped %v", cfg.Instructions, cfg.Pairs, r.DocumentsOut, r.DocumentsIn, r.Dropped)
		if r.DocumentsOut < r.DocumentsIn/2 {
			t.Fatalf("kept %d of %d: %v", r.DocumentsOut, r.DocumentsIn, r.Dropped)
		}
		for _, s := range p.Manifest.Shards {
			if s.Pairs != (cfg.Pairs > 0) || s.Generator != InstructGenerator {
				t.Fatalf("shard %+v", s)
			}
		}
	}
}
