package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fomnet/fomnet/gradsync/simulate"
	"github.com/fomnet/fomnet/kernels/cuda"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/model/gguf"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/swarmsim"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// fomnet runs the command in-process and returns stdout, stderr and the
// exit code.
func fomnet(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), code
}

func TestHelp(t *testing.T) {
	for _, args := range [][]string{{"--help"}, {"train", "--help"}, {"bench", "--help"}, {"bench", "kernels", "--help"},
		{"bench", "train", "--help"}, {"model", "info", "--help"}, {"demo", "--help"}} {
		out, _, code := fomnet(t, args...)
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%v: exit %d, output %q", args, code, out)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"train", "--no-such-flag"},
		{"train"}, // no input
		{"train", "--preset", "huge", "--builtin"},
		{"train", "--builtin", "--seq", "100000"},
		{"model", "info", "--preset", "nope"},
		{"bench", "train", "--preset", "kormo-10b"},
		{"bench", "train", "--preset", "llama-1b", "--batch", "8", "--seq", "2048", "--memory", "24GiB"},
		{"bench", "train", "--optimizer", "adamw4"},
		{"bench", "train", "--grads", "fp16"},
		{"bench", "train", "--grads", "bf16"},
		{"train", "--builtin", "--device", "cuda", "--grads", "bf16"},
		{"bench", "train", "--offload", "moments"},
		{"bench", "train", "--device", "cuda", "--offload", "weights"},
		{"bench", "train", "--offload", "master"},
		{"bench", "train", "--device", "cuda", "--offload", "master"},
		{"bench", "train", "--device", "cuda", "--precision", "bf16", "--offload", "master,grads"},
		{"bench", "train", "--weight-copy"},
		{"train", "--builtin", "--device", "cuda", "--weight-copy"},
		{"join", "bafybeiel5rbcu7cyubdvd4czs42zskaq3kwsrvqdbg6uk5vrotot5yzg5q", "--offload", "moments"},
		{"join", "bafybeiel5rbcu7cyubdvd4czs42zskaq3kwsrvqdbg6uk5vrotot5yzg5q", "--device", "cuda", "--precision", "bf16"},
		{"bench", "train", "--micro", "3"},
		{"train", "--builtin", "--memory", "lots"},
		{"model", "plan", "--preset", "demo", "--batch", "0"},
		{"bench", "train", "--batch", "0"},
		{"demo", "extra-arg"},
		{"train", "--builtin", "--device", "gpu"},
		{"train", "--builtin", "--device", "cuda:x"},
		{"train", "--builtin", "--precision", "bf16"},
		{"bench", "train", "--device", "cuda", "--precision", "fp8"},
		{"bench", "sync", "--quick", "--device", "tpu"},
		{"bench", "sync", "--quick", "--precision", "bf16"},
		{"bench", "sync", "--quick", "--eval-rows", "-1"},
		{"bench", "sync", "--quick", "--lr", "0"},
		{"demo", "--device", "tpu"},
		{"demo", "--precision", "bf16"},
		{"demo", "--device", "cuda:x"},
		{"bench", "sync", "--quick", "--lr", "NaN"},
		{"bench", "sync", "--quick", "--lr", "+Inf"},
	} {
		_, errOut, code := fomnet(t, args...)
		if code != exitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, exitUsage, errOut)
		}
		if !strings.HasPrefix(errOut, "fomnet: ") {
			t.Errorf("%v: stderr %q does not say what went wrong", args, errOut)
		}
	}
}

// TestDeviceCUDAWithoutTag: a binary built without -tags cuda says so and how
// to get one, and exits 1; the CPU default still works (other tests).
func TestDeviceCUDAWithoutTag(t *testing.T) {
	if cuda.Built {
		t.Skip("built with -tags cuda")
	}
	for _, args := range [][]string{
		{"bench", "train", "--preset", "tiny", "--seq", "32", "--device", "cuda"},
		{"train", "--builtin", "--preset", "tiny", "--steps", "1", "--device", "cuda:1", "--precision", "bf16"},
		{"bench", "sync", "--quick", "--steps", "1", "--device", "cuda"},
		{"demo", "--preset", "tiny", "--vocab", "320", "--synthetic", "0", "--nodes", "1", "--rounds", "1", "--h", "1", "--device", "cuda"},
	} {
		_, errOut, code := fomnet(t, args...)
		if code != exitError || !strings.Contains(errOut, "built without CUDA support") || !strings.Contains(errOut, "-tags cuda") {
			t.Errorf("%v: exit %d, stderr %q; want exit 1 saying how to build with CUDA", args, code, errOut)
		}
	}
}

func TestModelInfo(t *testing.T) {
	out, _, code := fomnet(t, "model", "info", "--preset", "kormo-10b", "--json")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	var info struct {
		Params int64   `json:"params"`
		FLOPs  float64 `json:"train_flops_per_token"`
		State  int64   `json:"train_state_bytes"`
	}
	if err := json.Unmarshal([]byte(out), &info); err != nil {
		t.Fatal(err)
	}
	if info.Params != 10_756_624_384 || info.State != 16*info.Params || info.FLOPs < 6*9e9 {
		t.Fatalf("info %+v", info)
	}
	out, _, _ = fomnet(t, "model", "info", "--preset", "tiny")
	if !strings.Contains(out, "112.96 k") {
		t.Fatalf("human output lacks the parameter count: %q", out)
	}
}

// A llama-1b participant does not fit 23 GiB; the plan names the lean
// settings that do, and a lean plan holds them.
func TestModelPlanLean(t *testing.T) {
	args := []string{"model", "plan", "--preset", "llama-1b", "--batch", "1", "--seq", "256", "--swarm", "--memory", "23GiB", "--json"}
	var r planReport
	out, errOut, code := fomnet(t, args...)
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || r.Fits || !strings.Contains(r.Fit, "--lean") || r.FitBytes > 23<<30 {
		t.Fatalf("exit %d (%v), report %+v, stderr %q", code, err, r, errOut)
	}
	fit := strings.Fields(r.Fit)
	out, _, code = fomnet(t, append(args, fit...)...)
	if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.Fits || !strings.HasSuffix(r.Settings, "lean") {
		t.Fatalf("with %s: exit %d (%v), report %+v", r.Fit, code, err, r)
	}
	if _, errOut, code := fomnet(t, append(args, "--lean", "--overlap")...); code != exitUsage || !strings.Contains(errOut, "do not overlap") {
		t.Fatalf("--lean --overlap: exit %d, %q", code, errOut)
	}
	// A DPO run's participant adds its frozen reference: its weights on
	// the backend, and the copy it is built from.
	var d planReport
	out, _, code = fomnet(t, append(append(args, fit...), "--dpo", "--memory", "64GiB")...)
	if err := json.Unmarshal([]byte(out), &d); err != nil || code != 0 || !slices.ContainsFunc(d.Parts, func(p model.PlanPart) bool {
		return strings.HasPrefix(p.Name, "DPO reference weights") && p.Bytes == 4*r.Params
	}) || d.Total < r.Total+8*r.Params {
		t.Fatalf("--dpo: exit %d (%v), %d bytes at the peak (%d without), parts %v", code, err, d.Total, r.Total, d.Parts)
	}
}

// KORMo-10B on a 96 GiB GPU: the plan names bf16 gradients, and with them
// the gradients take 2 bytes a parameter; on an 80 GB H100 (78 GiB) it
// also moves the moments to host memory, and on 48 GiB the master weights
// too, leaving their bf16 copy (2 bytes a parameter) on the device.
func TestModelPlanBF16Gradients(t *testing.T) {
	for _, budget := range []string{"96GiB", "78GiB", "48GiB"} {
		args := []string{"model", "plan", "--preset", "kormo-10b", "--batch", "1", "--seq", "4096", "--device", "cuda", "--precision", "bf16",
			"--optimizer", "adamw8", "--memory", budget, "--json"}
		var r planReport
		out, errOut, code := fomnet(t, args...)
		moments, master := budget != "96GiB", budget == "48GiB"
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || r.Fits || !strings.Contains(r.Fit, "--grads bf16") ||
			strings.Contains(r.Fit, "moments") != moments || strings.Contains(r.Fit, "master") != master {
			t.Fatalf("%s: exit %d (%v), report %+v, stderr %q", budget, code, err, r, errOut)
		}
		out, _, code = fomnet(t, append(args, strings.Fields(r.Fit)...)...)
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 || !r.Fits || !slices.ContainsFunc(r.Parts, func(p model.PlanPart) bool {
			return p.Name == "gradients (bf16)" && p.Bytes == 2*r.Params
		}) || moments != (r.Host > 2*r.Params) || master != slices.ContainsFunc(r.Parts, func(p model.PlanPart) bool {
			return p.Name == "weights (bf16 copy)" && p.Bytes == 2*r.Params && !p.Host
		}) {
			t.Fatalf("%s with the fit's flags: exit %d (%v), report %+v", budget, code, err, r)
		}
	}
}

