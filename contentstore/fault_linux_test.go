package contentstore

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// withFileSizeLimit runs fn with RLIMIT_FSIZE set to limit bytes: writes
// past it fail with EFBIG, as they would on a full disk (the Go runtime
// ignores SIGXFSZ). The limit is process-wide, so this test must not run
// in parallel with others.
func withFileSizeLimit(t *testing.T, limit uint64, fn func()) {
	t.Helper()
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &old); err != nil {
		t.Skip(err)
	}
	lim := old
	lim.Cur = limit
	if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
		t.Skip(err)
	}
	defer syscall.Setrlimit(syscall.RLIMIT_FSIZE, &old)
	fn()
}

// A write that fails half-way (a full disk) gives an error naming the
// output and leaves neither a partial file nor a temporary one; the store
// keeps everything it had.
func TestGetOutputWriteFailure(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	data := randBytes(8, 3<<20)
	c, _ := s.AddReader(ctx, bytes.NewReader(data), AddOptions{Pin: true})
	outDir := t.TempDir()
	out := filepath.Join(outDir, "model.safetensors")
	var err error
	withFileSizeLimit(t, 1<<20, func() { err = s.Get(ctx, c, out, nil) })
	if err == nil || !strings.Contains(err.Error(), out) || !strings.Contains(err.Error(), "file too large") {
		t.Fatalf("error %v: want one naming %s and the cause", err, out)
	}
	if ents, _ := os.ReadDir(outDir); len(ents) != 0 {
		t.Fatalf("left behind: %v", ents)
	}
	// An existing file at the target survives a failed replacement.
	os.WriteFile(out, []byte("previous version"), 0o644)
	withFileSizeLimit(t, 1<<20, func() { err = s.Get(ctx, c, out, nil) })
	if b, _ := os.ReadFile(out); err == nil || string(b) != "previous version" {
		t.Fatalf("failed Get replaced the existing file (%v)", err)
	}
	if rep, _ := s.Verify(ctx, c); !rep.OK() {
		t.Fatal(rep.Problem())
	}
}

// Adding to a store whose disk is full fails cleanly: nothing is pinned and
// content already stored is intact.
func TestAddToFullDisk(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	old, _ := s.AddReader(ctx, bytes.NewReader(randBytes(9, 1<<20+5)), AddOptions{Pin: true})
	src := filepath.Join(t.TempDir(), "big.bin")
	os.WriteFile(src, randBytes(10, 3<<20), 0o644)
	var err error
	withFileSizeLimit(t, 512<<10, func() { _, err = s.Add(ctx, src, AddOptions{Pin: true}) })
	if err == nil || !strings.Contains(err.Error(), "file too large") {
		t.Fatalf("add on a full disk: %v", err)
	}
	if len(s.Pins()) != 1 {
		t.Fatalf("pins %v", s.Pins())
	}
	if rep, _ := s.Verify(ctx, old); !rep.OK() {
		t.Fatal(rep.Problem())
	}
	// Space again: the add succeeds.
	if _, err := s.Add(ctx, src, AddOptions{Pin: true}); err != nil {
		t.Fatal(err)
	}
}

func TestGetPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root ignores directory permissions")
	}
	s := openStore(t)
	ctx := context.Background()
	c, _ := s.AddReader(ctx, bytes.NewReader([]byte("x")), AddOptions{})
	dir := t.TempDir()
	os.Chmod(dir, 0o555)
	defer os.Chmod(dir, 0o755)
	out := filepath.Join(dir, "x")
	if err := s.Get(ctx, c, out, nil); err == nil || !strings.Contains(err.Error(), "permission denied") || !strings.Contains(err.Error(), out) {
		t.Fatalf("%v", err)
	}
}
