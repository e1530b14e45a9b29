package contentstore

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

func randBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func openStore(t *testing.T) *Store {
	t.Helper()
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// blockFile finds the flatfs file holding block c.
func blockFile(t *testing.T, s *Store, c cid.Cid) string {
	t.Helper()
	var found string
	key := strings.TrimPrefix(dshelpKey(c), "/")
	filepath.WalkDir(filepath.Join(s.Dir(), "blocks"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.Name() == key+".data" {
			found = p
		}
		return nil
	})
	if found == "" {
		t.Fatalf("no file for block %s", c)
	}
	return found
}

func TestAddFileMatchesFileCID(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	data := randBytes(1, 3<<20+12345)
	path := filepath.Join(t.TempDir(), "shard.bin")
	writeFile(t, path, data)
	var last, total int64
	c, err := s.Add(ctx, path, AddOptions{Pin: true, Progress: func(d, tt int64) { last, total = d, tt }})
	if err != nil {
		t.Fatal(err)
	}
	want, _ := FileCID(ctx, bytes.NewReader(data))
	if !c.Equals(want) {
		t.Fatalf("Add gave %s, FileCID %s", c, want)
	}
	if last != int64(len(data)) || total != int64(len(data)) {
		t.Fatalf("progress ended at %d/%d, want %d", last, total, len(data))
	}
	if !s.IsPinned(c) || s.Pins()[0].Name != "shard.bin" {
		t.Fatalf("pins %v", s.Pins())
	}
	out := filepath.Join(t.TempDir(), "out.bin")
	if err := s.Get(ctx, c, out, nil); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, data) {
		t.Fatal("file read back differs")
	}
	// Ranges, including across chunk boundaries and past the end.
	for _, r := range [][2]int64{{0, 10}, {1<<20 - 5, 10}, {2 << 20, 1 << 20}, {int64(len(data)) - 3, 100}, {0, int64(len(data))}, {int64(len(data)), 5}} {
		got, err := s.ReadRange(ctx, c, r[0], r[1])
		if err != nil {
			t.Fatalf("range %v: %v", r, err)
		}
		end := min(r[0]+r[1], int64(len(data)))
		if !bytes.Equal(got, data[r[0]:end]) {
			t.Fatalf("range %v differs", r)
		}
	}
	if _, err := s.ReadRange(ctx, c, int64(len(data))+1, 1); err == nil {
		t.Fatal("range past the end accepted")
	}
	// The same ranges read at offsets through one open file, in and out
	// of order.
	f, err := s.Open(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	at := NewFileAt(f)
	for _, r := range [][2]int64{{0, 10}, {10, 20}, {2 << 20, 1 << 20}, {1<<20 - 5, 10}, {int64(len(data)) - 3, 100}, {5, 1 << 20}} {
		got := make([]byte, r[1])
		n, err := at.ReadAt(got, r[0])
		end := min(r[0]+r[1], int64(len(data)))
		if want := data[r[0]:end]; !bytes.Equal(got[:n], want) || (n < len(got)) != (err == io.EOF) || err != nil && err != io.EOF {
			t.Fatalf("ReadAt %v: %d bytes, %v", r, n, err)
		}
	}
}

func TestAddDirectoryRoundTrip(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "ckpt")
	files := map[string][]byte{
		"model.safetensors":  randBytes(2, 2<<20+7),
		"config.json":        []byte(`{"a":1}`),
		"sub/deeper/x.txt":   []byte("안녕하세요 hello"),
		"sub/empty-file.txt": {},
	}
	for name, b := range files {
		writeFile(t, filepath.Join(src, name), b)
	}
	if err := os.MkdirAll(filepath.Join(src, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	c1, err := s.Add(ctx, src, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c2, err := openStore(t).Add(ctx, src, AddOptions{})
	if err != nil || !c1.Equals(c2) {
		t.Fatalf("same tree, CIDs %s and %s (%v)", c1, c2, err)
	}
	if c1.Version() != 1 || c1.Prefix().Codec != cid.DagProtobuf {
		t.Fatalf("directory CID %s", c1)
	}
	out := filepath.Join(t.TempDir(), "copy")
	if err := s.Get(ctx, c1, out, nil); err != nil {
		t.Fatal(err)
	}
	for name, b := range files {
		got, err := os.ReadFile(filepath.Join(out, name))
		if err != nil || !bytes.Equal(got, b) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if st, err := os.Stat(filepath.Join(out, "emptydir")); err != nil || !st.IsDir() {
		t.Fatalf("emptydir: %v", err)
	}
	if err := s.Get(ctx, c1, out, nil); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("Get over an existing directory: %v", err)
	}
	// No temporary leftovers beside the output.
	ents, _ := os.ReadDir(filepath.Dir(out))
	if len(ents) != 1 {
		t.Fatalf("output dir holds %d entries", len(ents))
	}
	if err := os.Symlink("config.json", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Add(ctx, src, AddOptions{}); err == nil || !strings.Contains(err.Error(), "link") {
		t.Fatalf("symlink accepted: %v", err)
	}
}

func TestPinsGCAndReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, Options{}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second open: %v", err)
	}
	keep, _ := s.AddReader(ctx, bytes.NewReader(randBytes(3, 2<<20)), AddOptions{Pin: true, Name: "keep"})
	drop, _ := s.AddReader(ctx, bytes.NewReader(randBytes(4, 2<<20)), AddOptions{})
	shared := randBytes(5, 1<<20) // first chunk shared by a pinned and an unpinned file
	both, _ := s.AddReader(ctx, bytes.NewReader(append(append([]byte{}, shared...), 1, 2, 3)), AddOptions{Pin: true})
	other, _ := s.AddReader(ctx, bytes.NewReader(append(append([]byte{}, shared...), 9)), AddOptions{})
	res, err := s.GC(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// drop: root + 2 leaves; other: root + 1 own leaf (the shared leaf stays).
	if res.Removed != 5 {
		t.Fatalf("GC removed %d blocks, want 5 (%+v)", res.Removed, res)
	}
	for _, c := range []cid.Cid{keep, both} {
		if rep, _ := s.Verify(ctx, c); !rep.OK() {
			t.Fatalf("%s after GC: %s", c, rep.Problem())
		}
	}
	for _, c := range []cid.Cid{drop, other} {
		if ok, _ := s.Has(ctx, c); ok {
			t.Fatalf("%s survived GC", c)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	s, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if !s.IsPinned(keep) || !s.IsPinned(both) || len(s.Pins()) != 2 {
		t.Fatalf("pins after reopen: %v", s.Pins())
	}
	if err := s.Unpin(keep); err != nil {
		t.Fatal(err)
	}
	if err := s.Unpin(keep); err == nil {
		t.Fatal("unpinned twice")
	}
	if res, _ := s.GC(ctx); res.Removed != 3 {
		t.Fatalf("GC after unpin removed %d, want 3", res.Removed)
	}
	if err := s.Pin(ctx, drop, "gone"); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Fatalf("pinning an absent DAG: %v", err)
	}
}

func TestVerifyFindsCorruptAndMissing(t *testing.T) {
	s := openStore(t)
	ctx := context.Background()
	data := randBytes(6, 3<<20)
	c, _ := s.AddReader(ctx, bytes.NewReader(data), AddOptions{Pin: true})
	rep, err := s.Verify(ctx, c)
	if err != nil || !rep.OK() || rep.Blocks != 4 {
		t.Fatalf("fresh DAG: %+v %v", rep, err)
	}
	links := dagLinks(t, s, c)
	// Corrupt leaf 0, delete leaf 2.
	f := blockFile(t, s, links[0])
	b, _ := os.ReadFile(f)
	b[100] ^= 0xff
	os.WriteFile(f, b, 0o644)
	os.Remove(blockFile(t, s, links[2]))
	rep, err = s.Verify(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Corrupt) != 1 || !rep.Corrupt[0].Equals(links[0]) || len(rep.Missing) != 1 || !rep.Missing[0].Equals(links[2]) || rep.Blocks != 2 {
		t.Fatalf("report %+v", rep)
	}
	if !strings.Contains(rep.Problem(), "missing") || !strings.Contains(rep.Problem(), "corrupt") {
		t.Fatalf("problem %q", rep.Problem())
	}
	// Reading the file never returns the corrupt bytes.
	if _, err := s.ReadRange(ctx, c, 0, 10); err == nil {
		t.Fatal("read through a corrupt block succeeded")
	}
	if err := s.WriteOut(ctx, c, filepath.Join(t.TempDir(), "x")); err == nil {
		t.Fatal("wrote out a DAG with a corrupt block")
	}
	if err := s.Repair(ctx, rep); err != nil {
		t.Fatal(err)
	}
	if ok, _ := s.Has(ctx, links[0]); ok {
		t.Fatal("corrupt block still stored after Repair")
	}
}

func dagLinks(t *testing.T, s *Store, c cid.Cid) []cid.Cid {
	t.Helper()
	b, err := s.raw.Get(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	links, err := blockLinks(c, b.RawData())
	if err != nil {
		t.Fatal(err)
	}
	return links
}

func TestCARRoundTrip(t *testing.T) {
	ctx := context.Background()
	a := openStore(t)
	src := filepath.Join(t.TempDir(), "d")
	writeFile(t, filepath.Join(src, "a.bin"), randBytes(7, 1<<20+1))
	writeFile(t, filepath.Join(src, "b/c.txt"), []byte("c"))
	root, _ := a.Add(ctx, src, AddOptions{})
	car := filepath.Join(t.TempDir(), "d.car")
	if err := a.ExportCAR(ctx, root, car); err != nil {
		t.Fatal(err)
	}
	car2 := car + ".2"
	a.ExportCAR(ctx, root, car2)
	b1, _ := os.ReadFile(car)
	b2, _ := os.ReadFile(car2)
	if !bytes.Equal(b1, b2) || !bytes.HasPrefix(b1, carV2Pragma) {
		t.Fatal("CAR export is not a deterministic CARv2")
	}
	b := openStore(t)
	f, _ := os.Open(car)
	res, err := b.ImportCAR(ctx, f, "d.car", true)
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Roots) != 1 || !res.Roots[0].Equals(root) || len(res.Incomplete) != 0 || !b.IsPinned(root) {
		t.Fatalf("import %+v", res)
	}
	if rep, _ := b.Verify(ctx, root); !rep.OK() || rep.Blocks != res.Blocks {
		t.Fatalf("imported DAG: %+v", rep)
	}

	// A flipped byte in a block's data stops the import, names the block,
	// and pins nothing.
	bad := append([]byte(nil), b1...)
	bad[len(bad)/3] ^= 1
	c := openStore(t)
	if _, err := c.ImportCAR(ctx, bytes.NewReader(bad), "bad.car", true); err == nil || !strings.Contains(err.Error(), "bad.car") {
		t.Fatalf("corrupt CAR: %v", err)
	}
	if len(c.Pins()) != 0 {
		t.Fatal("corrupt CAR pinned something")
	}
	if err := a.ExportCAR(ctx, mustCID(t, "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"), car); err == nil {
		t.Fatal("exported an absent DAG")
	}
	if got, _ := os.ReadFile(car); !bytes.Equal(got, b1) {
		t.Fatal("failed export damaged the existing file")
	}
}

func mustCID(t *testing.T, s string) cid.Cid {
	c, err := cid.Decode(s)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPinsEncoding(t *testing.T) {
	c1 := mustCID(t, "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy")
	c2 := mustCID(t, "bafybeibrd4cd76gxpjefvfyqq2owhw2smeolm3xi33hzrmfjgrt7hva2xi")
	a, _ := EncodePins([]Pin{{CID: c1, Name: "x"}, {CID: c2}})
	b, _ := EncodePins([]Pin{{CID: c2}, {CID: c1, Name: "x"}})
	if !bytes.Equal(a, b) {
		t.Fatal("pin file depends on order")
	}
	got, err := DecodePins(a, "pins.json")
	if err != nil || len(got) != 2 {
		t.Fatal(got, err)
	}
	for _, bad := range []string{`{"version":2,"pins":[]}`, `{"version":1,"pins":[{"cid":"nope"}]}`, `[`,
		`{"version":1,"pins":[{"cid":"` + c1.String() + `"},{"cid":"` + c1.String() + `"}]}`} {
		if _, err := DecodePins([]byte(bad), "pins.json"); err == nil || !strings.Contains(err.Error(), "pins.json") {
			t.Fatalf("%s: %v", bad, err)
		}
	}
}

func FuzzDecodePins(f *testing.F) {
	f.Add([]byte(`{"version":1,"pins":[{"cid":"bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy","name":"a"}]}`))
	f.Add([]byte(`{"version":1,"pins":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		pins, err := DecodePins(b, "fuzz")
		if err != nil {
			return
		}
		enc, err := EncodePins(pins)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodePins(enc, "fuzz")
		if err != nil || len(again) != len(pins) {
			t.Fatalf("re-decoding: %v", err)
		}
	})
}

// ImportCAR on arbitrary bytes never panics, and whatever it stores hashes
// to its CID.
func FuzzImportCAR(f *testing.F) {
	s, err := Open(f.TempDir(), Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	root, _ := s.AddReader(ctx, bytes.NewReader([]byte("small file")), AddOptions{})
	car := filepath.Join(f.TempDir(), "x.car")
	if err := s.ExportCAR(ctx, root, car); err != nil {
		f.Fatal(err)
	}
	good, _ := os.ReadFile(car)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := Open(t.TempDir(), Options{})
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		res, err := d.ImportCAR(ctx, bytes.NewReader(b), "fuzz.car", true)
		if err != nil {
			if len(d.Pins()) != 0 {
				t.Fatal("failed import pinned something")
			}
			return
		}
		for _, r := range res.Roots {
			if d.IsPinned(r) {
				if rep, _ := d.Verify(ctx, r); !rep.OK() {
					t.Fatalf("pinned an incomplete root: %s", rep.Problem())
				}
			}
		}
		_ = errors.New
	})
}

func TestPathCIDMatchesAdd(t *testing.T) {
	src := filepath.Join(t.TempDir(), "d")
	writeFile(t, filepath.Join(src, "a"), randBytes(11, 1<<20+3))
	writeFile(t, filepath.Join(src, "b/c"), []byte("c"))
	want, err := openStore(t).Add(context.Background(), src, AddOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := PathCID(context.Background(), src)
	if err != nil || !got.Equals(want) {
		t.Fatalf("PathCID %s, Add %s (%v)", got, want, err)
	}
}
