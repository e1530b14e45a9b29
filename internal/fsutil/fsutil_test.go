package fsutil

import (
	"os"
	"path/filepath"
	"testing"
)

func TestWriteFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "a.json")
	for _, content := range []string{"first", "second, longer"} {
		if err := WriteFile(p, []byte(content)); err != nil {
			t.Fatal(err)
		}
		if b, _ := os.ReadFile(p); string(b) != content {
			t.Fatalf("read %q, want %q", b, content)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("temporary files left behind: %v", ents)
	}
	if err := WriteFile(filepath.Join(dir, "missing", "b"), nil); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
}

func TestWriteDir(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ck")
	if err := WriteDir(dir, map[string][]byte{"a.json": []byte("{}"), "b.bin": {1, 2}}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "b.bin")); err != nil || len(b) != 2 {
		t.Fatalf("%v %v", b, err)
	}
	if err := WriteDir(dir, map[string][]byte{"c": nil}); err == nil {
		t.Fatal("an existing directory was overwritten")
	}
	if err := WriteDir(filepath.Join(parent, "x"), map[string][]byte{"ok": nil, "../escape": nil}); err == nil {
		t.Fatal("a path in a file name was accepted")
	}
	ents, _ := os.ReadDir(parent)
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}
