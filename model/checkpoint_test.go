package model

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/kernels/cpu"
)

func download(be kernels.Backend, b kernels.Buffer) []float32 {
	h := make([]float32, b.Len())
	be.Download(h, b)
	return h
}

func TestCheckpointRoundTrip(t *testing.T) {
	be := backend(t, cpu.Options{})
	m := newTiny(t, be)
	tokens, targets := batch(1, m.Config, 2, 16)
	m.ZeroGrad()
	if _, err := m.Forward(tokens, targets, 2, 16, true); err != nil {
		t.Fatal(err)
	}
	if err := m.Backward(); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Step(1e-3, DefaultOptim()); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "ckpt")
	if err := m.Save(dir, map[string]string{"note": "test"}); err != nil {
		t.Fatal(err)
	}
	if err := m.Save(dir, nil); err == nil {
		t.Fatal("Save overwrote an existing checkpoint")
	}
	m2, meta, err := Load(be, dir)
	if err != nil {
		t.Fatal(err)
	}
	if meta["note"] != "test" || m2.Steps() != 1 || m2.Config != m.Config {
		t.Fatalf("meta %v steps %d config %+v", meta, m2.Steps(), m2.Config)
	}
	for _, pair := range [][2]kernels.Buffer{{m.Params, m2.Params}, {m.M, m2.M}, {m.V, m2.V}} {
		a, b := download(be, pair[0]), download(be, pair[1])
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("value %d differs after reload: %v vs %v", i, a[i], b[i])
			}
		}
	}
	// Same bytes for the same model: a checkpoint's content is deterministic.
	dir2 := filepath.Join(t.TempDir(), "ckpt")
	if err := m2.Save(dir2, map[string]string{"note": "test"}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"config.json", "model.safetensors", "optimizer.safetensors"} {
		a, _ := os.ReadFile(filepath.Join(dir, f))
		b, _ := os.ReadFile(filepath.Join(dir2, f))
		if !bytes.Equal(a, b) {
			t.Errorf("%s differs between two saves of the same model", f)
		}
	}
}

func TestLoadRejectsBadCheckpoints(t *testing.T) {
	be := backend(t, cpu.Options{Threads: 1})
	m := newTiny(t, be)
	good := filepath.Join(t.TempDir(), "good")
	if err := m.Save(good, nil); err != nil {
		t.Fatal(err)
	}
	corrupt := func(name string, f func(dir string)) {
		dir := filepath.Join(t.TempDir(), name)
		os.MkdirAll(dir, 0o755)
		for _, fn := range []string{"config.json", "model.safetensors", "optimizer.safetensors"} {
			b, _ := os.ReadFile(filepath.Join(good, fn))
			os.WriteFile(filepath.Join(dir, fn), b, 0o644)
		}
		f(dir)
		if _, _, err := Load(be, dir); err == nil {
			t.Errorf("%s: loaded", name)
		} else if !errors.Is(err, ErrCheckpoint) {
			t.Errorf("%s: error %v is not ErrCheckpoint", name, err)
		}
	}
	corrupt("truncated weights", func(dir string) {
		p := filepath.Join(dir, "model.safetensors")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, b[:len(b)-4], 0o644)
	})
	corrupt("missing config", func(dir string) { os.Remove(filepath.Join(dir, "config.json")) })
	corrupt("wrong shape in config", func(dir string) {
		p := filepath.Join(dir, "config.json")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, bytes.Replace(b, []byte(`"intermediate_size": 176`), []byte(`"intermediate_size": 180`), 1), 0o644)
	})
	corrupt("config promising a huge model", func(dir string) {
		p := filepath.Join(dir, "config.json")
		b, _ := os.ReadFile(p)
		os.WriteFile(p, bytes.Replace(b, []byte(`"num_hidden_layers": 2`), []byte(`"num_hidden_layers": 1000`), 1), 0o644)
	})
	corrupt("garbage optimizer", func(dir string) {
		os.WriteFile(filepath.Join(dir, "optimizer.safetensors"), []byte("not a safetensors file"), 0o644)
	})
}

