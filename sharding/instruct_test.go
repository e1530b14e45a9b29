package sharding

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/tokenizer"
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

// Multi-turn conversations: deterministic, turns alternating, the
// follow-up answered with the same answer in the other language, word
// problems summed right, and the held-out split apart by first question.
func TestConversations(t *testing.T) {
	a, b := Conversations(5, 300, false), Conversations(5, 300, false)
	held := Conversations(5, 60, true)
	if len(a) != 300 || len(held) != 60 {
		t.Fatalf("%d and %d conversations", len(a), len(held))
	}
	first := map[string]bool{}
	kinds := map[string]int{}
	num := regexp.MustCompile(`\d+`)
	for i, c := range a {
		if fmt.Sprint(c) != fmt.Sprint(b[i]) {
			t.Fatalf("conversation %d differs between two runs", i)
		}
		first[c.Messages[0].Content] = true
		kinds[c.Kind]++
		m := c.Messages
		if len(m) != 4 && len(m) != 6 {
			t.Fatalf("%d turns: %+v", len(m), m)
		}
		for j, msg := range m {
			if want := []string{tokenizer.RoleUser, tokenizer.RoleAssistant}[j%2]; msg.Role != want {
				t.Fatalf("turn %d is %s, want %s: %+v", j, msg.Role, want, m)
			}
		}
		other := map[string]string{"ko": "en", "en": "ko"}[c.Lang]
		if scriptOf(m[0].Content) != c.Lang || scriptOf(m[1].Content) != c.Lang || scriptOf(m[2].Content) != c.Lang || scriptOf(m[3].Content) != other {
			t.Fatalf("languages of %+v: want the follow-up answered in %s", m, other)
		}
		if len(m) == 6 && (scriptOf(m[4].Content) != other || scriptOf(m[5].Content) != other) {
			t.Fatalf("the third question and answer of %+v are not in %s", m, other)
		}
		if c.Kind == "word problem" {
			ns := num.FindAllString(m[0].Content, -1)
			x, _ := strconv.Atoi(ns[0])
			y, _ := strconv.Atoi(ns[1])
			for _, ans := range []string{m[1].Content, m[3].Content} {
				if got := num.FindString(ans); got != strconv.Itoa(x+y) {
					t.Fatalf("%q answered %q", m[0].Content, ans)
				}
			}
		}
	}
	for _, c := range held {
		if first[c.Messages[0].Content] || !c.HeldOut() {
			t.Fatalf("held-out conversation %q is in the training split", c.Messages[0].Content)
		}
	}
	if len(kinds) != 3 {
		t.Fatalf("kinds %v", kinds)
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
	for _, cfg := range []PrepareConfig{{Instructions: 400, SyntheticSeed: 1}, {Pairs: 400, SyntheticSeed: 1}, {MultiTurn: 200, SyntheticSeed: 1}} {
		cfg.Filters, cfg.SeqLen, cfg.ShardTokens = DefaultFilters(), 64, 1<<14
		if cfg.MultiTurn > 0 { // several turns in this small vocabulary
			cfg.SeqLen = 512
		}
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
