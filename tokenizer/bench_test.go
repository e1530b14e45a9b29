package tokenizer

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"
)

const sharedData = "../../shared/data/bilingual"

func readShared(b *testing.B, rel ...string) string {
	var sb strings.Builder
	for _, r := range rel {
		data, err := os.ReadFile(filepath.Join(sharedData, r))
		if err != nil {
			b.Skipf("shared corpus not available: %v", err)
		}
		sb.Write(data)
	}
	return sb.String()
}

// trainShared trains on the shared corpus except the held-out texts: the
// 1924 Korean short story and Newton's Opticks.
func trainShared(b *testing.B, vocab int) *Tokenizer {
	files, _ := filepath.Glob(filepath.Join(sharedData, "parallel", "*.tsv"))
	files = append(files, filepath.Join(sharedData, "mono/en/kjv.txt"))
	var texts []string
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			b.Skipf("shared corpus not available: %v", err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			texts = append(texts, strings.Split(line, "\t")...)
		}
	}
	tk, err := Train(context.Background(), slices.Values(texts), TrainConfig{Vocab: vocab})
	if err != nil {
		b.Fatal(err)
	}
	return tk
}

// BenchmarkEncode measures single-threaded encoding of the whole shared
// corpus (MB/s) with a 16k tokenizer, and reports characters per token on
// held-out Korean and English next to plain bytes (1 token a byte).
func BenchmarkEncode(b *testing.B) {
	tk := trainShared(b, 16000)
	all := readShared(b, "parallel/libreoffice-help.en-ko.tsv", "parallel/postgresql15.en-ko.tsv", "mono/en/kjv.txt", "mono/ko/unsu-joh-eun-nal.txt", "mono/en/opticks.txt")
	b.SetBytes(int64(len(all)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		fresh, _ := Parse(mustJSON(tk)) // empty piece cache: measure cold encoding
		b.StartTimer()
		fresh.Encode(all)
		b.StopTimer()
	}
	for _, held := range []struct{ name, file string }{{"ko", "mono/ko/unsu-joh-eun-nal.txt"}, {"en", "mono/en/opticks.txt"}} {
		text := readShared(b, held.file)
		n := len(tk.Encode(text))
		chars := utf8.RuneCountInString(text)
		b.ReportMetric(float64(chars)/float64(n), "chars/token-"+held.name)
		b.ReportMetric(float64(chars)/float64(len(text)), "chars/byte-"+held.name)
	}
}

func mustJSON(t *Tokenizer) []byte {
	b, err := t.MarshalJSON()
	if err != nil {
		panic(err)
	}
	return b
}

// BenchmarkTrain16k trains a 16k vocabulary on the shared corpus.
func BenchmarkTrain16k(b *testing.B) {
	for i := 0; i < b.N; i++ {
		trainShared(b, 16000)
	}
}
