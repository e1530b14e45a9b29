package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/kernels/cpu"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/model/export"
	"github.com/fomnet/fomnet/model/gguf"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/tokenizer"
)

// checkpointSource resolves a CHECKPOINT argument: a directory, or a CID
// fetched through the node on --home into a temporary directory (removed
// by the returned cleanup).
func checkpointSource(ctx context.Context, e *env, f *nodeFlags, arg string) (string, func(), error) {
	if fi, err := os.Stat(arg); err == nil && fi.IsDir() {
		return arg, func() {}, nil
	}
	c, err := cid.Decode(arg)
	if err != nil {
		return "", nil, usagef("%s is neither a checkpoint directory nor a CID", arg)
	}
	tmp, err := os.MkdirTemp("", "fomnet-checkpoint-")
	if err != nil {
		return "", nil, err
	}
	cleanup := func() { os.RemoveAll(tmp) }
	dir := filepath.Join(tmp, c.String())
	err = withNode(ctx, e, f, true, false, func(api node.API) error {
		p := newProgress(e, "fetched")
		defer p.finish()
		return api.Get(ctx, c, dir, p.update)
	})
	if err != nil {
		cleanup()
		return "", nil, err
	}
	return dir, cleanup, nil
}

// loadCheckpoint reads a checkpoint directory's config, weights and
// tokenizer.
func loadCheckpoint(dir string) (model.Config, []float32, *tokenizer.Tokenizer, error) {
	be, err := cpu.New(cpu.Options{Threads: 1})
	if err != nil {
		return model.Config{}, nil, nil, err
	}
	defer be.Close()
	m, _, err := model.Load(be, dir)
	if err != nil {
		return model.Config{}, nil, nil, err
	}
	params := make([]float32, m.Layout.Size)
	be.Download(params, m.Params)
	tk, _, err := checkpointTokenizer(dir)
	if err != nil {
		return model.Config{}, nil, nil, err
	}
	return m.Config, params, tk, nil
}

// checkpointTokenizer reads and parses a checkpoint's tokenizer.json,
// which export and eval need; it returns the file's bytes too.
func checkpointTokenizer(dir string) (*tokenizer.Tokenizer, []byte, error) {
	path := filepath.Join(dir, "tokenizer.json")
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, nil, fmt.Errorf("%s has no tokenizer.json; this command needs the checkpoint's tokenizer", dir)
		}
		return nil, nil, err
	}
	tk, err := tokenizer.Parse(b)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	return tk, b, nil
}

func newExportCmd(e *env) *cobra.Command {
	var (
		f           nodeFlags
		format, out string
		dtype, name string
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "export CHECKPOINT --format hf|gguf -o PATH",
		Short: "Write a checkpoint as a Hugging Face directory or a GGUF file",
		Long: `Export a checkpoint (a directory, or a CID fetched through the node on --home)
for use outside fomnet.

--format hf writes a directory that the Hugging Face libraries load as a Llama
model: model.safetensors (--dtype f32 or bf16), config.json
(LlamaForCausalLM), tokenizer.json, tokenizer_config.json,
generation_config.json.

--format gguf writes one GGUF v3 file for llama.cpp: architecture llama, the
byte-level BPE tokenizer in its metadata, matrices as --dtype f32, f16, bf16
or q8_0 (norm weights stay f32; q8_0 falls back to f16 for rows that are not a
multiple of 32), Q and K rows permuted to GGUF's RoPE layout.

The output appears only when complete and never replaces an existing path.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("export takes one checkpoint (directory or CID), got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usagef("-o PATH is required")
			}
			if _, err := os.Stat(out); err == nil {
				return fmt.Errorf("%s already exists; refusing to overwrite it", out)
			}
			var ggufType gguf.Type
			switch format {
			case "hf":
				if dtype == "" {
					dtype = "f32"
				}
				if dtype != "f32" && dtype != "bf16" {
					return usagef("--dtype %q: hf takes f32 or bf16", dtype)
				}
			case "gguf":
				if dtype == "" {
					dtype = "f16"
				}
				t, err := gguf.ParseType(dtype)
				if err != nil {
					return usagef("--dtype: %v", err)
				}
				ggufType = t
			default:
				return usagef("--format %q: hf or gguf", format)
			}
			dir, cleanup, err := checkpointSource(ctxOf(cmd), e, &f, args[0])
			if err != nil {
				return err
			}
			defer cleanup()
			c, params, tk, err := loadCheckpoint(dir)
			if err != nil {
				return err
			}
			if format == "hf" {
				err = export.HF(out, c, params, tk, export.HFOptions{DType: dtype})
			} else {
				if name == "" {
					name = filepath.Base(filepath.Clean(args[0]))
				}
				err = fsutil.WriteFileFunc(out, func(w io.Writer) error {
					return export.GGUF(w, c, params, tk, export.GGUFOptions{Type: ggufType, Name: name})
				})
			}
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"path": out, "format": format, "dtype": dtype, "params": len(params)})
			}
			fmt.Fprintln(e.stdout, out)
			return nil
		},
	}
	f.addNet(cmd)
	f.addTimeout(cmd, e)
	cmd.Flags().StringVar(&format, "format", "", "hf or gguf (required)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "output directory (hf) or file (gguf)")
	cmd.Flags().StringVar(&dtype, "dtype", "", "hf: f32 (default) or bf16; gguf: f16 (default), f32, bf16, q8_0")
	cmd.Flags().StringVar(&name, "name", "", "gguf general.name (default: the checkpoint's name)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON summary")
	return cmd
}

func newImportCmd(e *env) *cobra.Command {
	var format, out string
	cmd := &cobra.Command{
		Use:   "import --format hf DIR -o CHECKPOINT",
		Short: "Read a Hugging Face Llama directory into a fomnet checkpoint",
		Long: `Read a Hugging Face Llama directory (as fomnet export --format hf writes it,
or transformers saves a Llama model of shapes fomnet supports: config.json,
model.safetensors in f32, bf16 or f16, tokenizer.json) and write a fomnet
checkpoint directory at -o. An f32 export imports bit-exact.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("import takes one directory, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if format != "hf" {
				return usagef("--format %q: only hf is imported", format)
			}
			if out == "" {
				return usagef("-o CHECKPOINT is required")
			}
			c, params, tj, err := export.ReadHF(args[0])
			if err != nil {
				return err
			}
			if err := model.SaveWeights(out, c, params, map[string]string{"imported_from": filepath.Base(filepath.Clean(args[0]))},
				model.File{Name: "tokenizer.json", Data: tj}); err != nil {
				return err
			}
			fmt.Fprintln(e.stdout, out)
			return nil
		},
	}
	cmd.Flags().StringVar(&format, "format", "hf", "input format (hf)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "checkpoint directory to write (must not exist)")
	return cmd
}
