package model

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
)

func TestLoadCorpus(t *testing.T) {
	dir := t.TempDir()
	txt := filepath.Join(dir, "a.txt")
	os.WriteFile(txt, []byte("안녕하세요.\n\nHello there.\r\n\r\nThird"), 0o644)
	c, err := LoadCorpus([]string{txt}, 320, ByteEOS)
	if err != nil {
		t.Fatal(err)
	}
	if c.Docs != 3 {
		t.Fatalf("%d documents, want 3", c.Docs)
	}
	if got := DecodeBytes(c.Tokens[:len("안녕하세요.")]); got != "안녕하세요." {
		t.Fatalf("decoded %q", got)
	}
	bad := filepath.Join(dir, "b.txt")
	os.WriteFile(bad, []byte("ok line\nsecond \xff\xfe line"), 0o644)
	if _, err := LoadCorpus([]string{bad}, 320, ByteEOS); err == nil || !strings.Contains(err.Error(), "b.txt:2") {
		t.Fatalf("invalid UTF-8: error %v, want one naming b.txt:2", err)
	}
	tok := filepath.Join(dir, "c.tok")
	os.WriteFile(tok, []byte{1, 0, 0, 0, 0x40, 1, 0, 0}, 0o644) // 1, 320
	if _, err := LoadCorpus([]string{tok}, 320, ByteEOS); err == nil {
		t.Fatal("token 320 accepted for a 320-token vocabulary")
	}
	if _, err := LoadCorpus([]string{filepath.Join(dir, "missing")}, 320, ByteEOS); err == nil {
		t.Fatal("missing file accepted")
	}
}

// TestTrainLowersValidationLoss trains the tiny model on real bilingual text
// and requires held-out loss to fall well below the uniform ln(320) = 5.77.
func TestTrainLowersValidationLoss(t *testing.T) {
	be := backend(t, cpu.Options{})
	m := newTiny(t, be)
	text := strings.Repeat("The cat sat on the mat. 고양이가 매트 위에 앉았다.\n\nA dog ran in the park. 개가 공원에서 뛰었다.\n\n", 40)
	c := &Corpus{}
	if err := c.AddText("inline", []byte(text), m.Config.Vocab, ByteEOS); err != nil {
		t.Fatal(err)
	}
	train, val := c.Split(0.1, ByteEOS)
	tc := DefaultTrainConfig()
	tc.Batch, tc.Seq, tc.Steps = 4, 64, 60
	var calls int
	p, err := Train(context.Background(), m, train, val, tc, func(Progress) { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if calls != 60 || p.Step != 60 {
		t.Fatalf("progress called %d times, last step %d", calls, p.Step)
	}
	if math.IsNaN(float64(p.ValLoss)) || p.ValLoss > 2.5 {
		t.Fatalf("validation loss %.3f after 60 steps, want < 2.5", p.ValLoss)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Train(ctx, m, train, val, tc, nil); err == nil {
		t.Fatal("cancelled training did not stop")
	}
	out, err := Generate(m, []int32{'T', 'h', 'e'}, SampleConfig{MaxTokens: 10, Window: 64}, nil)
	if err != nil {
		t.Fatal(err)
	}
	again, _ := Generate(m, []int32{'T', 'h', 'e'}, SampleConfig{MaxTokens: 10, Window: 64}, nil)
	if len(out) == 0 || DecodeBytes(out) != DecodeBytes(again) {
		t.Fatalf("greedy generation not repeatable: %q vs %q", DecodeBytes(out), DecodeBytes(again))
	}
}

func TestScheduleUse(t *testing.T) {
	tc := DefaultTrainConfig()
	c, _ := Preset("tiny")
	tc.Seq = c.MaxSeq + 1
	if err := tc.Validate(c); err == nil {
		t.Fatal("seq beyond max_seq accepted")
	}
	tc = DefaultTrainConfig()
	tc.Schedule.Kind = "linear-ish"
	if err := tc.Validate(c); err == nil {
		t.Fatal("unknown schedule accepted")
	}
}

// A tiny nucleus keeps only the most likely token: sampling equals greedy.
func TestTopPSmallIsGreedy(t *testing.T) {
	be := backend(t, cpu.Options{})
	m := newTiny(t, be)
	prompt := []int32{'a', 'b'}
	greedy, _ := Generate(m, prompt, SampleConfig{MaxTokens: 12, Window: 32}, nil)
	nucleus, _ := Generate(m, prompt, SampleConfig{MaxTokens: 12, Window: 32, Temperature: 1, TopP: 1e-9, Seed: 5}, nil)
	if DecodeBytes(greedy) != DecodeBytes(nucleus) {
		t.Fatalf("top-p 1e-9 sampled %q, greedy %q", DecodeBytes(nucleus), DecodeBytes(greedy))
	}
}

// AdamW settings out of range are refused with the setting's name; the
// defaults pass.
func TestOptimValidate(t *testing.T) {
	if err := DefaultOptim().Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*OptimConfig){
		"beta1":        func(o *OptimConfig) { o.Beta1 = 1 },
		"beta2":        func(o *OptimConfig) { o.Beta2 = float32(math.NaN()) },
		"eps":          func(o *OptimConfig) { o.Eps = 0 },
		"weight decay": func(o *OptimConfig) { o.WeightDecay = -0.1 },
		"clip":         func(o *OptimConfig) { o.ClipNorm = math.Inf(1) },
	} {
		o := DefaultOptim()
		mutate(&o)
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("%s: %v", name, err)
		}
		tc := DefaultTrainConfig()
		tc.Optim, tc.Seq = o, 64
		c, _ := Preset("tiny")
		if err := tc.Validate(c); err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("train config with bad %s: %v", name, err)
		}
	}
}
