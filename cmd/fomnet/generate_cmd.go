package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

func newGenerateCmd(e *env) *cobra.Command {
	var (
		prompt  string
		sc      model.SampleConfig
		threads int
		asJSON  bool
		raw     bool
	)
	cmd := &cobra.Command{
		Use:   "generate CHECKPOINT --prompt TEXT",
		Short: "Continue a prompt with a checkpoint's model",
		Long: `Load a checkpoint directory and continue --prompt, streaming text to stdout
until EOS or --max-tokens. The checkpoint's tokenizer.json is used when it has
one, byte-level tokens otherwise. The same --seed gives the same text.
Decoding uses a key/value cache: after the prompt, each token costs one
token's work. Tokens that would make the output invalid UTF-8 are excluded
unless --raw.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("generate takes one checkpoint directory, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if sc.MaxTokens < 1 || sc.Temperature < 0 || sc.TopK < 0 || sc.TopP < 0 || sc.TopP > 1 {
				return usagef("--max-tokens must be positive, --temperature and --top-k not negative, --top-p in [0, 1]")
			}
			be, err := newBackend(e, threads, "auto")
			if err != nil {
				return err
			}
			defer be.Close()
			m, _, err := model.Load(be, args[0])
			if err != nil {
				return err
			}
			var tk *tokenizer.Tokenizer
			if b, err := os.ReadFile(filepath.Join(args[0], "tokenizer.json")); err == nil {
				if tk, err = tokenizer.Parse(b); err != nil {
					return fmt.Errorf("%s: %w", args[0], err)
				}
			} else if !errors.Is(err, os.ErrNotExist) {
				return err
			}
			var ids []int32
			decode := func(t []int32) string { return model.DecodeBytes(t) }
			if tk != nil {
				ids = tk.Encode(prompt)
				decode = func(t []int32) string { b, _ := tk.Decode(t); return string(b) }
				if !raw {
					sc.Mask = tk.UTF8Mask()
				}
			} else {
				for _, c := range []byte(prompt) {
					ids = append(ids, int32(c))
				}
				if !raw {
					sc.Mask = tokenizer.UTF8Mask(func(id int32) []byte {
						if id < 256 {
							return []byte{byte(id)}
						}
						return nil
					})
				}
			}
			for _, id := range ids {
				if int(id) >= m.Config.Vocab {
					return fmt.Errorf("prompt token %d is outside the model's vocabulary %d (tokenizer and checkpoint disagree)", id, m.Config.Vocab)
				}
			}
			var pending []int32 // bytes of a character not yet complete
			emit := func(t int32) {
				if asJSON {
					return
				}
				pending = append(pending, t)
				if s := decode(pending); !containsReplacement(s) {
					fmt.Fprint(e.stdout, s)
					pending = pending[:0]
				}
			}
			if !asJSON {
				fmt.Fprint(e.stdout, prompt)
			}
			out, err := model.Generate(m, ids, sc, emit)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"prompt": prompt, "text": decode(out), "tokens": len(out), "prompt_ids": ids, "ids": out})
			}
			fmt.Fprintln(e.stdout, decode(pending))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&prompt, "prompt", "", "text to continue")
	f.IntVar(&sc.MaxTokens, "max-tokens", 100, "new tokens at most")
	f.Float64Var(&sc.Temperature, "temperature", 0.8, "sampling temperature (0: greedy)")
	f.IntVar(&sc.TopK, "top-k", 40, "keep the k most likely tokens (0: all)")
	f.Float64Var(&sc.TopP, "top-p", 0.95, "nucleus sampling threshold (1: off)")
	f.Uint64Var(&sc.Seed, "seed", 1, "sampling seed")
	f.IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	f.BoolVar(&asJSON, "json", false, "print one JSON object at the end instead of streaming (with the prompt's and the output's token ids)")
	f.BoolVar(&raw, "raw", false, "sample from the model's distribution as is (by default tokens that would break UTF-8 are excluded)")
	return cmd
}

func containsReplacement(s string) bool {
	for _, r := range s {
		if r == '\uFFFD' {
			return true
		}
	}
	return false
}
