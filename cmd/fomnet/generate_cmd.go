package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

func newGenerateCmd(e *env) *cobra.Command {
	var (
		prompt, system string
		sc             model.SampleConfig
		threads        int
		asJSON, raw    bool
		chat           bool
	)
	cmd := &cobra.Command{
		Use:   "generate CHECKPOINT --prompt TEXT",
		Short: "Continue a prompt with a checkpoint's model",
		Long: `Load a checkpoint directory and continue --prompt, streaming text to stdout
until EOS or --max-tokens. The checkpoint's tokenizer.json is used when it has
one, byte-level tokens otherwise. The same --seed gives the same text.
Decoding uses a key/value cache: after the prompt, each token costs one
token's work. Tokens that would make the output invalid UTF-8 are excluded
unless --raw. With --chat, --prompt is a user's turn in the chat format
(after --system, if given) and the output is the model's answer, ending at
its end-of-turn token (fomnet chat holds a whole conversation).`,
		Example: `  fomnet generate ./checkpoint --prompt "민수: 안녕하세요"
  fomnet generate ./sft-checkpoint --chat --prompt "Translate into Korean: good morning" --temperature 0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("generate takes one checkpoint directory, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSample(sc); err != nil {
				return err
			}
			if system != "" && !chat {
				return usagef("--system goes with --chat")
			}
			s, closeFn, err := loadSpeaker(e, args[0], threads)
			if err != nil {
				return err
			}
			defer closeFn()
			sc.Mask = s.mask(raw)
			var ids []int32
			switch {
			case chat:
				var msgs []tokenizer.Message
				if system != "" {
					msgs = append(msgs, tokenizer.Message{Role: tokenizer.RoleSystem, Content: system})
				}
				msgs = append(msgs, tokenizer.Message{Role: tokenizer.RoleUser, Content: prompt})
				ids, err = s.chatPrompt(msgs, &sc)
			case s.tk != nil:
				ids = s.tk.Encode(prompt)
				err = s.check(ids)
			default:
				for _, c := range []byte(prompt) {
					ids = append(ids, int32(c))
				}
			}
			if err != nil {
				return err
			}
			var w func(string)
			if !asJSON {
				w = func(text string) { fmt.Fprint(e.stdout, text) }
				if !chat {
					fmt.Fprint(e.stdout, prompt)
				}
			}
			out, err := s.stream(ids, sc, w)
			if err != nil {
				return err
			}
			if asJSON {
				return e.printJSON(map[string]any{"prompt": prompt, "text": s.decode(out), "tokens": len(out), "prompt_ids": ids, "ids": out})
			}
			fmt.Fprintln(e.stdout)
			return nil
		},
	}
	sampleFlags(cmd, &sc, &threads, &raw, 100)
	f := cmd.Flags()
	f.StringVar(&prompt, "prompt", "", "text to continue (with --chat: the user's turn)")
	f.BoolVar(&chat, "chat", false, "treat --prompt as a user's turn in the chat format and print the model's answer")
	f.StringVar(&system, "system", "", "with --chat: a system message before the prompt")
	f.BoolVar(&asJSON, "json", false, "print one JSON object at the end instead of streaming (with the prompt's and the output's token ids)")
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
