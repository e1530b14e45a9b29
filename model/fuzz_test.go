package model

import (
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"
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
