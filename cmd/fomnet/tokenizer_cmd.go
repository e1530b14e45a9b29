package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

func newTokenizerCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "tokenizer", Short: "Train and use byte-level BPE tokenizers", Args: noArgs}
	cmd.AddCommand(newTokTrainCmd(e), newTokEncodeCmd(e), newTokDecodeCmd(e))
	return cmd
}

type tokTrainOut struct {
	Path    string  `json:"path"`
	Vocab   int     `json:"vocab"`
	Docs    int     `json:"docs"`
	Bytes   int64   `json:"bytes"`
	Skipped int     `json:"skipped"`
	Seconds float64 `json:"seconds"`
}

func newTokTrainCmd(e *env) *cobra.Command {
	var (
		vocab, minFreq int
		out, field     string
		asJSON         bool
	)
	cmd := &cobra.Command{
		Use:   "train [flags] INPUT...",
		Short: "Train a tokenizer on text, TSV or JSONL inputs",
		Long: `Train a byte-level BPE tokenizer and write OUT/tokenizer.json (Hugging Face
format). Inputs: text files (documents separated by blank lines), .tsv
parallel pairs (both sides are used) and .jsonl (--field). Text is
normalised to NFC before training. Malformed records are skipped and
counted; the first ones are reported with file:line.`,
		Example: "  fomnet tokenizer train ../shared/data/bilingual/*/*.tsv --vocab 16000 --out tok",
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return usagef("no inputs")
			}
			if vocab < 256+len(tokenizer.DefaultSpecials) {
				return usagef("--vocab %d is smaller than the %d byte and special tokens", vocab, 256+len(tokenizer.DefaultSpecials))
			}
			if err := os.MkdirAll(out, 0o755); err != nil {
				return err
			}
			start := time.Now()
			var inputs []sharding.Input
			for _, a := range args {
				inputs = append(inputs, sharding.Input{Path: a, Field: field})
			}
			texts, readStats := sharding.Texts(inputs, false, 0, 0)
			tk, err := tokenizer.Train(ctxOf(cmd), texts, tokenizer.TrainConfig{Vocab: vocab, MinFreq: minFreq,
				Progress: func(done, total int) {
					e.logf("merges %d/%d  %s", done, total, time.Since(start).Round(time.Second/10))
				}})
			st, readErr := readStats()
			if readErr != nil {
				return readErr
			}
			if err != nil {
				return err
			}
			for _, m := range st.FirstBad {
				e.logf("skipped %s", m)
			}
			if st.Skipped > len(st.FirstBad) {
				e.logf("skipped %d more malformed records", st.Skipped-len(st.FirstBad))
			}
			path := filepath.Join(out, "tokenizer.json")
			if err := tk.Save(path); err != nil {
				return err
			}
			res := tokTrainOut{Path: path, Vocab: tk.Vocab(), Docs: st.Docs, Bytes: st.Bytes, Skipped: st.Skipped, Seconds: time.Since(start).Seconds()}
			if tk.Vocab() < vocab {
				e.logf("note: stopped at %d tokens: no pair occurs %d times any more", tk.Vocab(), max(minFreq, 2))
			}
			if asJSON {
				return e.printJSON(res)
			}
			e.logf("trained on %d documents (%s) in %.1fs; vocabulary %d", res.Docs, bytesHuman(res.Bytes), res.Seconds, res.Vocab)
			fmt.Fprintln(e.stdout, path)
			return nil
		},
	}
	cmd.Flags().IntVar(&vocab, "vocab", 16000, "vocabulary size (bytes, specials and merges)")
	cmd.Flags().IntVar(&minFreq, "min-freq", 2, "smallest pair count worth a merge")
	cmd.Flags().StringVar(&out, "out", "tokenizer", "output directory")
	cmd.Flags().StringVar(&field, "field", "text", "JSONL field holding the text")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	return cmd
}

func loadTokenizer(path string) (*tokenizer.Tokenizer, error) {
	if path == "" {
		return nil, usagef("--tokenizer FILE is required")
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "tokenizer.json")
	}
	return tokenizer.LoadFile(path)
}

func newTokEncodeCmd(e *env) *cobra.Command {
	var (
		path   string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "encode --tokenizer FILE [--json]",
		Short: "Encode stdin text to token ids",
		Long: `Read text on stdin and print token ids on stdout: all of stdin as one
space-separated line, or with --json one JSON array of ids per input line
(the line without its newline).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tk, err := loadTokenizer(path)
			if err != nil {
				return err
			}
			in := cmd.InOrStdin()
			w := bufio.NewWriter(e.stdout)
			defer w.Flush()
			if !asJSON {
				b, err := io.ReadAll(in)
				if err != nil {
					return err
				}
				for i, id := range tk.Encode(string(b)) {
					if i > 0 {
						w.WriteByte(' ')
					}
					w.WriteString(strconv.Itoa(int(id)))
				}
				w.WriteByte('\n')
				return nil
			}
			r := bufio.NewReader(in)
			for {
				line, err := r.ReadString('\n')
				if len(line) > 0 || err == nil {
					ids := tk.Encode(strings.TrimSuffix(line, "\n"))
					if ids == nil {
						ids = []int32{}
					}
					b, _ := json.Marshal(ids)
					w.Write(b)
					w.WriteByte('\n')
				}
				if err == io.EOF {
					return nil
				}
				if err != nil {
					return err
				}
			}
		},
	}
	cmd.Flags().StringVar(&path, "tokenizer", "", "tokenizer.json (or its directory)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "one JSON array of ids per input line")
	return cmd
}

func newTokDecodeCmd(e *env) *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "decode --tokenizer FILE",
		Short: "Decode token ids on stdin to text",
		Long: `Read token ids on stdin — whitespace-separated numbers, or JSON arrays, one
per line — and print the decoded text (one line per JSON array).`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			tk, err := loadTokenizer(path)
			if err != nil {
				return err
			}
			sc := bufio.NewScanner(cmd.InOrStdin())
			sc.Buffer(make([]byte, 64<<10), 64<<20)
			line := 0
			var plain []int32
			for sc.Scan() {
				line++
				s := strings.TrimSpace(sc.Text())
				if strings.HasPrefix(s, "[") {
					var ids []int32
					if err := json.Unmarshal([]byte(s), &ids); err != nil {
						return fmt.Errorf("stdin:%d: %v", line, err)
					}
					b, err := tk.Decode(ids)
					if err != nil {
						return fmt.Errorf("stdin:%d: %w", line, err)
					}
					e.stdout.Write(append(b, '\n'))
					continue
				}
				for _, f := range strings.Fields(s) {
					v, err := strconv.ParseInt(f, 10, 32)
					if err != nil {
						return fmt.Errorf("stdin:%d: %q is not a token id", line, f)
					}
					plain = append(plain, int32(v))
				}
			}
			if err := sc.Err(); err != nil {
				return err
			}
			if len(plain) > 0 {
				b, err := tk.Decode(plain)
				if err != nil {
					return err
				}
				e.stdout.Write(b)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&path, "tokenizer", "", "tokenizer.json (or its directory)")
	return cmd
}
