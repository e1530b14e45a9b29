package model

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/fomnet/fomnet/kernels/cpu"
)

// FuzzUnmarshalHFConfig: config.json from disk either yields a config that
// validates or an error; it never panics.
func FuzzUnmarshalHFConfig(f *testing.F) {
	for _, name := range PresetNames() {
		c, _ := Preset(name)
		b, _ := MarshalHFConfig(c)
		f.Add(b)
	}
	f.Add([]byte(`{"model_type":"llama","hidden_size":-4}`))
	f.Add([]byte(`{"model_type":"llama","hidden_size":64,"num_attention_heads":0}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := UnmarshalHFConfig(data)
		if err != nil {
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("accepted an invalid config: %v", err)
		}
	})
}

// FuzzLoadCorpus: any file is either loaded into tokens inside the
// vocabulary, each document ending in EOS, or rejected with an error.
func FuzzLoadCorpus(f *testing.F) {
	f.Add([]byte("안녕하세요.\n\nHello.\r\n\r\n"), false)
	f.Add([]byte{0xff, 0xfe, 'a'}, false)
	tok := make([]byte, 12)
	binary.LittleEndian.PutUint32(tok, 5)
	binary.LittleEndian.PutUint32(tok[4:], 319)
	binary.LittleEndian.PutUint32(tok[8:], 320)
	f.Add(tok, true)
	f.Add(tok[:7], true)
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, data []byte, isTok bool) {
		name := filepath.Join(dir, "in.txt")
		if isTok {
			name = filepath.Join(dir, "in"+TokenFileExt)
		}
		if err := os.WriteFile(name, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := LoadCorpus([]string{name}, 320, ByteEOS)
		if err != nil {
			return
		}
		for i, v := range c.Tokens {
			if v < 0 || v >= 320 {
				t.Fatalf("token %d at %d outside the vocabulary", v, i)
			}
		}
		if len(c.Tokens) > 0 && c.Tokens[len(c.Tokens)-1] != ByteEOS {
			t.Fatal("last document does not end in EOS")
		}
	})
}

// FuzzParseOptimizer: optimizer.safetensors from disk — fp32 or 8-bit
// moments — parses or is refused, never panics; what parses writes back
// to tensors that parse to the same state, and a model refuses a state
// that does not fit it rather than taking part of it.
func FuzzParseOptimizer(f *testing.F) {
	for _, s := range []OptimState{
		{Step: 3, M: []float32{1, -2}, V: []float32{3, 4}},
		{Step: 7, M8: []byte{1, 130}, V8: []byte{16, 240}, MS: []float32{0.5}, VS: []float32{2}},
	} {
		var b bytes.Buffer
		if err := WriteSafetensors(&b, optimTensors(&s), map[string]string{"step": strconv.Itoa(s.Step)}); err != nil {
			f.Fatal(err)
		}
		f.Add(b.Bytes())
	}
	tiny, _ := Preset("tiny")
	be := cpu.MustNew(cpu.Options{Threads: 1})
	f.Cleanup(func() { be.Close() })
	var models []*Model
	for _, eight := range []bool{false, true} {
		m, _ := NewWith(be, tiny, Options{AdamW8: eight})
		models = append(models, m)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := parseOptimizer(data)
		if err != nil {
			return
		}
		var b bytes.Buffer
		if err := WriteSafetensors(&b, optimTensors(&s), map[string]string{"step": strconv.Itoa(s.Step)}); err != nil {
			t.Fatal(err)
		}
		again, err := parseOptimizer(b.Bytes())
		if err != nil || !reflect.DeepEqual(again, s) {
			t.Fatalf("a parsed state does not come back: %v", err)
		}
		if n := models[0].Layout.Size; len(s.M) != n && len(s.M8) != n {
			for _, m := range models {
				if m.SetOptimState(s) == nil {
					t.Fatal("a model took a state of another size")
				}
			}
		}
	})
}