// --weight-copy plans the bf16 copy beside the fp32 weights on the device
// (and no rounded weights among the operand copies); where it does not
// fit, dropping it is the first concession named.
func TestModelPlanWeightCopy(t *testing.T) {
	args := []string{"model", "plan", "--preset", "kormo-10b", "--batch", "1", "--seq", "4096", "--device", "cuda", "--precision", "bf16",
		"--optimizer", "adamw8", "--recompute", "--json", "--memory"}
	plan := func(extra ...string) planReport {
		t.Helper()
		var r planReport
		out, errOut, code := fomnet(t, append(args, extra...)...)
		if err := json.Unmarshal([]byte(out), &r); err != nil || code != 0 {
			t.Fatalf("%v: exit %d (%v), stderr %q", extra, code, err, errOut)
		}
		return r
	}
	part := func(r planReport, name string) int64 {
		for _, p := range r.Parts {
			if p.Name == name && !p.Host {
				return p.Bytes
			}
		}
		return -1
	}
	with, without := plan("141GiB", "--weight-copy"), plan("141GiB")
	if !with.Fits || part(with, "weights (bf16 copy)") != 2*with.Params || part(with, "weights (fp32)") != 4*with.Params ||
		part(without, "weights (bf16 copy)") != -1 || part(with, "bf16 operand copies") >= part(without, "bf16 operand copies") {
		t.Fatalf("with the copy %+v\nwithout %+v", with, without)
	}
	short := plan("120GiB", "--weight-copy")
	if short.Fits || short.Fit != "--recompute --optimizer adamw8" || short.FitBytes != without.Need {
		t.Fatalf("in 120 GiB with the copy: %+v (without it the plan needs %d)", short, without.Need)
	}
}

// A GPU's plan whose moments in host memory do not fit the host's
// available memory is refused before anything is allocated.
func TestHostMemoryChecked(t *testing.T) {
	c, _ := model.Preset("kormo-10b")
	in := model.PlanInput{Batch: 1, Seq: 4096, GPU: true, BF16: true, Options: model.Options{Recompute: true, GradsBF16: true, OffloadMoments: true}}
	p := model.MakePlan(c, in)
	if err := hostFits(p, p.Host); err != nil {
		t.Errorf("host memory that fits: %v", err)
	}
	err := hostFits(p, p.Host-1)
	var u usageError
	if !errors.As(err, &u) || !strings.Contains(err.Error(), "of host memory beside the GPU's") || !strings.Contains(err.Error(), "moments in host memory") {
		t.Errorf("host memory one byte short: %v", err)
	}
}

func TestTrainWritesCheckpoint(t *testing.T) {
	dir := t.TempDir()
	txt := filepath.Join(dir, "a.txt")
	os.WriteFile(txt, []byte(strings.Repeat("Hello world. 안녕하세요 세계.\n\n", 50)), 0o644)
	out, errOut, code := fomnet(t, "train", "--preset", "tiny", "--steps", "4", "--batch", "2", "--seq", "32",
		"--out", filepath.Join(dir, "run"), "--json", txt)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var s trainSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatalf("%v in %q", err, out)
	}
	if s.Steps != 4 || s.Tokens != 4*2*32 || s.ValLoss == nil {
		t.Fatalf("summary %+v", s)
	}
	for _, f := range []string{"config.json", "model.safetensors", "optimizer.safetensors", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(s.Checkpoint, f)); err != nil {
			t.Error(err)
		}
	}
	// Byte-level tokens: the tokenizer maps each byte to itself and EOS to
	// 256, and the checkpoint exports in both formats.
	tk, err := tokenizer.LoadFile(filepath.Join(s.Checkpoint, "tokenizer.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ids := tk.Encode("Hi 안"); !slices.Equal(ids, []int32{'H', 'i', ' ', 0xec, 0x95, 0x88}) {
		t.Errorf("byte-level tokenizer: %v", ids)
	}
	if eos, _ := tk.SpecialID(tokenizer.EOS); eos != model.ByteEOS {
		t.Errorf("EOS %d, the model's %d", eos, model.ByteEOS)
	}
	for _, format := range []string{"hf", "gguf"} {
		if _, errOut, code := fomnet(t, "export", s.Checkpoint, "--format", format, "-o", filepath.Join(dir, "export."+format)); code != 0 {
			t.Errorf("export --format %s: exit %d, %s", format, code, errOut)
		}
	}
	if !strings.Contains(errOut, "step 4/4") {
		t.Errorf("no progress on stderr: %q", errOut)
	}
	// The same command again must refuse to overwrite the checkpoint; its
	// --memory becomes the collector's limit (when GOMEMLIMIT sets none).
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(-1))
	_, errOut, code = fomnet(t, "train", "--preset", "tiny", "--steps", "4", "--batch", "2", "--seq", "32", "--out", filepath.Join(dir, "run"), "--memory", "3GiB", txt)
	if code != exitError || !strings.Contains(errOut, "already exists") {
		t.Fatalf("second run: exit %d, %q", code, errOut)
	}
	if got := debug.SetMemoryLimit(-1); os.Getenv("GOMEMLIMIT") == "" && got != 3<<30 {
		t.Errorf("--memory 3GiB left the collector's limit at %d", got)
	}
}

func TestTrainBadInput(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bin.txt")
	os.WriteFile(bad, []byte{'o', 'k', '\n', 0xff, 0xfe}, 0o644)
	_, errOut, code := fomnet(t, "train", "--preset", "tiny", "--out", dir, bad)
	if code != exitError || !strings.Contains(errOut, "bin.txt:2") {
		t.Fatalf("exit %d, stderr %q: want an error naming bin.txt:2", code, errOut)
	}
	_, errOut, code = fomnet(t, "train", "--preset", "tiny", "--out", dir, filepath.Join(dir, "missing.txt"))
	if code != exitError || !strings.Contains(errOut, "missing.txt") {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
}

func TestBenchTrainJSON(t *testing.T) {
	out, errOut, code := fomnet(t, "bench", "train", "--preset", "tiny", "--batch", "2", "--seq", "16", "--steps", "1", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(out), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"tokens_per_s", "step_ms", "gflops", "mfu", "preset", "batch", "seq", "threads", "breakdown", "plan_bytes", "plan_device_bytes", "plan_host_bytes"} {
		if _, ok := m[k]; !ok {
			t.Errorf("JSON lacks %q", k)
		}
	}
	if m["preset"] != "tiny" || m["batch"].(float64) != 2 || m["seq"].(float64) != 16 {
		t.Errorf("JSON %v", m)
	}
	if m["plan_device_bytes"] != m["plan_bytes"] || m["plan_host_bytes"].(float64) != 0 { // the CPU: one memory
		t.Errorf("plan on the CPU: %v bytes, %v on the device, %v in the host", m["plan_bytes"], m["plan_device_bytes"], m["plan_host_bytes"])
	}
}

func TestBenchKernelsQuick(t *testing.T) {
	out, errOut, code := fomnet(t, "bench", "kernels", "--quick", "--min-time", "1ms", "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res benchKernelsOut
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.GEMM) != 6 || len(res.Attention) == 0 || res.PeakGFLOPS <= 0 {
		t.Fatalf("result %+v", res)
	}
	ops := map[string]bool{}
	for _, g := range res.GEMM {
		ops[g.Op] = true
		if g.GFLOPS <= 0 {
			t.Errorf("%+v", g)
		}
	}
	if len(ops) != 3 {
		t.Errorf("transpositions measured: %v", ops)
	}
}

// The demo's swarm, small: three nodes, the tiny preset, two rounds. Its
// identities derive from the seed, so two runs give the same checkpoint
// CID (determinism across processes and thread counts).
func TestDemoSwarm(t *testing.T) {
	args := []string{"demo", "--preset", "tiny", "--vocab", "320", "--nodes", "3", "--rounds", "2", "--h", "4", "--synthetic", "300", "--json"}
	run := func(threads string) demoOut {
		out, errOut, code := fomnet(t, append(args, "--dir", t.TempDir(), "--threads", threads)...)
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if !strings.Contains(errOut, "all nodes agree") {
			t.Fatalf("progress lacks the per-round agreement line:\n%s", errOut)
		}
		var d demoOut
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatal(err)
		}
		return d
	}
	d := run("1")
	if !strings.HasPrefix(d.CheckpointCID, "bafy") || d.Rounds != 2 || d.Nodes != 3 || d.BytesSent == 0 ||
		!strings.HasPrefix(d.SampleKO, "민수: 안녕하세요, 지영 씨.") || !strings.HasPrefix(d.SampleEN, "Sam: Hello, Hana.") {
		t.Fatalf("%+v", d)
	}
	for _, lang := range []string{"ko", "en"} {
		if !(d.ValLossEnd[lang] < d.ValLossStart[lang]) {
			t.Fatalf("%s validation loss %v → %v", lang, d.ValLossStart[lang], d.ValLossEnd[lang])
		}
	}
	if again := run("2"); again.CheckpointCID != d.CheckpointCID {
		t.Fatalf("same flags, checkpoints %s and %s", d.CheckpointCID, again.CheckpointCID)
	}
	if _, _, code := fomnet(t, "demo", "--nodes", "0"); code != 2 {
		t.Fatalf("--nodes 0: exit %d", code)
	}
}