func TestSafetensorsRejects(t *testing.T) {
	var good bytes.Buffer
	if err := WriteSafetensors(&good, []STensor{{Name: "a", DType: "F32", Shape: []int{2}, Data: make([]byte, 8)}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, _, err := ReadSafetensors(good.Bytes()); err != nil {
		t.Fatal(err)
	}
	hdr := func(js string, data int) []byte {
		b := make([]byte, 8, 8+len(js)+data)
		binary.LittleEndian.PutUint64(b, uint64(len(js)))
		return append(append(b, js...), make([]byte, data)...)
	}
	for name, b := range map[string][]byte{
		"short":         {1, 2},
		"huge header":   append([]byte{255, 255, 255, 255, 0, 0, 0, 0}, make([]byte, 16)...),
		"not json":      hdr("nope", 0),
		"bad dtype":     hdr(`{"a":{"dtype":"Q9","shape":[1],"data_offsets":[0,4]}}`, 4),
		"size mismatch": hdr(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}`, 4),
		"gap":           hdr(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		"overlap":       hdr(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, 8),
		"trailing data": hdr(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 12),
		"negative dim":  hdr(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, 4),
		"bad metadata":  hdr(`{"__metadata__":{"x":1}}`, 0),
	} {
		if _, _, err := ReadSafetensors(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// FuzzReadSafetensors: any input either parses into tensors that lie within
// the input, or is rejected with an error; it never panics.
func FuzzReadSafetensors(f *testing.F) {
	var b bytes.Buffer
	WriteSafetensors(&b, []STensor{
		{Name: "w", DType: "F32", Shape: []int{2, 3}, Data: make([]byte, 24)},
		{Name: "b", DType: "BF16", Shape: []int{3}, Data: make([]byte, 6)},
	}, map[string]string{"format": "pt"})
	f.Add(b.Bytes())
	f.Add([]byte{8, 0, 0, 0, 0, 0, 0, 0, '{', '}', ' ', ' ', ' ', ' ', ' ', ' '})
	f.Fuzz(func(t *testing.T, data []byte) {
		ts, _, err := ReadSafetensors(data)
		// The index a file is read through agrees with the parse in memory.
		idx, _, ierr := readSafetensorsIndex(bytes.NewReader(data), int64(len(data)))
		if (err == nil) != (ierr == nil) || len(idx) != len(ts) {
			t.Fatalf("in memory: %d tensors (%v); indexed: %d (%v)", len(ts), err, len(idx), ierr)
		}
		for i, x := range idx {
			if x.Name != ts[i].Name || !bytes.Equal(data[x.b:x.e], ts[i].Data) {
				t.Fatalf("tensor %s: indexed at [%d, %d), not where the parse in memory found it", x.Name, x.b, x.e)
			}
		}
		if err != nil {
			return
		}
		total := 0
		for _, x := range ts {
			total += len(x.Data)
		}
		if total > len(data) {
			t.Fatalf("tensors claim %d bytes of a %d-byte input", total, len(data))
		}
	})
}

// ReadWeightsFile reads what SaveWeights wrote, as ReadWeights does, and
// refuses a truncated file or one of another shape.
func TestReadWeightsFile(t *testing.T) {
	c, _ := Preset("tiny")
	w := make([]float32, NumParams(c))
	for i := range w {
		w[i] = float32(i%977)*0.001 - 0.3
	}
	dir := filepath.Join(t.TempDir(), "ck")
	if err := SaveWeights(dir, c, w, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "model.safetensors")
	got, meta, err := ReadWeightsFile(c, path)
	if err != nil || !slices.Equal(got, w) || meta["k"] != "v" {
		t.Fatalf("read back: %v, meta %v, equal %v", err, meta, slices.Equal(got, w))
	}
	b, _ := os.ReadFile(path)
	if mem, _, err := ReadWeights(c, b); err != nil || !slices.Equal(mem, got) {
		t.Fatalf("ReadWeights disagrees: %v", err)
	}
	// ScanWeightsFile hands over the same values in pieces, each once.
	defer func(n int) { scanPiece = n }(scanPiece)
	scanPiece = 1000
	scanned, seen := make([]float32, len(w)), make([]int, len(w))
	if err := ScanWeightsFile(c, path, func(off int, p []float32) error {
		if len(p) > scanPiece {
			t.Fatalf("a piece of %d values", len(p))
		}
		copy(scanned[off:], p)
		for i := range p {
			seen[off+i]++
		}
		return nil
	}); err != nil || !slices.Equal(scanned, w) || slices.ContainsFunc(seen, func(n int) bool { return n != 1 }) {
		t.Fatalf("ScanWeightsFile: %v, equal %v", err, slices.Equal(scanned, w))
	}
	// WeightsFile reads any range, across tensors.
	wf, err := OpenWeightsFile(c, path)
	if err != nil {
		t.Fatal(err)
	}
	defer wf.Close()
	ranged := make([]float32, len(w))
	for off := len(w); off > 0; {
		n := min(off, 7919)
		off -= n
		if err := wf.ReadAt(ranged[off:off+n], off); err != nil {
			t.Fatal(err)
		}
	}
	if !slices.Equal(ranged, w) || wf.Meta["k"] != "v" {
		t.Fatal("WeightsFile.ReadAt read other values")
	}
	if err := wf.ReadAt(ranged[:2], len(w)-1); err == nil {
		t.Error("WeightsFile.ReadAt read past the end")
	}
	// SaveWeightsFrom, its weights given a chunk at a time, writes the same
	// bytes.
	from := filepath.Join(t.TempDir(), "from")
	next := 0
	if err := SaveWeightsFrom(from, c, func(off int, dst []float32) error {
		if off != next {
			t.Fatalf("weights asked for at %d, then at %d", next, off)
		}
		next = off + copy(dst, w[off:])
		return nil
	}, map[string]string{"k": "v"}); err != nil || next != len(w) {
		t.Fatalf("SaveWeightsFrom: %v (%d of %d weights)", err, next, len(w))
	}
	if fb, _ := os.ReadFile(filepath.Join(from, "model.safetensors")); !bytes.Equal(fb, b) {
		t.Fatal("SaveWeightsFrom wrote other bytes than SaveWeights")
	}
	short := filepath.Join(t.TempDir(), "short.safetensors")
	os.WriteFile(short, b[:len(b)-1], 0o644)
	if _, err := OpenWeightsFile(c, short); err == nil {
		t.Error("OpenWeightsFile opened a file a byte short")
	}
	if _, _, err := ReadWeightsFile(c, short); err == nil {
		t.Error("a file a byte short was read")
	}
	if err := ScanWeightsFile(c, short, func(int, []float32) error { return nil }); err == nil {
		t.Error("ScanWeightsFile read a file a byte short")
	}
	other := c
	other.Layers++
	if _, _, err := ReadWeightsFile(other, path); err == nil {
		t.Error("a file of another shape was read")
	}
}
