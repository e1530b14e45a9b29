package tokenizer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

// builtinTexts reads the project's built-in corpus (from the source tree:
// package sharding imports this one, so the test cannot import it).
func builtinTexts() []string {
	b, err := os.ReadFile("../sharding/builtin/ko-en.txt")
	if err != nil {
		panic(err)
	}
	return strings.Split(string(b), "\n\n")
}

func trainSmall(t testing.TB, vocab int) *Tokenizer {
	t.Helper()
	tk, err := Train(context.Background(), slices.Values(builtinTexts()), TrainConfig{Vocab: vocab})
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

func TestTrainEncodeDecode(t *testing.T) {
	tk := trainSmall(t, 600)
	if tk.Vocab() != 600 {
		t.Fatalf("vocabulary %d, want 600", tk.Vocab())
	}
	if id, ok := tk.SpecialID(EOS); !ok || id != 256 {
		t.Fatalf("EOS id %d", id)
	}
	for _, s := range []string{"오늘 아침에는 비가 조금 내렸다.", "The train left on time.", "", "<|eos|>x<|user|>", "\u00e9 e\u0301", "1234"} {
		ids := tk.Encode(s)
		back, err := tk.Decode(ids)
		if err != nil || string(back) != s {
			t.Errorf("round trip of %q: %q, %v", s, back, err)
		}
	}
	in := "오늘 아침에는 비가 조금 내렸다. The train left on time."
	if ids := tk.Encode(in); len(ids) >= len(in)/2 {
		t.Errorf("%d tokens for %d bytes of training-like text: merges are not applied", len(ids), len(in))
	}
	ids := tk.Encode("a<|eos|>b")
	if len(ids) != 3 || ids[1] != 256 {
		t.Errorf("special token not recognised: %v", ids)
	}
	if _, err := tk.Decode([]int32{int32(tk.Vocab())}); err == nil {
		t.Error("out-of-range id decoded")
	}
}

// TestTrainDeterministic: the same texts give the same tokenizer.json bytes.
func TestTrainDeterministic(t *testing.T) {
	a, _ := trainSmall(t, 500).MarshalJSON()
	b, _ := trainSmall(t, 500).MarshalJSON()
	if !bytes.Equal(a, b) {
		t.Fatal("two trainings on the same texts differ")
	}
}

func TestSaveLoad(t *testing.T) {
	tk := trainSmall(t, 700)
	path := filepath.Join(t.TempDir(), "tokenizer.json")
	if err := tk.Save(path); err != nil {
		t.Fatal(err)
	}
	back, err := LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range builtinTexts() {
		if !slices.Equal(tk.Encode(s), back.Encode(s)) {
			t.Fatalf("loaded tokenizer encodes %q differently", s)
		}
	}
	a, _ := tk.MarshalJSON()
	b, _ := back.MarshalJSON()
	if !bytes.Equal(a, b) {
		t.Fatal("save → load → save changes the file")
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := trainSmall(t, 300).MarshalJSON()
	for name, mut := range map[string]func(string) string{
		"not json": func(string) string { return "{" },
		"normalizer": func(s string) string {
			return strings.Replace(s, `"normalizer": null`, `"normalizer": {"type":"NFKC"}`, 1)
		},
		"other pattern": func(s string) string { return strings.Replace(s, `"Regex": "`, `"Regex": "x`, 1) },
		"unk token":     func(s string) string { return strings.Replace(s, `"unk_token": null`, `"unk_token": "?"`, 1) },
		"bad merge":     func(s string) string { return strings.Replace(s, `"merges": [`, `"merges": ["zz qq",`, 1) },
		"vocab gap":     func(s string) string { return strings.Replace(s, `"!": 33`, `"!": 100000`, 1) },
	} {
		if _, err := Parse([]byte(mut(string(good)))); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzRoundTrip: Decode(Encode(s)) == s for any input, valid UTF-8 or not.
func FuzzRoundTrip(f *testing.F) {
	tk := trainSmall(f, 400)
	for _, s := range []string{"안녕하세요, world!", "  \t\n", "<|eos|><|eos", "\xff\xfe", "e\u0301"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ids := tk.Encode(s)
		back, err := tk.Decode(ids)
		if err != nil || string(back) != s {
			t.Fatalf("round trip of %q gives %q (%v)", s, back, err)
		}
		if utf8.ValidString(s) && len(ids) > len(s) {
			t.Fatalf("%d ids for %d bytes", len(ids), len(s))
		}
	})
}

// FuzzParse: tokenizer.json from disk is parsed or rejected, never a panic.
func FuzzParse(f *testing.F) {
	good, _ := trainSmall(f, 270).MarshalJSON()
	f.Add(good)
	f.Add([]byte(`{"model":{"type":"BPE","vocab":{"a":0}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		tk, err := Parse(b)
		if err != nil {
			return
		}
		ids := tk.Encode("abc 한글")
		if back, err := tk.Decode(ids); err != nil || string(back) != "abc 한글" {
			t.Fatalf("parsed tokenizer does not round-trip: %q %v", back, err)
		}
	})
}

// hfModule finds the Node bindings of Hugging Face tokenizers: the
// directory named by FOMNET_HF_TOKENIZERS, else .ci/node/node_modules.
func hfModule(t *testing.T) string {
	if _, err := exec.LookPath("node"); err != nil {
		t.Skip("node is not installed; .ci/run installs it with the HF tokenizers bindings")
	}
	for _, dir := range []string{os.Getenv("FOMNET_HF_TOKENIZERS"), "../.ci/node/node_modules/tokenizers"} {
		if dir == "" {
			continue
		}
		if abs, err := filepath.Abs(dir); err == nil {
			if _, err := os.Stat(filepath.Join(abs, "index.js")); err == nil {
				return abs
			}
		}
	}
	t.Skip("Hugging Face tokenizers (npm package tokenizers) not installed; .ci/run installs it")
	return ""
}

// TestHuggingFaceIdentical encodes bilingual text with our tokenizer and
// with Hugging Face tokenizers reading our tokenizer.json, and requires
// identical ids.
func TestHuggingFaceIdentical(t *testing.T) {
	mod := hfModule(t)
	byteLevel, err := ByteLevel(DefaultSpecials)
	if err != nil {
		t.Fatal(err)
	}
	for name, tk := range map[string]*Tokenizer{"trained": trainSmall(t, 2000), "byte-level": byteLevel} {
		t.Run(name, func(t *testing.T) { hfIdentical(t, mod, tk) })
	}
}

func hfIdentical(t *testing.T, mod string, tk *Tokenizer) {
	dir := t.TempDir()
	tj := filepath.Join(dir, "tokenizer.json")
	if err := tk.Save(tj); err != nil {
		t.Fatal(err)
	}
	texts := builtinTexts()
	texts = append(texts, "", " ", "  leading spaces", "tabs\tand\nnewlines\r\n", "numbers 12345 and 3.14%",
		"mixed한글English섞어", "emoji 🙂👍🏽 and CJK 漢字かな", "special <|eos|> inside <|user|>hi<|end|>",
		"combining e\u0301 and NFC é", "zero\u200bwidth", "\u00a0nbsp\u2003em\u3000ideographic", "it's 'quoted' \"text\"",
		strings.Repeat("a", 300), "Ⅻ roman ①②", "x\u0085y\u2028z")
	if shared := sharedText(t); shared != "" {
		for i, line := range strings.Split(shared, "\n") {
			if i >= 3000 {
				break
			}
			texts = append(texts, line)
		}
	}
	in := filepath.Join(dir, "in.json")
	b, _ := json.Marshal(texts)
	os.WriteFile(in, b, 0o644)
	cmd := exec.Command("node", "testdata/hf_encode.js", tj, in)
	cmd.Env = append(os.Environ(), "HF_TOKENIZERS_MODULE="+mod)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("node: %v\n%s", err, stderr.String())
	}
	var hf [][]int32
	if err := json.Unmarshal(out, &hf); err != nil {
		t.Fatal(err)
	}
	if len(hf) != len(texts) {
		t.Fatalf("%d results for %d texts", len(hf), len(texts))
	}
	for i, s := range texts {
		if ours := tk.Encode(s); !slices.Equal(ours, hf[i]) {
			t.Fatalf("text %d %q:\nours %v\nHF   %v", i, s, ours, hf[i])
		}
	}
	t.Logf("%d texts encoded identically", len(texts))
}

// sharedText returns some of ../shared/data/bilingual when present.
func sharedText(t *testing.T) string {
	var sb strings.Builder
	for _, p := range []string{"../../shared/data/bilingual/parallel/libreoffice-ui.en-ko.tsv", "../../shared/data/bilingual/mono/ko/unsu-joh-eun-nal.txt"} {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		sb.Write(b[:min(len(b), 100000)])
		sb.WriteByte('\n')
	}
	return strings.ToValidUTF8(sb.String(), "")
}

// TestConcurrentEncode: a Tokenizer is shared by goroutines (run with -race).
func TestConcurrentEncode(t *testing.T) {
	tk := trainSmall(t, 400)
	texts := builtinTexts()
	want := make([][]int32, len(texts))
	for i, s := range texts {
		want[i] = tk.Encode(s)
	}
	done := make(chan error, 4)
	for g := 0; g < 4; g++ {
		go func() {
			for i, s := range texts {
				if !slices.Equal(tk.Encode(s), want[i]) {
					done <- fmt.Errorf("text %d encoded differently", i)
					return
				}
			}
			done <- nil
		}()
	}
	for g := 0; g < 4; g++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