// demo --recipe, small: pretraining, SFT and DPO as three runs of one
// swarm, each scored on held-out instructions, the chat model's lineage
// walking back through all three.
func TestDemoRecipe(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := fomnet(t, "demo", "--preset", "tiny", "--vocab", "320", "--nodes", "2", "--rounds", "2", "--h", "4", "--synthetic", "300",
		"--seq", "64", "--recipe", "--post-rounds", "2", "--instructions", "300", "--pairs", "200", "--eval-items", "20", "--dir", dir, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var d demoOut
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	if len(d.Stages) != 3 || d.Stages[2].CheckpointCID != d.CheckpointCID || !strings.Contains(d.ChatKO, "→") || !strings.Contains(d.ChatEN, "→") {
		t.Fatalf("%+v", d)
	}
	for i, want := range []string{"pretrain", "sft", "preference"} {
		st := d.Stages[i]
		if st.Stage != want || len(st.Instruct) != 2 || st.Instruct[0].N != 10 || st.Instruct[0].Pairs != 10 {
			t.Fatalf("stage %d: %+v", i, st)
		}
	}
	out, errOut, code = fomnet(t, "checkpoint", "lineage", "--home", filepath.Join(dir, "node-0"), d.CheckpointCID, "--json")
	var stages []node.LineageStage
	if code != 0 || json.Unmarshal([]byte(out), &stages) != nil || len(stages) != 3 {
		t.Fatalf("lineage: %d %s %s", code, out, errOut)
	}
	for i, want := range []string{"preference", "sft", "pretrain"} {
		if stages[i].Stage != want || stages[i].Run != d.Stages[2-i].RunID {
			t.Fatalf("lineage stage %d: %+v", i, stages[i])
		}
	}
	// The chat model exports, its chat template with it.
	hf, gg := filepath.Join(t.TempDir(), "hf"), filepath.Join(t.TempDir(), "chat.gguf")
	for _, args := range [][]string{{"export", d.Checkpoint, "--format", "hf", "-o", hf}, {"export", d.Checkpoint, "--format", "gguf", "-o", gg}} {
		if _, errOut, code := fomnet(t, args...); code != 0 {
			t.Fatalf("%v: %s", args, errOut)
		}
	}
	if b, err := os.ReadFile(filepath.Join(hf, "tokenizer_config.json")); err != nil || !strings.Contains(string(b), "chat_template") {
		t.Fatalf("HF export of the chat model: %v %s", err, b)
	}
}

func TestTokenizerCommands(t *testing.T) {
	dir := t.TempDir()
	in := filepath.Join(dir, "a.tsv")
	os.WriteFile(in, []byte(strings.Repeat("Open the file.\t파일을 엽니다.\nSave the file.\t파일을 저장합니다.\n", 20)+"broken line\n"), 0o644)
	out, errOut, code := fomnet(t, "tokenizer", "train", "--vocab", "300", "--out", dir, "--json", in)
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, errOut)
	}
	var res tokTrainOut
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Vocab != 300 || res.Skipped != 1 || !strings.Contains(errOut, "a.tsv:41") {
		t.Fatalf("train result %+v, stderr %q", res, errOut)
	}
	var outb, errb bytes.Buffer
	root := newRoot(&env{stdout: &outb, stderr: &errb})
	root.SetArgs([]string{"tokenizer", "encode", "--tokenizer", res.Path, "--json"})
	root.SetIn(strings.NewReader("파일을 엽니다.\nOpen\n"))
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(outb.String()), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "[") {
		t.Fatalf("encode output %q", outb.String())
	}
	outb.Reset()
	root = newRoot(&env{stdout: &outb, stderr: &errb})
	root.SetArgs([]string{"tokenizer", "decode", "--tokenizer", dir})
	root.SetIn(strings.NewReader(lines[0] + "\n" + lines[1] + "\n"))
	if err := root.Execute(); err != nil {
		t.Fatal(err)
	}
	if outb.String() != "파일을 엽니다.\nOpen\n" {
		t.Fatalf("decode gave %q", outb.String())
	}
	if _, _, code := fomnet(t, "tokenizer", "encode"); code != exitUsage {
		t.Fatalf("encode without --tokenizer: exit %d", code)
	}
}

