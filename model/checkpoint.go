package model

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/internal/le"
	"github.com/fomnet/fomnet/kernels"
)

// A checkpoint directory holds:
//
//	config.json            Hugging Face LlamaConfig fields (+ "fomnet" extras)
//	model.safetensors      fp32 weights under Hugging Face Llama names
//	optimizer.safetensors  AdamW moments as flat "adamw.m"/"adamw.v" over the
//	                       layout, and the step count in the metadata
//
// The directory is written under a temporary name, every file fsynced, and
// renamed into place, so a crash never leaves a half-written checkpoint.

// ErrCheckpoint reports a checkpoint that cannot be loaded.
var ErrCheckpoint = errors.New("checkpoint")

// hfConfig is config.json: the LlamaForCausalLM fields.
type hfConfig struct {
	Architectures         []string `json:"architectures"`
	ModelType             string   `json:"model_type"`
	HiddenSize            int      `json:"hidden_size"`
	IntermediateSize      int      `json:"intermediate_size"`
	NumAttentionHeads     int      `json:"num_attention_heads"`
	NumKeyValueHeads      int      `json:"num_key_value_heads"`
	NumHiddenLayers       int      `json:"num_hidden_layers"`
	HeadDim               int      `json:"head_dim"`
	VocabSize             int      `json:"vocab_size"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
	RMSNormEps            float64  `json:"rms_norm_eps"`
	RopeTheta             float64  `json:"rope_theta"`
	TieWordEmbeddings     bool     `json:"tie_word_embeddings"`
	BOSTokenID            int      `json:"bos_token_id"`
	EOSTokenID            int      `json:"eos_token_id"`
	HiddenAct             string   `json:"hidden_act"`
	AttentionBias         bool     `json:"attention_bias"`
	MLPBias               bool     `json:"mlp_bias"`
	TorchDType            string   `json:"torch_dtype"`
}

// MarshalHFConfig renders c as a Hugging Face config.json (fp32 weights).
func MarshalHFConfig(c Config) ([]byte, error) { return MarshalHFConfigAs(c, "float32") }

// MarshalHFConfigAs renders c as a Hugging Face config.json whose weights
// are stored as torchDType ("float32", "bfloat16").
func MarshalHFConfigAs(c Config, torchDType string) ([]byte, error) {
	h := hfConfig{
		Architectures: []string{"LlamaForCausalLM"}, ModelType: "llama",
		HiddenSize: c.Dim, IntermediateSize: c.FFNDim, NumAttentionHeads: c.Heads,
		NumKeyValueHeads: c.KVHeads, NumHiddenLayers: c.Layers, HeadDim: c.HeadDim(),
		VocabSize: c.Vocab, MaxPositionEmbeddings: c.MaxSeq, RMSNormEps: c.NormEps,
		RopeTheta: c.RopeTheta, TieWordEmbeddings: c.Tied, BOSTokenID: c.BOS, EOSTokenID: c.EOS,
		HiddenAct: "silu", TorchDType: torchDType,
	}
	return json.MarshalIndent(h, "", "  ")
}

// UnmarshalHFConfig reads a config.json written by MarshalHFConfig or by
// Hugging Face for a Llama model, and validates it.
func UnmarshalHFConfig(b []byte) (Config, error) {
	var h hfConfig
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&h); err != nil {
		return Config{}, fmt.Errorf("config.json: %w", err)
	}
	if h.ModelType != "llama" {
		return Config{}, fmt.Errorf("config.json: model_type %q, want \"llama\"", h.ModelType)
	}
	if h.HiddenAct != "" && h.HiddenAct != "silu" {
		return Config{}, fmt.Errorf("config.json: hidden_act %q, only silu is supported", h.HiddenAct)
	}
	c := Config{Dim: h.HiddenSize, Layers: h.NumHiddenLayers, Heads: h.NumAttentionHeads,
		KVHeads: h.NumKeyValueHeads, FFNDim: h.IntermediateSize, Vocab: h.VocabSize,
		MaxSeq: h.MaxPositionEmbeddings, RopeTheta: h.RopeTheta, NormEps: h.RMSNormEps,
		Tied: h.TieWordEmbeddings, EOS: h.EOSTokenID, BOS: h.BOSTokenID}
	if c.KVHeads == 0 {
		c.KVHeads = c.Heads
	}
	if h.HeadDim != 0 && c.Heads > 0 && h.HeadDim*c.Heads != c.Dim {
		return Config{}, fmt.Errorf("config.json: head_dim %d × heads %d != hidden_size %d (not supported)", h.HeadDim, c.Heads, c.Dim)
	}
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("config.json: %w", err)
	}
	return c, nil
}

// File is an extra file written into a checkpoint directory (for example
// tokenizer.json).
type File struct {
	Name string
	Data []byte
	// Write, if set, writes the file instead of Data (streamed to disk).
	Write func(io.Writer) error
}

// writeTo writes f's contents to w.
func (f File) writeTo(w io.Writer) error {
	if f.Write != nil {
		return f.Write(w)
	}
	_, err := w.Write(f.Data)
	return err
}

// Save writes the model (and its optimizer state) as a checkpoint directory
// at dir, which must not exist yet. meta is stored in model.safetensors;
// extra files are written alongside, inside the same atomic rename.
func (m *Model) Save(dir string, meta map[string]string, extra ...File) error {
	host := make([]float32, m.Layout.Size)
	m.be.Download(host, m.Params)
	st := m.OptimState()
	opt := optimTensors(&st)
	var b bytes.Buffer
	if err := WriteSafetensors(&b, opt, map[string]string{"step": strconv.Itoa(st.Step)}); err != nil {
		return err
	}
	return SaveWeights(dir, m.Config, host, meta, append([]File{{Name: "optimizer.safetensors", Data: b.Bytes()}}, extra...)...)
}

// SaveWeights writes a checkpoint directory holding config.json and
// model.safetensors for the flat parameter vector params (in Layout
// order), plus the extra files, without optimizer state: what a swarm
// checkpoint shares. dir must not exist yet; it appears atomically.
func SaveWeights(dir string, c Config, params []float32, meta map[string]string, extra ...File) error {
	lay := NewLayout(c)
	if len(params) != lay.Size {
		return fmt.Errorf("%w: %d parameters for a model of %d", ErrCheckpoint, len(params), lay.Size)
	}
	return saveWeights(dir, c, func(t Tensor) STensor {
		return STensor{Name: t.Name, DType: "F32", Shape: t.Shape, F32: params[t.Offset : t.Offset+t.Size]}
	}, meta, extra)
}

// SaveWeightsFrom is SaveWeights of the weights that fill produces a chunk
// at a time, in order (dst: the flat vector's weights from off) as they
// are written: a model's next weights computed a piece at a time are
// never held whole.
func SaveWeightsFrom(dir string, c Config, fill func(off int, dst []float32) error, meta map[string]string, extra ...File) error {
	return saveWeights(dir, c, func(t Tensor) STensor {
		return STensor{Name: t.Name, DType: "F32", Shape: t.Shape, Fill: func(off int, dst []float32) error { return fill(t.Offset+off, dst) }}
	}, meta, extra)
}

// saveWeights writes checkpoint dir of c's layout, each tensor's data as
// tensor gives it.
func saveWeights(dir string, c Config, tensor func(Tensor) STensor, meta map[string]string, extra []File) error {
	lay := NewLayout(c)
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%w: %s already exists; refusing to overwrite it", ErrCheckpoint, dir)
	}
	cfg, err := MarshalHFConfig(c)
	if err != nil {
		return err
	}
	var tensors []STensor
	for _, t := range lay.Tensors {
		tensors = append(tensors, tensor(t))
	}
	md := map[string]string{"format": "pt"}
	for k, v := range meta {
		md[k] = v
	}
	// The weights stream to disk: a checkpoint of a large model is never
	// held in memory as bytes.
	files := map[string]func(io.Writer) error{
		"config.json": File{Data: append(cfg, '\n')}.writeTo,
		"model.safetensors": func(w io.Writer) error {
			bw := bufio.NewWriterSize(w, 1<<20)
			if err := WriteSafetensors(bw, tensors, md); err != nil {
				return err
			}
			return bw.Flush()
		},
	}
	for _, f := range extra {
		if f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." || f.Name == "config.json" || f.Name == "model.safetensors" {
			return fmt.Errorf("%w: extra file name %q must be a plain name other than config.json and model.safetensors", ErrCheckpoint, f.Name)
		}
		files[f.Name] = f.writeTo
	}
	return fsutil.WriteDirFunc(dir, files)
}

// Load reads a checkpoint directory onto be. The optimizer state is loaded
// when optimizer.safetensors is present (8-bit moments there make a model
// that keeps them in 8 bits). It returns the model metadata.
func Load(be kernels.Backend, dir string) (*Model, map[string]string, error) {
	cb, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	c, err := UnmarshalHFConfig(cb)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, dir, err)
	}
	// Check the weights file can hold what config.json promises before
	// allocating memory for it: a corrupt config must not exhaust memory.
	wpath := filepath.Join(dir, "model.safetensors")
	st, err := os.Stat(wpath)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	if need := 4 * NumParams(c); st.Size() < need {
		return nil, nil, fmt.Errorf("%w: %s has %d bytes; config.json describes %d fp32 parameters (%d bytes)", ErrCheckpoint, wpath, st.Size(), NumParams(c), need)
	}
	var opt OptimState
	opath := filepath.Join(dir, "optimizer.safetensors")
	ob, err := os.ReadFile(opath)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	default:
		if opt, err = parseOptimizer(ob); err != nil {
			return nil, nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, opath, err)
		}
	}
	m, err := NewWith(be, c, Options{AdamW8: opt.M8 != nil})
	if err != nil {
		return nil, nil, err
	}
	if err := m.SetOptimState(opt); err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, opath, err)
	}
	wb, err := os.ReadFile(wpath)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrCheckpoint, err)
	}
	host, meta, err := m.decodeWeights(wb)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %v", ErrCheckpoint, filepath.Join(dir, "model.safetensors"), err)
	}
	be.Upload(m.Params, host)
	return m, meta, nil
}

func (m *Model) decodeWeights(b []byte) ([]float32, map[string]string, error) {
	return decodeWeights(m.Layout, b)
}

// ReadWeights decodes model.safetensors bytes for config c: every tensor
// of c's layout present, F32, of the right shape, and nothing else. It
// returns the flat parameters in layout order and the file's metadata.
func ReadWeights(c Config, b []byte) ([]float32, map[string]string, error) {
	if err := c.Validate(); err != nil {
		return nil, nil, err
	}
	if need := 4 * NumParams(c); int64(len(b)) < need {
		return nil, nil, fmt.Errorf("%d bytes; the config describes %d fp32 parameters (%d bytes)", len(b), NumParams(c), need)
	}
	return decodeWeights(NewLayout(c), b)
}

func decodeWeights(lay *Layout, b []byte) ([]float32, map[string]string, error) {
	ts, data, meta, err := indexSafetensors(b)
	if err != nil {
		return nil, nil, err
	}
	host, err := layoutWeights(lay, ts, func(dst []float32, t stEntryAt) error {
		bytesF32(dst, data[t.b:t.e])
		return nil
	})
	return host, meta, err
}

// ReadWeightsFile is ReadWeights of the file at path, its tensors read
// into the weights as they are found: a large model's file is never held
// as bytes.
func ReadWeightsFile(c Config, path string) ([]float32, map[string]string, error) {
	w, err := OpenWeightsFile(c, path)
	if err != nil {
		return nil, nil, err
	}
	defer w.Close()
	host := make([]float32, w.lay.Size)
	if err := w.scan(func(off int, r io.Reader, n int) error { return le.ReadFloats(r, host[off:off+n]) }); err != nil {
		return nil, nil, err
	}
	return host, w.Meta, nil
}

// scanPiece is how many values ScanWeightsFile hands over at most (a test
// makes it small).
var scanPiece = 1 << 20

// ScanWeightsFile reads the weights of the file at path, checked as
// ReadWeightsFile checks them, a piece of at most 1<<20 values at a time:
// f gets each piece and its offset in the flat weight vector (Layout
// order, each value once), in a buffer it may not keep. A pass over a
// large model's weights that holds none of them (a difference with
// another vector, an upload) reads them so.
func ScanWeightsFile(c Config, path string, f func(off int, w []float32) error) error {
	w, err := OpenWeightsFile(c, path)
	if err != nil {
		return err
	}
	defer w.Close()
	return w.Scan(f)
}

// Scan hands f w's weights as ScanWeightsFile does.
func (w *WeightsFile) Scan(f func(off int, v []float32) error) error {
	buf := make([]float32, 0, scanPiece)
	return w.scan(func(off int, r io.Reader, n int) error {
		for done := 0; done < n; {
			v := buf[:min(cap(buf), n-done)]
			if err := le.ReadFloats(r, v); err != nil {
				return err
			}
			if err := f(off+done, v); err != nil {
				return err
			}
			done += len(v)
		}
		return nil
	})
}

// scan hands read each tensor's data, in layout order: its offset in the
// flat vector, a reader of its n values.
func (w *WeightsFile) scan(read func(off int, r io.Reader, n int) error) error {
	for i, t := range w.lay.Tensors {
		if err := read(t.Offset, bufio.NewReaderSize(io.NewSectionReader(w.r, w.at[i], 4*int64(t.Size)), 1<<20), t.Size); err != nil {
			return fmt.Errorf("%s: tensor %s: %w", w.name, t.Name, err)
		}
	}
	return nil
}

// WeightsFile is a weights file open for reading, checked against a
// config's layout as ReadWeightsFile checks it, whose values are read
// where they lie: in order (Scan) or any range of the flat vector
// (ReadAt), so that a large model's weights need never be held whole.
type WeightsFile struct {
	r    io.ReaderAt
	name string   // for errors
	file *os.File // OpenWeightsFile's, which Close closes
	lay  *Layout
	at   []int64 // per layout tensor, where its data begins
	Meta map[string]string
}

// OpenWeightsFile opens the weights file at path for config c.
func OpenWeightsFile(c Config, path string) (*WeightsFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	var w *WeightsFile
	if err == nil {
		w, err = NewWeightsReader(c, f, st.Size(), path)
	}
	if err != nil {
		f.Close()
		return nil, err
	}
	w.file = f
	return w, nil
}

// NewWeightsReader is OpenWeightsFile of the size bytes r reads (name: for
// errors), e.g. a file in the content store (contentstore.FileAt).
func NewWeightsReader(c Config, r io.ReaderAt, size int64, name string) (*WeightsFile, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if need := 4 * NumParams(c); size < need {
		return nil, fmt.Errorf("%s: %d bytes; the config describes %d fp32 parameters (%d bytes)", name, size, NumParams(c), need)
	}
	// The index is FuzzReadSafetensors's.
	ts, meta, err := readSafetensorsIndex(r, size)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	lay := NewLayout(c)
	byName, err := checkLayout(lay, ts)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	w := &WeightsFile{r: r, name: name, lay: lay, Meta: meta}
	for _, t := range lay.Tensors {
		w.at = append(w.at, byName[t.Name].b)
	}
	return w, nil
}

// ReadAt reads weights [off, off+len(dst)) of the flat vector into dst.
func (w *WeightsFile) ReadAt(dst []float32, off int) error {
	end := off + len(dst)
	if off < 0 || end > w.lay.Size {
		return fmt.Errorf("%s: weights [%d, %d) of %d", w.name, off, end, w.lay.Size)
	}
	for i, t := range w.lay.Tensors {
		lo, hi := max(off, t.Offset), min(end, t.Offset+t.Size)
		if lo >= hi {
			continue
		}
		r := io.NewSectionReader(w.r, w.at[i]+4*int64(lo-t.Offset), 4*int64(hi-lo))
		if err := le.ReadFloats(r, dst[lo-off:hi-off]); err != nil {
			return fmt.Errorf("%s: tensor %s: %w", w.name, t.Name, err)
		}
	}
	return nil
}

// Close closes the file OpenWeightsFile opened (a reader given to
// NewWeightsReader is its caller's to close).
func (w *WeightsFile) Close() error {
	if w.file == nil {
		return nil
	}
	return w.file.Close()
}

// layoutWeights checks tensors ts against the layout (checkLayout), then
// reads each into its place in the weights with read.
func layoutWeights(lay *Layout, ts []stEntryAt, read func(dst []float32, t stEntryAt) error) ([]float32, error) {
	byName, err := checkLayout(lay, ts)
	if err != nil {
		return nil, err
	}
	host := make([]float32, lay.Size)
	for _, t := range lay.Tensors {
		if err := read(host[t.Offset:t.Offset+t.Size], byName[t.Name]); err != nil {
			return nil, fmt.Errorf("tensor %s: %w", t.Name, err)
		}
	}
	return host, nil
}

// checkLayout checks tensors ts against the layout — every tensor there,
// F32, of its shape, and no other — and returns them by name.
func checkLayout(lay *Layout, ts []stEntryAt) (map[string]stEntryAt, error) {
	byName := map[string]stEntryAt{}
	for _, t := range ts {
		byName[t.Name] = t
	}
	for _, t := range lay.Tensors {
		st, ok := byName[t.Name]
		switch {
		case !ok:
			return nil, fmt.Errorf("tensor %s is missing", t.Name)
		case st.DType != "F32":
			return nil, fmt.Errorf("tensor %s is %s; only F32 is read", t.Name, st.DType)
		case fmt.Sprint(st.Shape) != fmt.Sprint(t.Shape):
			return nil, fmt.Errorf("tensor %s has shape %v, config.json implies %v", t.Name, st.Shape, t.Shape)
		}
	}
	if len(byName) != len(lay.Tensors) {
		for _, t := range ts {
			if _, ok := lay.Lookup(t.Name); !ok {
				return nil, fmt.Errorf("unexpected tensor %s (not in the config's layout)", t.Name)
			}
		}
	}
	return byName, nil
}

// optimTensors are the tensors of optimizer.safetensors: adamw.m and
// adamw.v (F32), or the 8-bit codes adamw8.m and adamw8.v (U8) with their
// block scales adamw8.m_scale and adamw8.v_scale (F32).
func optimTensors(s *OptimState) []STensor {
	f32 := func(name string, x []float32) STensor {
		return STensor{Name: name, DType: "F32", Shape: []int{len(x)}, F32: x}
	}
	u8 := func(name string, x []byte) STensor {
		return STensor{Name: name, DType: "U8", Shape: []int{len(x)}, Data: x}
	}
	if s.M8 != nil {
		return []STensor{u8("adamw8.m", s.M8), u8("adamw8.v", s.V8), f32("adamw8.m_scale", s.MS), f32("adamw8.v_scale", s.VS)}
	}
	return []STensor{f32("adamw.m", s.M), f32("adamw.v", s.V)}
}

// parseOptimizer reads optimizer.safetensors back into a state; the model
// that takes it checks its sizes (CheckOptimState).
func parseOptimizer(b []byte) (OptimState, error) {
	var s OptimState
	ts, meta, err := ReadSafetensors(b)
	if err != nil {
		return s, err
	}
	if s.Step, err = strconv.Atoi(meta["step"]); err != nil || s.Step < 0 {
		return s, fmt.Errorf("metadata step %q is not a non-negative integer", meta["step"])
	}
	f32s := map[string]*[]float32{"adamw.m": &s.M, "adamw.v": &s.V, "adamw8.m_scale": &s.MS, "adamw8.v_scale": &s.VS}
	u8s := map[string]*[]byte{"adamw8.m": &s.M8, "adamw8.v": &s.V8}
	for _, t := range ts {
		if len(t.Shape) != 1 {
			return s, fmt.Errorf("tensor %s has shape %v, want one dimension", t.Name, t.Shape)
		}
		switch dst, dst8 := f32s[t.Name], u8s[t.Name]; {
		case dst != nil && t.DType == "F32":
			*dst = make([]float32, t.Shape[0])
			bytesF32(*dst, t.Data)
		case dst8 != nil && t.DType == "U8":
			*dst8 = append([]byte(nil), t.Data...)
		default:
			return s, fmt.Errorf("unexpected tensor %s (%s)", t.Name, t.DType)
		}
	}
	if s.Zero() || (s.M == nil) != (s.V == nil) || (s.M8 == nil) != (s.V8 == nil) || (s.M8 == nil) != (s.MS == nil) || (s.MS == nil) != (s.VS == nil) || (s.M != nil) == (s.M8 != nil) {
		return s, errors.New("want adamw.m and adamw.v, or adamw8.m, adamw8.v, adamw8.m_scale and adamw8.v_scale")
	}
	return s, nil
}
