package export

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

// Export → import is bit-exact for fp32, and within bf16 rounding for
// bf16; the files carry what transformers reads.
func TestHFRoundTrip(t *testing.T) {
	m, params, tk := testModel(t)
	dir := filepath.Join(t.TempDir(), "hf")
	if err := HF(dir, m.Config, params, tk, HFOptions{}); err != nil {
		t.Fatal(err)
	}
	c, got, tj, err := ReadHF(dir)
	if err != nil {
		t.Fatal(err)
	}
	if c != m.Config {
		t.Fatalf("config %+v, want %+v", c, m.Config)
	}
	for i := range params {
		if math.Float32bits(got[i]) != math.Float32bits(params[i]) {
			t.Fatalf("parameter %d: %g → %g", i, params[i], got[i])
		}
	}
	want, _ := tk.MarshalJSON()
	if !bytes.Equal(tj, want) {
		t.Fatal("tokenizer.json changed")
	}
	var cfg, tcfg, gen map[string]any
	for name, v := range map[string]*map[string]any{"config.json": &cfg, "tokenizer_config.json": &tcfg, "generation_config.json": &gen} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if cfg["architectures"].([]any)[0] != "LlamaForCausalLM" || cfg["torch_dtype"] != "float32" || cfg["num_key_value_heads"] != float64(m.Config.KVHeads) {
		t.Fatalf("config.json %v", cfg)
	}
	end, _ := tk.SpecialID(tokenizer.EndTurn)
	if tcfg["eos_token"] != "<|eos|>" || tcfg["tokenizer_class"] != "PreTrainedTokenizerFast" || tcfg["chat_template"] != tokenizer.ChatTemplate ||
		fmt.Sprint(gen["eos_token_id"]) != fmt.Sprint([]any{float64(m.Config.EOS), float64(end)}) {
		t.Fatalf("tokenizer_config %v, generation_config %v", tcfg, gen)
	}
	if err := HF(dir, m.Config, params, tk, HFOptions{}); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Fatalf("second export into the same directory: %v", err)
	}

	bdir := filepath.Join(t.TempDir(), "hf-bf16")
	if err := HF(bdir, m.Config, params, tk, HFOptions{DType: "bf16"}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(filepath.Join(bdir, "model.safetensors")); fi.Size() > 4*model.NumParams(m.Config)/2+4096 {
		t.Fatalf("bf16 file is %d bytes for %d parameters", fi.Size(), model.NumParams(m.Config))
	}
	_, got, _, err = ReadHF(bdir)
	if err != nil {
		t.Fatal(err)
	}
	for i := range params {
		if d := math.Abs(float64(got[i] - params[i])); d > math.Abs(float64(params[i]))*math.Ldexp(1, -8) {
			t.Fatalf("bf16 parameter %d: %g → %g", i, params[i], got[i])
		}
	}
}

// A broken directory is refused with an error that names the file and the
// problem.
func TestReadHFRejects(t *testing.T) {
	m, params, tk := testModel(t)
	dir := filepath.Join(t.TempDir(), "hf")
	if err := HF(dir, m.Config, params, tk, HFOptions{}); err != nil {
		t.Fatal(err)
	}
	cfgPath := filepath.Join(dir, "config.json")
	orig, _ := os.ReadFile(cfgPath)
	for _, c := range []struct {
		name, old, new, want string
	}{
		{"layers", `"num_hidden_layers": 2`, `"num_hidden_layers": 3`, "tensor model.layers.2.input_layernorm.weight is missing"},
		{"vocab", `"vocab_size": 320`, `"vocab_size": 290`, "tokenizer.json has 300 tokens"},
		{"model type", `"model_type": "llama"`, `"model_type": "gpt2"`, "model_type"},
	} {
		os.WriteFile(cfgPath, bytes.Replace(orig, []byte(c.old), []byte(c.new), 1), 0o644)
		if _, _, _, err := ReadHF(dir); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
	os.WriteFile(cfgPath, orig, 0o644)
	os.Truncate(filepath.Join(dir, "model.safetensors"), 100)
	if _, _, _, err := ReadHF(dir); err == nil || !strings.Contains(err.Error(), "model.safetensors") {
		t.Errorf("truncated weights: %v", err)
	}
}