func TestDataPrepareAndInspect(t *testing.T) {
	dir := t.TempDir()
	a := filepath.Join(dir, "pairs.tsv")
	os.WriteFile(a, []byte(strings.Repeat("Open the file now.\t지금 파일을 엽니다.\n", 3)+"Save all documents before closing.\t닫기 전에 모든 문서를 저장합니다.\n"), 0o644)
	cfg := filepath.Join(dir, "recipe.json")
	os.WriteFile(cfg, []byte(`{"inputs":[{"path":"`+a+`","licence":"MPL-2.0"}],"seq_len":16,"shard_tokens":64}`), 0o644)
	run := func(out string) prepareOut {
		o, errOut, code := fomnet(t, "data", "prepare", "--config", cfg, "--vocab", "300", "--out", out, "--json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		var r prepareOut
		if err := json.Unmarshal([]byte(o), &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	r1, r2 := run(filepath.Join(dir, "d1")), run(filepath.Join(dir, "d2"))
	if r1.DatasetCID == "" || r1.DatasetCID != r2.DatasetCID {
		t.Fatalf("dataset CIDs %q and %q", r1.DatasetCID, r2.DatasetCID)
	}
	if r1.Report.Dropped["exact_duplicate"] != 4 || r1.Shards < 2 || len(r1.Totals) != 2 {
		t.Fatalf("result %+v", r1)
	}
	out, errOut, code := fomnet(t, "data", "inspect", filepath.Join(dir, "d1"))
	if code != 0 || !strings.Contains(out, r1.DatasetCID) || !strings.Contains(out, "pretrain/ko/natural") {
		t.Fatalf("inspect: exit %d, %q %q", code, out, errOut)
	}
	bad := filepath.Join(dir, "bad.json")
	os.WriteFile(bad, []byte(`{"inputs":[],"bogus":1}`), 0o644)
	if _, _, code := fomnet(t, "data", "prepare", "--config", bad, "--out", dir); code != exitUsage {
		t.Fatalf("unknown config field: exit %d", code)
	}
	os.WriteFile(bad, []byte("FOMSHARD garbage"), 0o644)
	if _, errOut, code := fomnet(t, "data", "inspect", bad); code != exitError || !strings.Contains(errOut, "shard") {
		t.Fatalf("corrupt shard: exit %d %q", code, errOut)
	}
	// The test binary itself is not text; an empty file is no dataset.
	exe, _ := os.Executable()
	empty := filepath.Join(dir, "empty.txt")
	os.WriteFile(empty, nil, 0o644)
	for input, want := range map[string]string{exe: "is not text", empty: "the dataset is empty"} {
		out := filepath.Join(dir, "refused")
		if _, errOut, code := fomnet(t, "data", "prepare", input, "--vocab", "300", "--out", out); code != exitError || !strings.Contains(errOut, want) {
			t.Fatalf("prepare %s: exit %d %q", input, code, errOut)
		}
		if _, err := os.Stat(filepath.Join(out, "manifest.json")); err == nil {
			t.Fatalf("prepare %s wrote a manifest", input)
		}
	}
}

func TestBenchSyncJSON(t *testing.T) {
	natural := filepath.Join(t.TempDir(), "pairs.tsv")
	if err := os.WriteFile(natural, []byte(strings.Repeat("Open the file and read it aloud.\t파일을 열고 소리 내어 읽습니다.\n", 40)), 0o644); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := fomnet(t, "bench", "sync", "--quick", "--steps", "4", "--synthetic", "50", "--json", "--natural", natural,
		"--methods", "ddp,diloco:2:int8,diloco:2:topk:trimmed-mean:scaled,diloco:2:int8:overlap=eager:fragments=2")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rows []simulate.Row
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 4 {
		t.Fatalf("%d rows", len(rows))
	}
	for _, k := range []string{"method", "H", "codec", "workers", "val_loss", "val_by_source", "bytes_per_worker", "peak_bytes_per_sync", "reduction_vs_ddp"} {
		if _, ok := raw[1][k]; !ok {
			t.Errorf("row lacks %q: %v", k, raw[1])
		}
	}
	for _, r := range rows {
		if len(r.Sources) != 2 || r.Sources[0].Source != "natural" || r.Sources[1].Source != "generated" || !(r.Loss("natural") > 0) {
			t.Errorf("%s: held-out sources %+v, want natural and generated", r.Method, r.Sources)
		}
	}
	if rows[2].ReductionVsDDP <= rows[1].ReductionVsDDP {
		t.Errorf("topk should send less than int8: %+v", rows)
	}
	if r := rows[3]; r.Overlap != "eager" || r.Fragments != 2 || !(r.PeakBytes < rows[1].PeakBytes*0.6) {
		t.Errorf("overlapped fragments: %+v (one fragment's peak %v)", r, rows[1].PeakBytes)
	}
	for _, m := range []string{"diloco:0:int8", "diloco:300abc:int8", "diloco:60x10:int4", "diloco:60x0+420:int4", "diloco:x10+420:int4"} {
		if _, errOut, code := fomnet(t, "bench", "sync", "--methods", m); code != exitUsage || !strings.Contains(errOut, "H") {
			t.Errorf("bad method %s: exit %d %q", m, code, errOut)
		}
	}
	for m, want := range map[string]string{"diloco:50:int4:overlap=late": "overlap=", "diloco:50:int4:fragments=0": "fragments=", "ddp:overlap=eager": "for DiLoCo", "diloco:4:int4:fragments=8": "H of at least 8", "diloco:50:int4:hetero=1": "hetero=", "diloco:50:int4:hetero=0.5:fragments=2": "without fragments"} {
		if _, errOut, code := fomnet(t, "bench", "sync", "--methods", m); code != exitUsage || !strings.Contains(errOut, want) {
			t.Errorf("bad method %s: exit %d %q", m, code, errOut)
		}
	}
	if _, errOut, code := fomnet(t, "bench", "sync", "--quick", "--natural", filepath.Join(t.TempDir(), "none.txt")); code != exitError || !strings.Contains(errOut, "none.txt") {
		t.Errorf("missing --natural file: exit %d %q", code, errOut)
	}
}

// TestBenchSyncLR checks that --lr and the AdamW flags reach both DDP and
// the workers' inner steps: each method's loss moves with them, and the log
// says which settings ran.
func TestBenchSyncLR(t *testing.T) {
	loss := func(lr, logged string, extra ...string) (ddp, diloco float64) {
		t.Helper()
		args := append([]string{"bench", "sync", "--quick", "--steps", "4", "--synthetic", "50", "--json",
			"--methods", "ddp,diloco:2:fp32", "--lr", lr}, extra...)
		out, errOut, code := fomnet(t, args...)
		if code != 0 {
			t.Fatalf("--lr %s %v: exit %d: %s", lr, extra, code, errOut)
		}
		if !strings.Contains(errOut, logged) {
			t.Errorf("--lr %s %v: the log does not say %q: %q", lr, extra, logged, errOut)
		}
		var rows []struct {
			ValLoss float64 `json:"val_loss"`
		}
		if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 2 {
			t.Fatalf("--lr %s %v: %v %s", lr, extra, err, out)
		}
		return rows[0].ValLoss, rows[1].ValLoss
	}
	d1, l1 := loss("0.002", "lr 0.002 (AdamW β 0.9, 0.95,")
	d2, l2 := loss("0.0005", "lr 0.0005 (")
	if d1 == d2 || l1 == l2 {
		t.Fatalf("--lr changed nothing: ddp %v, %v; diloco %v, %v", d1, d2, l1, l2)
	}
	d3, l3 := loss("0.002", "(AdamW β 0.95, 0.99,", "--beta1", "0.95", "--beta2", "0.99")
	if d3 == d1 || l3 == l1 {
		t.Fatalf("--beta1/--beta2 changed nothing: ddp %v, %v; diloco %v, %v", d1, d3, l1, l3)
	}
	if _, errOut, code := fomnet(t, "bench", "sync", "--quick", "--beta2", "1"); code != 2 || !strings.Contains(errOut, "--beta2 1") {
		t.Fatalf("--beta2 1: exit %d: %s", code, errOut)
	}
}

func TestParseH(t *testing.T) {
	ms, err := parseMethods("diloco:300:int4,diloco:60x10+420:int4:trimmed-mean,ddp:accum=2,diloco:150:int4:mean:scaled:accum=3")
	if err != nil {
		t.Fatal(err)
	}
	if m := ms[0]; m.H != 300 || m.WarmupRounds != 0 || m.HString() != "300" || m.Accum != 0 {
		t.Fatalf("%+v", m)
	}
	if m := ms[1]; m.H != 420 || m.WarmupRounds != 10 || m.WarmupH != 60 || m.Aggregation != "trimmed-mean" || m.HString() != "60x10+420" {
		t.Fatalf("%+v", m)
	}
	if m := ms[2]; m.Name != "ddp" || m.Accum != 2 {
		t.Fatalf("%+v", m)
	}
	if m := ms[3]; m.H != 150 || m.Codec != "int4" || m.Aggregation != "mean" || m.Adversary != "scaled" || m.Accum != 3 {
		t.Fatalf("%+v", m)
	}
	ms, err = parseMethods("ddp:beta2=0.99,diloco:300:int4:beta1=0.95:accum=2:beta2=0.999")
	if err != nil {
		t.Fatal(err)
	}
	if m := ms[0]; m.Beta1 != 0 || m.Beta2 != 0.99 || m.Accum != 0 {
		t.Fatalf("%+v", m)
	}
	if m := ms[1]; m.H != 300 || m.Beta1 != 0.95 || m.Beta2 != 0.999 || m.Accum != 2 || m.VCorr != 0 {
		t.Fatalf("%+v", m)
	}
	ms, err = parseMethods("diloco:300:int4:vcorr=4:beta2=0.99")
	if err != nil {
		t.Fatal(err)
	}
	if m := ms[0]; m.VCorr != 4 || m.Beta2 != 0.99 {
		t.Fatalf("%+v", m)
	}
	for _, bad := range []string{"ddp:vcorr=4", "diloco:300:int4:vcorr=0.5", "diloco:300:int4:vcorr=Inf", "diloco:300:int4:vcorr=x",
		"ddp:accum=0", "ddp:accum=x", "diloco:150:int4:accum=-1", "ddp:accum=2:x", "diloco:150:accum=2",
		"ddp:beta1=1", "ddp:beta2=0", "ddp:beta2=abc", "ddp:lr=2", "diloco:150:int4:beta1=NaN"} {
		if _, err := parseMethods(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// A method with accum=N, its own β or vcorr=K runs in bench sync: the JSON
// row carries them, DDP with accum 2 sends half the bytes of the first DDP
// (the reference), and an accum that does not divide --steps is a usage
// error.
func TestBenchSyncAccum(t *testing.T) {
	out, errOut, code := fomnet(t, "bench", "sync", "--quick", "--steps", "4", "--synthetic", "50", "--json",
		"--methods", "ddp,ddp:accum=2,diloco:1:int4:accum=2:beta2=0.99,diloco:2:int4:vcorr=4")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var rows []struct {
		Method string  `json:"method"`
		Accum  int     `json:"accum"`
		Red    float64 `json:"reduction_vs_ddp"`
		Tokens int64   `json:"tokens"`
		Beta2  float64 `json:"beta2"`
		VCorr  float64 `json:"vcorr"`
		Loss   float64 `json:"val_loss"`
	}
	if err := json.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 4 {
		t.Fatalf("%v: %s", err, out)
	}
	if rows[0].Accum != 0 || rows[1].Accum != 2 || rows[2].Accum != 2 || rows[1].Red != 2 || rows[1].Tokens != rows[0].Tokens ||
		rows[0].Beta2 != 0 || float32(rows[2].Beta2) != 0.99 || rows[2].VCorr != 0 || rows[3].VCorr != 4 || !(rows[3].Loss > 0) {
		t.Fatalf("%+v", rows)
	}
	if !strings.Contains(errOut, "diloco H=1 int4 accum=2 beta2=0.99") {
		t.Errorf("the log does not name the accum: %s", errOut)
	}
	if !strings.Contains(errOut, "diloco H=2 int4 vcorr=4") {
		t.Errorf("the log does not name vcorr: %s", errOut)
	}
	if _, errOut, code := fomnet(t, "bench", "sync", "--quick", "--steps", "5", "--methods", "ddp:accum=2"); code != exitUsage || !strings.Contains(errOut, "accum=2 does not divide --steps 5") {
		t.Fatalf("accum=2 over 5 steps: exit %d: %s", code, errOut)
	}
}

func TestTrainOnDataset(t *testing.T) {
	dir := t.TempDir()
	ds := filepath.Join(dir, "ds")
	if _, errOut, code := fomnet(t, "data", "prepare", "--builtin", "--synthetic", "300", "--vocab", "600", "--seq", "64", "--out", ds); code != 0 {
		t.Fatalf("prepare: exit %d: %s", code, errOut)
	}
	out, errOut, code := fomnet(t, "train", "--preset", "demo", "--data", ds, "--steps", "2", "--batch", "1", "--seq", "32", "--out", filepath.Join(dir, "run"), "--json")
	if code != 0 {
		t.Fatalf("train: exit %d: %s", code, errOut)
	}
	var s trainSummary
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	tj, err := os.ReadFile(filepath.Join(s.Checkpoint, "tokenizer.json"))
	orig, _ := os.ReadFile(filepath.Join(ds, "tokenizer.json"))
	if err != nil || !bytes.Equal(tj, orig) {
		t.Fatalf("checkpoint tokenizer.json: %v", err)
	}
	// A shard whose bytes no longer match its CID is refused.
	shards, _ := filepath.Glob(filepath.Join(ds, "shards", "*.bin"))
	b, _ := os.ReadFile(shards[0])
	b[len(b)-1] ^= 1
	os.WriteFile(shards[0], b, 0o644)
	if _, errOut, code := fomnet(t, "train", "--preset", "demo", "--data", ds, "--steps", "1", "--seq", "32", "--out", filepath.Join(dir, "run2")); code == 0 || !strings.Contains(errOut, "CID") {
		t.Fatalf("corrupt shard: exit %d %q", code, errOut)
	}
	if _, errOut, code := fomnet(t, "train", "--preset", "tiny", "--data", ds, "--steps", "1", "--out", filepath.Join(dir, "run3")); code == 0 || !strings.Contains(errOut, "vocabulary") {
		t.Fatalf("vocabulary too small for the dataset: exit %d %q", code, errOut)
	}
}

// tinyDemo runs a small demo swarm (tiny preset, H=3) in dir and returns
// its summary: a quick source of a real checkpoint.
func tinyDemo(t *testing.T, nodes, rounds, dir string) demoOut {
	t.Helper()
	out, errOut, code := fomnet(t, "demo", "--preset", "tiny", "--vocab", "320", "--nodes", nodes, "--rounds", rounds, "--h", "3",
		"--synthetic", "100", "--dir", dir, "--json")
	if code != 0 {
		t.Fatalf("demo: %s", errOut)
	}
	var d demoOut
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	return d
}

func TestGenerate(t *testing.T) {
	d := tinyDemo(t, "1", "1", t.TempDir())
	ck, dir := d.Checkpoint, t.TempDir()
	run := func() string {
		out, errOut, code := fomnet(t, "generate", ck, "--prompt", "오늘", "--max-tokens", "8", "--seed", "3", "--json")
		if code != 0 {
			t.Fatalf("generate: exit %d: %s", code, errOut)
		}
		return out
	}
	if a, b := run(), run(); a != b || !strings.Contains(a, `"prompt": "오늘"`) {
		t.Fatalf("same seed, different text: %q vs %q", a, b)
	}
	if _, _, code := fomnet(t, "generate", ck, "--top-p", "2"); code != exitUsage {
		t.Fatalf("bad --top-p: exit %d", code)
	}
	if _, _, code := fomnet(t, "generate", filepath.Join(dir, "missing")); code != exitError {
		t.Fatalf("missing checkpoint: exit %d", code)
	}
}

// fomnet chat holds a conversation read from stdin: one answer per line,
// the same for the same lines; /reset forgets the conversation, so the
// next answer is what generate --chat gives for that line alone; a
// checkpoint without a chat tokenizer is refused.
func TestChat(t *testing.T) {
	d := tinyDemo(t, "1", "1", t.TempDir())
	ck := d.Checkpoint
	chat := func(stdin string) []map[string]any {
		var out, errb bytes.Buffer
		code := runIn(context.Background(), []string{"chat", ck, "--json", "--temperature", "0", "--max-tokens", "6", "--system", "be brief"},
			strings.NewReader(stdin), &out, &errb)
		if code != 0 {
			t.Fatalf("chat: exit %d: %s", code, errb.String())
		}
		var turns []map[string]any
		dec := json.NewDecoder(&out)
		for dec.More() {
			var m map[string]any
			if err := dec.Decode(&m); err != nil {
				t.Fatal(err)
			}
			turns = append(turns, m)
		}
		return turns
	}
	in := "안녕하세요?\n\n/reset\nWhat is 2 + 3?\n"
	a, b := chat(in), chat(in)
	if len(a) != 2 || fmt.Sprint(a) != fmt.Sprint(b) || a[1]["turn"] != float64(1) || a[0]["role"] != "assistant" {
		t.Fatalf("answers %v, again %v", a, b)
	}
	out, errOut, code := fomnet(t, "generate", ck, "--chat", "--system", "be brief", "--prompt", "What is 2 + 3?", "--temperature", "0",
		"--max-tokens", "6", "--json")
	var g map[string]any
	if code != 0 || json.Unmarshal([]byte(out), &g) != nil || g["text"] != a[1]["content"] {
		t.Fatalf("generate --chat: exit %d %s %v; chat answered %q", code, errOut, g, a[1]["content"])
	}
	if _, _, code := fomnet(t, "generate", ck, "--system", "x", "--prompt", "y"); code != exitUsage {
		t.Fatalf("--system without --chat: exit %d", code)
	}
}

// Conversations prepared from JSONL train with their loss mask (fomnet
// train cuts the masked rows whole), and the checkpoint answers in the chat
// format.
func TestPrepareAndTrainConversations(t *testing.T) {
	dir := t.TempDir()
	var sb strings.Builder
	for i := range 120 {
		a, b := i%17+1, i%23+2
		if i%2 == 0 {
			fmt.Fprintf(&sb, `{"messages":[{"role":"user","content":"What is %d plus %d?"},{"role":"assistant","content":"%d plus %d is %d."}]}`+"\n", a, b, a, b, a+b)
		} else {
			fmt.Fprintf(&sb, `{"instruction":"%d 더하기 %d는?","output":"%d 더하기 %d는 %d입니다."}`+"\n", a, b, a, b, a+b)
		}
	}
	in := filepath.Join(dir, "chat.jsonl")
	os.WriteFile(in, []byte(sb.String()), 0o644)
	ds := filepath.Join(dir, "ds")
	if _, errOut, code := fomnet(t, "data", "prepare", in, "--vocab", "300", "--seq", "48", "--stage", "sft", "--out", ds); code != 0 {
		t.Fatalf("prepare: %s", errOut)
	}
	out, errOut, code := fomnet(t, "train", "--preset", "tiny", "--data", ds, "--steps", "20", "--seq", "48", "--batch", "4", "--out", filepath.Join(dir, "run"))
	if code != 0 || !strings.Contains(out+errOut, "step 20/20") {
		t.Fatalf("train: exit %d\n%s%s", code, out, errOut)
	}
	ck := filepath.Join(dir, "run", "step-000020")
	if _, errOut, code := fomnet(t, "generate", ck, "--chat", "--prompt", "What is 2 plus 3?", "--max-tokens", "8"); code != 0 {
		t.Fatalf("generate --chat: %s", errOut)
	}
}

// export --format hf then import gives a checkpoint that generates the
// same text; export --format gguf writes a file the gguf reader accepts;
// bad arguments are usage errors and nothing is overwritten.
func TestExportImport(t *testing.T) {
	d := tinyDemo(t, "1", "1", t.TempDir())
	dir := t.TempDir()
	hf, back, gg := filepath.Join(dir, "hf"), filepath.Join(dir, "back"), filepath.Join(dir, "model.gguf")
	for _, args := range [][]string{
		{"export", d.Checkpoint, "--format", "hf", "-o", hf},
		{"import", "--format", "hf", hf, "-o", back},
		{"export", d.Checkpoint, "--format", "gguf", "--dtype", "q8_0", "-o", gg},
	} {
		if _, errOut, code := fomnet(t, args...); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errOut)
		}
	}
	gen := func(ck string) string {
		out, errOut, code := fomnet(t, "generate", ck, "--prompt", "Sam:", "--max-tokens", "12", "--seed", "3", "--json")
		if code != 0 {
			t.Fatalf("generate %s: exit %d: %s", ck, code, errOut)
		}
		return out
	}
	if a, b := gen(d.Checkpoint), gen(back); a != b {
		t.Fatalf("imported checkpoint generates differently:\n%s\n%s", a, b)
	}
	b, err := os.ReadFile(gg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := gguf.Read(b)
	if err != nil || f.KV["general.architecture"] != "llama" {
		t.Fatalf("gguf: %v %v", err, f)
	}
	for _, c := range []struct {
		args []string
		code int
	}{
		{[]string{"export", d.Checkpoint, "--format", "onnx", "-o", filepath.Join(dir, "x")}, exitUsage},
		{[]string{"export", d.Checkpoint, "--format", "gguf", "--dtype", "q4", "-o", filepath.Join(dir, "x")}, exitUsage},
		{[]string{"export", d.Checkpoint, "--format", "hf", "-o", hf}, exitError}, // exists
		{[]string{"export", filepath.Join(dir, "nope"), "--format", "hf", "-o", filepath.Join(dir, "y")}, exitUsage},
		{[]string{"import", "--format", "hf", dir, "-o", filepath.Join(dir, "z")}, exitError}, // no config.json
	} {
		if _, errOut, code := fomnet(t, c.args...); code != c.code {
			t.Errorf("%v: exit %d (%s), want %d", c.args, code, errOut, c.code)
		}
	}
}

// eval of a checkpoint on its own training data agrees with the loss
// training reported (token-weighted over the groups, within 25%, far below
// a uniform guess), per language and source, with bits per byte; text
// files and task files work; a bad task file is an error naming its line.
func TestEval(t *testing.T) {
	dir := t.TempDir()
	ds := filepath.Join(dir, "ds")
	if _, errOut, code := fomnet(t, "data", "prepare", "--builtin", "--synthetic", "200", "--vocab", "320", "--seq", "64", "--out", ds); code != 0 {
		t.Fatalf("prepare: %s", errOut)
	}
	out, errOut, code := fomnet(t, "train", "--preset", "tiny", "--data", ds, "--steps", "300", "--batch", "8", "--seq", "64", "--out", filepath.Join(dir, "run"), "--json")
	if code != 0 {
		t.Fatalf("train: %s", errOut)
	}
	var tr trainSummary
	json.Unmarshal([]byte(out), &tr)
	txt := filepath.Join(dir, "text.txt")
	os.WriteFile(txt, []byte("오늘 아침에는 비가 조금 내렸다.\n\nIt rained a little this morning.\n"), 0o644)
	tasks := filepath.Join(dir, "mine.jsonl")
	os.WriteFile(tasks, []byte(`{"context":"Question: what is 2 plus 2?\nAnswer:","choices":[" 4"," 7"],"answer":0,"language":"en"}`+"\n"), 0o644)
	out, errOut, code = fomnet(t, "eval", tr.Checkpoint, "--data", ds, "--data", txt, "--tasks", "builtin", "--tasks", tasks, "--json")
	if code != 0 {
		t.Fatalf("eval: exit %d: %s", code, errOut)
	}
	var ev evalSummary
	if err := json.Unmarshal([]byte(out), &ev); err != nil {
		t.Fatal(err)
	}
	var nll float64
	var n int64
	seen := map[string]bool{}
	for _, r := range ev.Results {
		seen[r.Language+"/"+r.Source] = true
		if r.Tokens == 0 || r.Bytes == 0 || r.BPB <= 0 || r.PPL < 1 {
			t.Fatalf("result %+v", r)
		}
		if r.Source == "synthetic" || r.Source == "natural" && r.Tokens > 1000 {
			nll += r.Loss * float64(r.Tokens)
			n += r.Tokens
		}
	}
	mean := nll / float64(n)
	t.Logf("training loss %.3f, eval on the training data %.3f", tr.Loss, mean)
	if math.Abs(mean-float64(tr.Loss)) > 0.25*float64(tr.Loss) || mean > 3 {
		t.Fatalf("eval loss %.3f on the training data; training ended at %.3f", mean, tr.Loss)
	}
	for _, k := range []string{"ko/natural", "ko/synthetic", "en/natural", "en/synthetic"} {
		if !seen[k] {
			t.Errorf("no result for %s: %v", k, seen)
		}
	}
	taskSeen := map[string]int{}
	for _, r := range ev.Tasks {
		taskSeen[r.Task] += r.N
	}
	if taskSeen["translation"] < 100 || taskSeen["mine"] != 1 {
		t.Fatalf("tasks %+v", ev.Tasks)
	}
	os.WriteFile(tasks, []byte("\n"+`{"context":"x","choices":["a"],"answer":0,"language":"en"}`), 0o644)
	if _, errOut, code := fomnet(t, "eval", tr.Checkpoint, "--tasks", tasks); code != exitError || !strings.Contains(errOut, "line 2") {
		t.Fatalf("bad task file: exit %d %q", code, errOut)
	}
	if _, _, code := fomnet(t, "eval", tr.Checkpoint); code != exitUsage {
		t.Fatalf("nothing to evaluate: exit %d", code)
	}
	if _, errOut, code := fomnet(t, "eval", tr.Checkpoint, "--tasks", "builtin", "--device", "tpu"); code != exitUsage || !strings.Contains(errOut, "--device") {
		t.Fatalf("bad --device: exit %d %q", code, errOut)
	}
	if !cuda.Built {
		if _, errOut, code := fomnet(t, "eval", tr.Checkpoint, "--tasks", "builtin", "--device", "cuda"); code != exitError || !strings.Contains(errOut, "-tags cuda") {
			t.Fatalf("--device cuda without the tag: exit %d %q", code, errOut)
		}
	}
}

// checkpoint verify passes a swarm checkpoint (by directory and by CID,
// links resolved in the node's store) and lists what is wrong with broken
// copies, exiting 1.
func TestCheckpointVerify(t *testing.T) {
	dir := t.TempDir()
	d := tinyDemo(t, "2", "2", dir)
	home := filepath.Join(dir, "node-0")
	for _, target := range []string{d.Checkpoint, d.CheckpointCID} {
		out, errOut, code := fomnet(t, "checkpoint", "verify", target, "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0", "--json")
		var rep node.CheckpointReport
		json.Unmarshal([]byte(out), &rep)
		if code != 0 || !rep.OK || rep.Round != 2 || rep.Links < 5 {
			t.Fatalf("verify %s: exit %d %+v %s", target, code, rep, errOut)
		}
	}
	copyDir := func(name string) string {
		dst := filepath.Join(t.TempDir(), name)
		os.MkdirAll(dst, 0o755)
		ents, _ := os.ReadDir(d.Checkpoint)
		for _, en := range ents {
			b, _ := os.ReadFile(filepath.Join(d.Checkpoint, en.Name()))
			os.WriteFile(filepath.Join(dst, en.Name()), b, 0o644)
		}
		return dst
	}
	edit := func(dir, file string, f func([]byte) []byte) {
		b, _ := os.ReadFile(filepath.Join(dir, file))
		os.WriteFile(filepath.Join(dir, file), f(b), 0o644)
	}
	unknown := "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	for _, c := range []struct {
		name, want string
		break_     func(string)
	}{
		{"truncated weights", "model.safetensors", func(dir string) { os.Truncate(filepath.Join(dir, "model.safetensors"), 1000) }},
		{"bad link", "is not a CID", func(dir string) {
			edit(dir, "round.json", func(b []byte) []byte {
				return []byte(strings.Replace(string(b), `"shards": [`, `"shards": [{"/": "nope"},`, 1))
			})
		}},
		{"unresolvable link", "does not resolve", func(dir string) {
			edit(dir, "round.json", func(b []byte) []byte {
				return []byte(strings.Replace(string(b), `"shards": [`, `"shards": [{"/": "`+unknown+`"},`, 1))
			})
		}},
		{"outer state", "outer.bin", func(dir string) { edit(dir, "outer.bin", func(b []byte) []byte { return b[:len(b)-8] }) }},
	} {
		dir := copyDir(c.name)
		c.break_(dir)
		out, errOut, code := fomnet(t, "checkpoint", "verify", dir, "--home", home, "--listen", "/ip4/127.0.0.1/tcp/0")
		if code != exitError || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, %q %q", c.name, code, out, errOut)
		}
	}
}

// TestDataSplitProcesses: a preparation planned in three parts, each
// analysed by a fomnet process of its own at once, merges into the dataset
// one prepare makes of the same inputs, CID for CID; misplaced pieces are
// refused.
func TestDataSplitProcesses(t *testing.T) {
	dir := t.TempDir()
	var txt, tsv strings.Builder
	for i := range 3 {
		for _, f := range sharding.Builtin() {
			txt.Write(f.Text)
			txt.WriteString("\n\n")
		}
		fmt.Fprintf(&tsv, "Copy %d of the file.\t파일의 사본 %d.\nOpen the file.\t파일을 엽니다.\n", i, i)
	}
	inputs := []string{filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.tsv")}
	os.WriteFile(inputs[0], []byte(txt.String()), 0o644)
	os.WriteFile(inputs[1], []byte(tsv.String()), 0o644)
	tok := filepath.Join(dir, "tok")
	if _, errOut, code := fomnet(t, append([]string{"data", "prepare", "--vocab", "400", "--out", tok}, inputs...)...); code != 0 {
		t.Fatalf("prepare: exit %d: %s", code, errOut)
	}
	var whole prepareOut
	o, errOut, code := fomnet(t, append([]string{"data", "prepare", "--tokenizer", tok, "--seq", "32", "--shard-tokens", "2000", "--out", filepath.Join(dir, "whole"), "--json"}, inputs...)...)
	if code != 0 || json.Unmarshal([]byte(o), &whole) != nil {
		t.Fatalf("prepare: exit %d: %s", code, errOut)
	}
	plan := filepath.Join(dir, "plan")
	var po planOut
	o, errOut, code = fomnet(t, append([]string{"data", "prepare", "--tokenizer", tok, "--seq", "32", "--shard-tokens", "2000", "--parts", "3", "--out", plan, "--json"}, inputs...)...)
	if code != 0 || json.Unmarshal([]byte(o), &po) != nil {
		t.Fatalf("plan: exit %d: %s", code, errOut)
	}
	for i, n := range po.Parts {
		if n == 0 {
			t.Fatalf("part %d of %v is empty", i, po.Parts)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	pieces := make([]string, 3)
	var cmds []*exec.Cmd
	for i := range pieces {
		pieces[i] = filepath.Join(dir, fmt.Sprintf("piece%d", i))
		c := exec.Command(exe, "data", "part", plan, "--part", fmt.Sprint(i), "--threads", "1", "--out", pieces[i])
		c.Env = append(os.Environ(), "FOMNET_TEST_CLI=1")
		c.Stderr = &bytes.Buffer{}
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, c)
	}
	for i, c := range cmds {
		if err := c.Wait(); err != nil {
			t.Fatalf("part %d: %v: %s", i, err, c.Stderr)
		}
	}
	var merged prepareOut
	o, errOut, code = fomnet(t, append([]string{"data", "merge", plan, "--out", filepath.Join(dir, "merged"), "--json"}, pieces...)...)
	if code != 0 || json.Unmarshal([]byte(o), &merged) != nil {
		t.Fatalf("merge: exit %d: %s", code, errOut)
	}
	if merged.DatasetCID != whole.DatasetCID || merged.Report.Dropped["exact_duplicate"] == 0 {
		t.Fatalf("merged %s (%+v), one prepare %s", merged.DatasetCID, merged.Report, whole.DatasetCID)
	}
	_, errOut, code = fomnet(t, "data", "merge", plan, "--out", filepath.Join(dir, "bad"), pieces[0], pieces[2], pieces[1])
	if code != exitError || !strings.Contains(errOut, "part 2 where part 1 belongs") {
		t.Fatalf("misplaced pieces: exit %d %q", code, errOut)
	}
	// The plan run by a swarm: three nodes join it, each merges the
	// pieces into the dataset one prepare makes.
	o, errOut, code = fomnet(t, append([]string{"data", "prepare", "--tokenizer", tok, "--seq", "32", "--shard-tokens", "2000", "--parts", "3", "--swarm", "--out", filepath.Join(dir, "splan"), "--json"}, inputs...)...)
	if code != 0 || json.Unmarshal([]byte(o), &po) != nil || !strings.HasPrefix(po.Job, "bafy") || len(po.Inputs) != 2 {
		t.Fatalf("plan --swarm: exit %d %+v: %s", code, po, errOut)
	}
	outs := joinSwarm(t, func(home string) string {
		for _, p := range append([]string{filepath.Join(dir, "splan")}, inputs...) {
			if _, errs, code := fomnet(t, "add", "--home", home, p); code != 0 {
				t.Fatalf("add %s: %s", p, errs)
			}
		}
		return po.Job
	}, func(i int) []string { return []string{"--out", filepath.Join(dir, fmt.Sprintf("ds%d", i))} })
	for i, out := range outs {
		if strings.TrimSpace(out) != whole.DatasetCID {
			t.Errorf("join %d of the plan: dataset %q, one prepare %s", i, out, whole.DatasetCID)
		}
	}
	// A machine whose copy of an input differs by a letter (same size, so
	// data part cannot tell) makes pieces that merge's check refuses,
	// naming the document; --trust merges them.
	orig, _ := os.ReadFile(inputs[1])
	os.WriteFile(inputs[1], bytes.Replace(orig, []byte("Open"), []byte("Opan"), 1), 0o644)
	bad := make([]string, 3)
	for i := range bad {
		bad[i] = filepath.Join(dir, fmt.Sprintf("bad%d", i))
		if _, errOut, code := fomnet(t, "data", "part", plan, "--part", fmt.Sprint(i), "--out", bad[i]); code != 0 {
			t.Fatalf("part %d: exit %d: %s", i, code, errOut)
		}
	}
	os.WriteFile(inputs[1], orig, 0o644)
	_, errOut, code = fomnet(t, append([]string{"data", "merge", plan, "--out", filepath.Join(dir, "bad")}, bad...)...)
	if code != exitError || !strings.Contains(errOut, "b.tsv line 2: dedup key") {
		t.Fatalf("pieces of another input: exit %d %q", code, errOut)
	}
	o, errOut, code = fomnet(t, append([]string{"data", "merge", plan, "--trust", "--out", filepath.Join(dir, "trusted"), "--json"}, bad...)...)
	if code != 0 || json.Unmarshal([]byte(o), &merged) != nil || merged.DatasetCID == whole.DatasetCID {
		t.Fatalf("merge --trust of pieces of another input: exit %d, %s (%s)", code, merged.DatasetCID, errOut)
	}
}

// TestGenCommands: a generation job over a checkpoint gives the same shard
// CIDs whatever the batch; an honest shard verifies, a shard whose text was
// changed (consistently, in canonical form) is caught with a fraud proof
// naming the record; the shards prepare into a dataset whose provenance
// names the generator checkpoint.
func TestGenCommands(t *testing.T) {
	d := tinyDemo(t, "1", "1", t.TempDir())
	dir := t.TempDir()
	var prompts strings.Builder
	for i := range 10 {
		fmt.Fprintf(&prompts, `{"prompt":"민수: 오늘 %d","lang":"ko"}`+"\n", i)
	}
	pf := filepath.Join(dir, "prompts.jsonl")
	os.WriteFile(pf, []byte(prompts.String()), 0o644)
	job := filepath.Join(dir, "job")
	if _, errOut, code := fomnet(t, "gen", "create", "--checkpoint", d.Checkpoint, "--prompts", pf, "--max-tokens", "12", "--per-shard", "4", "--out", job); code != 0 {
		t.Fatalf("gen create: exit %d: %s", code, errOut)
	}
	type runOut struct {
		Shards []genShardOut `json:"shards"`
	}
	run := func(batch, out string) runOut {
		o, errOut, code := fomnet(t, "gen", "run", job, "--checkpoint", d.Checkpoint, "--batch", batch, "--out", out, "--json")
		var r runOut
		if code != 0 || json.Unmarshal([]byte(o), &r) != nil {
			t.Fatalf("gen run: exit %d: %s", code, errOut)
		}
		return r
	}
	a, b := run("1", filepath.Join(dir, "a")), run("8", filepath.Join(dir, "b"))
	if len(a.Shards) != 3 || !slices.Equal(cidsOf(a), cidsOf(b)) {
		t.Fatalf("batch 1: %v, batch 8: %v", cidsOf(a), cidsOf(b))
	}
	shard := a.Shards[1].File
	if o, errOut, code := fomnet(t, "gen", "verify", job, shard, "--shard", "1", "--checkpoint", d.Checkpoint, "--sample", "2"); code != 0 || o != "verified\n" {
		t.Fatalf("honest shard: exit %d %q %s", code, o, errOut)
	}
	lines := strings.SplitAfter(readFile(t, shard), "\n")
	var rec map[string]any
	json.Unmarshal([]byte(lines[2]), &rec)
	rec["completion"] = rec["completion"].(string) + " 끝"
	rec["text"] = rec["prompt"].(string) + rec["completion"].(string)
	str := func(v any) string {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		enc.Encode(v)
		return strings.TrimSuffix(b.String(), "\n")
	}
	// In the canonical (the record struct's) field order.
	canon := fmt.Sprintf(`{"i":%v,"lang":%s,"prompt":%s,"completion":%s,"text":%s}`+"\n",
		rec["i"], str(rec["lang"]), str(rec["prompt"]), str(rec["completion"]), str(rec["text"]))
	lines[2] = canon
	bad := filepath.Join(dir, "bad.jsonl")
	os.WriteFile(bad, []byte(strings.Join(lines, "")), 0o644)
	o, errOut, code := fomnet(t, "gen", "verify", job, bad, "--shard", "1", "--checkpoint", d.Checkpoint, "--sample", "4")
	if code != exitError || !strings.Contains(o, `"index": 6`) || !strings.Contains(o, "completion differs") {
		t.Fatalf("changed shard: exit %d %q %s", code, o, errOut)
	}
	var ds prepareOut
	o, errOut, code = fomnet(t, "data", "prepare", "--config", filepath.Join(dir, "a", "recipe.json"), "--tokenizer", d.Checkpoint, "--seq", "32", "--out", filepath.Join(dir, "ds"), "--json")
	if code != 0 || json.Unmarshal([]byte(o), &ds) != nil {
		t.Fatalf("prepare: exit %d: %s", code, errOut)
	}
	man := readFile(t, filepath.Join(dir, "ds", "manifest.json"))
	if !strings.Contains(man, `"generator":"`+d.CheckpointCID+`"`) || len(ds.Totals) == 0 || ds.Totals[0].Source != "synthetic" {
		t.Fatalf("manifest does not name the generator %s: %+v", d.CheckpointCID, ds.Totals)
	}
	genSwarm(t, job, d.Checkpoint, cidsOf(a))
}

// genSwarm runs job in a swarm: a daemon serves the job and its
// checkpoint, three nodes join it; each prints the shards want lists (as
// one machine generates them) and writes them with a recipe.
func genSwarm(t *testing.T, job, ckpt string, want []string) {
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	outs := joinSwarm(t, func(home string) string {
		out, errs, code := fomnet(t, "gen", "publish", job, "--checkpoint", ckpt, "--home", home)
		if code != 0 {
			t.Fatalf("gen publish: exit %d: %s", code, errs)
		}
		return strings.TrimSpace(out)
	}, func(i int) []string { return []string{"--out", dirs[i]} })
	for i, out := range outs {
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			if f := strings.Fields(l); len(f) == 2 {
				got = append(got, f[1])
			}
		}
		if !slices.Equal(got, want) {
			t.Errorf("join %d printed %q, want the shards %v", i, out, want)
		}
		if _, err := os.Stat(filepath.Join(dirs[i], "recipe.json")); err != nil {
			t.Errorf("join %d --out: %v", i, err)
		}
	}
}

// joinSwarm starts a daemon, has publish store a job on it (returning the
// job's CID), and three nodes join the job at once, node i with args(i);
// it returns what each printed.
func joinSwarm(t *testing.T, publish func(home string) string, args func(i int) []string) []string {
	a := initHome(t, "--dht-mode", "server")
	addrs := startDaemon(t, a)
	id := publish(a)
	outs := make([]string, 3)
	var wg sync.WaitGroup
	for i := range outs {
		h := initHome(t)
		wg.Go(func() {
			out, errs, code := fomnet(t, append([]string{"join", id, "--home", h, "--bootstrap", addrs[0], "--expect", "2", "--threads", "1", "--linger", "2s"}, args(i)...)...)
			if code != 0 {
				t.Errorf("join %d: exit %d: %s", i, code, errs)
			}
			outs[i] = out
			for _, l := range strings.Split(errs, "\n") {
				if strings.Contains(l, "done in") {
					t.Logf("join %d: %s", i, l)
				}
			}
		})
	}
	wg.Wait()
	return outs
}

func cidsOf(r struct {
	Shards []genShardOut `json:"shards"`
}) []string {
	var out []string
	for _, s := range r.Shards {
		out = append(out, s.CID)
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// demo --synthetic-loop, small: the swarm generates text with its
// pretrained checkpoint (every shard verified by another node), prepares
// it with the corpus and trains a midtraining stage on the mixture; the
// final checkpoint's lineage names the mixture and, through it, the
// pretrained checkpoint as the generator of part of it.
func TestDemoSyntheticLoop(t *testing.T) {
	dir := t.TempDir()
	out, errOut, code := fomnet(t, "demo", "--preset", "tiny", "--vocab", "320", "--nodes", "3", "--rounds", "2", "--h", "4", "--synthetic", "300",
		"--synthetic-loop", "--synth-prompts", "70", "--synth-rounds", "2", "--dir", dir, "--json")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var d demoOut
	if err := json.Unmarshal([]byte(out), &d); err != nil {
		t.Fatal(err)
	}
	sy := d.Synth
	if sy == nil || len(sy.Shards) != 3 || sy.Records != 70 || sy.Verified < 12 || len(sy.Convicted) != 0 || sy.GeneratedShare <= 0 || sy.CheckpointCID != d.CheckpointCID {
		t.Fatalf("synth %+v", sy)
	}
	out, errOut, code = fomnet(t, "checkpoint", "lineage", "--home", filepath.Join(dir, "node-1"), d.CheckpointCID, "--json")
	var stages []node.LineageStage
	if code != 0 || json.Unmarshal([]byte(out), &stages) != nil || len(stages) != 2 {
		t.Fatalf("lineage: %d %s %s", code, out, errOut)
	}
	mid, pre := stages[0], stages[1]
	// The mixture's generators: the pretrained checkpoint and the built-in
	// templates (which the pretraining data had too).
	if mid.Stage != "midtrain" || mid.Dataset != sy.Dataset || !slices.Contains(mid.Generators, sy.Generator) || pre.Stage != "pretrain" ||
		pre.Last != sy.Generator || slices.Contains(pre.Generators, sy.Generator) || len(pre.Generators) == 0 {
		t.Fatalf("lineage %+v (generator %s)", stages, sy.Generator)
	}
}

// bench swarm prints one report per size, protocol and mode, the same for
// the same seed, and refuses settings out of range.
func TestBenchSwarm(t *testing.T) {
	args := []string{"bench", "swarm", "--peers", "8,100", "--protocols", "all,scatter", "--modes", "sequential,overlap", "--rounds", "4", "--params", "1000000", "--json"}
	out, errOut, code := fomnet(t, args...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var reps []swarmsim.Report
	if err := json.Unmarshal([]byte(out), &reps); err != nil {
		t.Fatal(err)
	}
	if len(reps) != 8 || reps[0].Peers != 8 || reps[7].Peers != 100 || reps[7].Protocol != "scatter" || !reps[7].Overlap {
		t.Fatalf("%d reports: %+v", len(reps), reps)
	}
	for _, r := range reps {
		if !(r.Utilization > 0 && r.Utilization <= 1 && r.Useful <= r.Utilization && r.RoundSeconds > 0 && r.ReceivedPerRound > 0) {
			t.Errorf("implausible report %+v", r)
		}
	}
	if again, _, _ := fomnet(t, args...); again != out {
		t.Errorf("the same seed gave two reports")
	}
	for _, bad := range [][]string{{"--protocols", "gossip"}, {"--modes", "async"}, {"--peers", "0"}, {"--slack", "-1"}, {"--codec", "int3"}, {"--step", "NaN"}, {"--jitter", "NaN"}} {
		if _, errOut, code := fomnet(t, append([]string{"bench", "swarm", "--rounds", "3"}, bad...)...); code != exitUsage || !strings.HasPrefix(errOut, "fomnet: ") {
			t.Errorf("%v: exit %d %q", bad, code, errOut)
		}
	}
}
