package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/tokenizer"
)

// speaker is a checkpoint's model and tokenizer loaded to generate text.
type speaker struct {
	m  *model.Model
	tk *tokenizer.Tokenizer // nil: byte-level tokens
}

// loadSpeaker loads the checkpoint directory dir (and its tokenizer.json
// when it has one) on be's backend.
func loadSpeaker(e *env, dir string, threads int) (*speaker, func(), error) {
	be, err := newBackend(e, threads, "auto")
	if err != nil {
		return nil, nil, err
	}
	m, _, err := model.Load(be, dir)
	if err != nil {
		be.Close()
		return nil, nil, err
	}
	s := &speaker{m: m}
	if b, err := os.ReadFile(filepath.Join(dir, "tokenizer.json")); err == nil {
		if s.tk, err = tokenizer.Parse(b); err != nil {
			be.Close()
			return nil, nil, fmt.Errorf("%s: %w", dir, err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		be.Close()
		return nil, nil, err
	}
	return s, func() { be.Close() }, nil
}

// decode turns ids into text.
func (s *speaker) decode(ids []int32) string {
	if s.tk == nil {
		return model.DecodeBytes(ids)
	}
	b, _ := s.tk.Decode(ids)
	return string(b)
}

// mask keeps sampling to valid UTF-8 (unless raw).
func (s *speaker) mask(raw bool) func([]int32, []float32) {
	switch {
	case raw:
		return nil
	case s.tk != nil:
		return s.tk.UTF8Mask()
	}
	return tokenizer.UTF8Mask(func(id int32) []byte {
		if id < 256 {
			return []byte{byte(id)}
		}
		return nil
	})
}

// check refuses ids outside the model's vocabulary.
func (s *speaker) check(ids []int32) error {
	for _, id := range ids {
		if int(id) >= s.m.Config.Vocab {
			return fmt.Errorf("prompt token %d is outside the model's vocabulary %d (tokenizer and checkpoint disagree)", id, s.m.Config.Vocab)
		}
	}
	return nil
}

// chatPrompt encodes msgs with the opening of the assistant's turn and
// sets sc to stop at the end of it.
func (s *speaker) chatPrompt(msgs []tokenizer.Message, sc *model.SampleConfig) ([]int32, error) {
	if s.tk == nil || !s.tk.Chat() {
		return nil, errors.New("the checkpoint's tokenizer has no chat tokens (<|user|>, <|assistant|>, <|end|>)")
	}
	ids, err := s.tk.EncodeChat(msgs, true)
	if err != nil {
		return nil, err
	}
	end, _ := s.tk.SpecialID(tokenizer.EndTurn)
	sc.Stop = []int32{end}
	return ids, s.check(ids)
}

// stream generates from ids, writing text to w as whole characters
// arrive (when w is set), and returns the new tokens.
func (s *speaker) stream(ids []int32, sc model.SampleConfig, w func(string)) ([]int32, error) {
	var pending []int32 // bytes of a character not yet complete
	emit := func(t int32) {
		if w == nil {
			return
		}
		pending = append(pending, t)
		if text := s.decode(pending); !containsReplacement(text) {
			w(text)
			pending = pending[:0]
		}
	}
	out, err := model.Generate(s.m, ids, sc, emit)
	if w != nil && len(pending) > 0 {
		w(s.decode(pending))
	}
	return out, err
}

func sampleFlags(cmd *cobra.Command, sc *model.SampleConfig, threads *int, raw *bool, maxTokens int) {
	f := cmd.Flags()
	f.IntVar(&sc.MaxTokens, "max-tokens", maxTokens, "new tokens at most (per answer)")
	f.Float64Var(&sc.Temperature, "temperature", 0.8, "sampling temperature (0: greedy)")
	f.IntVar(&sc.TopK, "top-k", 40, "keep the k most likely tokens (0: all)")
	f.Float64Var(&sc.TopP, "top-p", 0.95, "nucleus sampling threshold (1: off)")
	f.Uint64Var(&sc.Seed, "seed", 1, "sampling seed")
	f.IntVar(threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	f.BoolVar(raw, "raw", false, "sample from the model's distribution as is (by default tokens that would break UTF-8 are excluded)")
}

func checkSample(sc model.SampleConfig) error {
	if sc.MaxTokens < 1 || sc.Temperature < 0 || sc.TopK < 0 || sc.TopP < 0 || sc.TopP > 1 {
		return usagef("--max-tokens must be positive, --temperature and --top-k not negative, --top-p in [0, 1]")
	}
	return nil
}

func newChatCmd(e *env) *cobra.Command {
	var (
		sc      model.SampleConfig
		threads int
		raw     bool
		asJSON  bool
		system  string
	)
	cmd := &cobra.Command{
		Use:   "chat CHECKPOINT",
		Short: "Talk with a checkpoint's model, turn by turn",
		Long: `Load a checkpoint directory and hold a conversation in the project's chat
format (the template its Hugging Face and GGUF exports carry): each line read
from stdin is your turn; the model's answer streams to stdout and ends at
its end-of-turn token or --max-tokens. The whole conversation so far is the
context of each answer (its newest tokens, when it outgrows the model's
window). /reset forgets the conversation (--system stays), /exit or the end
of input ends it. The prompt "you> " goes to stderr when stdin is a
terminal. Answer n is drawn with seed --seed + n, so the same lines give
the same conversation. With --json, one JSON object per answer:
{"turn", "role", "content", "tokens"}.`,
		Example: `  fomnet chat ./sft-checkpoint --system "Answer in the language you are asked in."
  printf '12 더하기 30은?\nAnd in English?\n' | fomnet chat ./sft-checkpoint --temperature 0`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("chat takes one checkpoint directory, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkSample(sc); err != nil {
				return err
			}
			s, closeFn, err := loadSpeaker(e, args[0], threads)
			if err != nil {
				return err
			}
			defer closeFn()
			sc.Mask = s.mask(raw)
			var history []tokenizer.Message
			if system != "" {
				history = append(history, tokenizer.Message{Role: tokenizer.RoleSystem, Content: system})
			}
			start := len(history)
			in := cmd.InOrStdin()
			f, isFile := in.(*os.File)
			interactive := isFile && isTerminal(f)
			lines := bufio.NewScanner(in)
			lines.Buffer(make([]byte, 64<<10), 1<<20)
			for turn := 0; ; {
				if interactive {
					fmt.Fprint(e.stderr, "you> ")
				}
				if !lines.Scan() {
					return lines.Err()
				}
				line := strings.TrimSpace(lines.Text())
				switch line {
				case "":
					continue
				case "/exit":
					return nil
				case "/reset":
					history = history[:start]
					continue
				}
				history = append(history, tokenizer.Message{Role: tokenizer.RoleUser, Content: line})
				tsc := sc
				tsc.Seed = sc.Seed + uint64(turn)
				ids, err := s.chatPrompt(history, &tsc)
				if err != nil {
					return err
				}
				var w func(string)
				if !asJSON {
					w = func(text string) { fmt.Fprint(e.stdout, text) }
				}
				out, err := s.stream(ids, tsc, w)
				if err != nil {
					return err
				}
				answer := s.decode(out)
				history = append(history, tokenizer.Message{Role: tokenizer.RoleAssistant, Content: answer})
				if asJSON {
					if err := e.printJSON(map[string]any{"turn": turn, "role": tokenizer.RoleAssistant, "content": answer, "tokens": len(out)}); err != nil {
						return err
					}
				} else {
					fmt.Fprintln(e.stdout)
				}
				turn++
			}
		},
	}
	sampleFlags(cmd, &sc, &threads, &raw, 256)
	cmd.Flags().StringVar(&system, "system", "", "a system message that opens the conversation")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per answer instead of streaming")
	return cmd
}

// isTerminal reports whether f is a character device (a terminal).
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}
