package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/model/eval"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

type evalSummary struct {
	Checkpoint string            `json:"checkpoint"`
	Results    []eval.Result     `json:"results"`
	Tasks      []eval.TaskResult `json:"tasks"`
	// Instruct: the built-in held-out instructions (--tasks instruct).
	Instruct []eval.InstructResult `json:"instruct,omitempty"`
}

func newEvalCmd(e *env) *cobra.Command {
	var (
		f           nodeFlags
		data, tasks []string
		seq, batch  int
		source      string
		threads     int
		nInstr      int
		dev         deviceFlags
		asJSON      bool
	)
	cmd := &cobra.Command{
		Use:   "eval CHECKPOINT [--data DIR|FILE]... [--tasks builtin|FILE.jsonl]...",
		Short: "Loss, perplexity and bits per byte per language and source; multiple-choice accuracy",
		Long: `Evaluate a checkpoint (a directory, or a CID fetched through the node on --home).

--data DIR is a dataset made by fomnet data prepare (its shards are checked
against their CIDs and must use the checkpoint's tokenizer): every row is
scored, grouped by the shards' language and source. --data FILE is UTF-8
text: paragraphs (split at blank lines) are tagged ko, en or mixed by script,
with source --source. For each group: tokens scored, loss (nats per token),
perplexity, and bits per byte (summed loss in bits over the UTF-8 bytes of
the scored tokens; comparable across tokenizers).

--tasks builtin runs the built-in translation task (pick a paragraph's
translation among four, both directions, from the aligned pairs of the
built-in corpus); --tasks FILE.jsonl runs a task file of lines
{"context": …, "choices": […], "answer": i, "language": …}. Accuracy picks the
choice of highest log-likelihood; acc_norm the highest per byte.

--tasks instruct asks a chat model --items held-out built-in instructions
(the post-training generator's evaluation split, which fomnet data prepare
--instructions/--pairs never writes): per question language, the share of
greedy answers exactly right (exact_match) and in the expected language
(language_match), and over the same items as preference pairs the share
where the right answer is the likelier (preference_accuracy) and the mean
log-likelihood margin per answer token.

--device cuda scores on a GPU (a binary built with -tags cuda); in fp32 the
numbers are the CPU's.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("eval takes one checkpoint (directory or CID), got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(data) == 0 && len(tasks) == 0 {
				return usagef("nothing to evaluate: give --data or --tasks")
			}
			if batch < 1 || seq < 0 {
				return usagef("--batch must be positive, --seq not negative")
			}
			dir, cleanup, err := checkpointSource(ctxOf(cmd), e, &f, args[0])
			if err != nil {
				return err
			}
			defer cleanup()
			be, err := dev.open(e, threads, "auto")
			if err != nil {
				return err
			}
			defer be.Close()
			m, _, err := model.Load(be, dir)
			if err != nil {
				return err
			}
			tk, tj, err := checkpointTokenizer(dir)
			if err != nil {
				return err
			}
			pad, ok := tk.SpecialID(tokenizer.PAD)
			if !ok {
				return fmt.Errorf("%s: the tokenizer has no %s token", dir, tokenizer.PAD)
			}
			if seq == 0 {
				seq = min(128, m.Config.MaxSeq)
			}
			if seq > m.Config.MaxSeq {
				return usagef("--seq %d exceeds the model's max_seq %d", seq, m.Config.MaxSeq)
			}
			sum := evalSummary{Checkpoint: args[0], Results: []eval.Result{}, Tasks: []eval.TaskResult{}}
			var groups []eval.Group
			for _, d := range data {
				gs, err := evalGroups(d, tj, tk, m.Config, seq, pad, source)
				if err != nil {
					return err
				}
				groups = append(groups, gs...)
			}
			e.logf("eval: %d groups", len(groups))
			if sum.Results, err = eval.Loss(m, tk, groups, batch, pad); err != nil {
				return err
			}
			for _, t := range tasks {
				if t == "instruct" {
					var its []eval.Instruction
					for _, in := range sharding.Instructions(1, nInstr, true) {
						its = append(its, eval.Instruction{Lang: in.Lang, AnswerLang: in.AnswerLang, Prompt: in.Prompt, Answer: in.Answer, Wrong: in.Wrong})
					}
					e.logf("eval: %d held-out instructions", len(its))
					if sum.Instruct, err = eval.Instructions(m, tk, its, 48); err != nil {
						return err
					}
					continue
				}
				name, items := "translation", []eval.Item(nil)
				if t == "builtin" {
					items = eval.TranslationTask(sharding.BuiltinPairs(), 1)
				} else {
					fh, err := os.Open(t)
					if err != nil {
						return err
					}
					items, err = eval.DecodeItems(fh)
					fh.Close()
					if err != nil {
						return fmt.Errorf("%s: %w", t, err)
					}
					name = strings.TrimSuffix(filepath.Base(t), filepath.Ext(t))
				}
				e.logf("eval: task %s, %d items", name, len(items))
				rs, err := eval.MultipleChoice(m, tk, name, items)
				if err != nil {
					return err
				}
				sum.Tasks = append(sum.Tasks, rs...)
			}
			if asJSON {
				return e.printJSON(sum)
			}
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			if len(sum.Results) > 0 {
				fmt.Fprintln(w, "language\tsource\ttokens\tloss\tppl\tbpb")
				for _, r := range sum.Results {
					fmt.Fprintf(w, "%s\t%s\t%d\t%.4f\t%.2f\t%.4f\n", r.Language, r.Source, r.Tokens, r.Loss, r.PPL, r.BPB)
				}
			}
			if len(sum.Instruct) > 0 {
				fmt.Fprintln(w, "instruct\tlanguage\tn\texact\tlang\tpref_acc\tmargin")
				for _, r := range sum.Instruct {
					fmt.Fprintf(w, "instruct\t%s\t%d\t%.3f\t%.3f\t%.3f\t%.3f\n", r.Language, r.N, r.ExactMatch, r.LanguageMatch, r.PrefAccuracy, r.PrefMargin)
				}
			}
			if len(sum.Tasks) > 0 {
				fmt.Fprintln(w, "task\tlanguage\tn\tacc\tacc_norm\t")
				for _, t := range sum.Tasks {
					fmt.Fprintf(w, "%s\t%s\t%d\t%.3f\t%.3f\t\n", t.Task, t.Language, t.N, t.Acc, t.AccNorm)
				}
			}
			return w.Flush()
		},
	}
	f.addNet(cmd)
	f.addTimeout(cmd, e)
	fl := cmd.Flags()
	fl.StringArrayVar(&data, "data", nil, "prepared dataset directory or UTF-8 text file (repeatable)")
	fl.StringArrayVar(&tasks, "tasks", nil, `"builtin", "instruct" or a JSONL task file (repeatable)`)
	fl.IntVar(&nInstr, "items", 200, "held-out instructions for --tasks instruct")
	fl.IntVar(&seq, "seq", 0, "tokens per window for text files (default min(128, max_seq))")
	fl.IntVar(&batch, "batch", 8, "windows per forward pass")
	fl.StringVar(&source, "source", "natural", "source label of text files")
	fl.IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	dev.add(fl)
	fl.BoolVar(&asJSON, "json", false, "print JSON: results (language, source, tokens, bytes, loss, ppl, bpb) and tasks (task, language, n, acc, acc_norm)")
	return cmd
}

// evalGroups reads one --data argument into groups of rows.
func evalGroups(path string, tj []byte, tk *tokenizer.Tokenizer, c model.Config, seq int, pad int32, source string) ([]eval.Group, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	eos := int32(c.EOS)
	if !fi.IsDir() {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		docs := map[string][][]int32{}
		for _, p := range strings.Split(strings.ReplaceAll(string(b), "\r\n", "\n"), "\n\n") {
			if p = strings.TrimSpace(p); p == "" {
				continue
			}
			lang := sharding.Language(p, sharding.DefaultFilters().LangShare)
			docs[lang] = append(docs[lang], append(tk.Encode(p), eos))
		}
		var out []eval.Group
		for lang, ds := range docs {
			out = append(out, eval.Group{Language: lang, Source: source, Rows: eval.Rows(ds, seq, pad)})
		}
		sort.Slice(out, func(i, j int) bool { return out[i].Language < out[j].Language })
		return out, nil
	}
	_, dtj, shards, err := readDataset(path, func(man *sharding.Manifest) error {
		if man.SeqLen > c.MaxSeq {
			return fmt.Errorf("dataset %s has rows of %d tokens; the model takes %d", path, man.SeqLen+1, c.MaxSeq+1)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(dtj, tj) {
		return nil, fmt.Errorf("dataset %s was tokenised with another tokenizer than the checkpoint's", path)
	}
	byKey := map[[2]string]*eval.Group{}
	var keys [][2]string
	for _, s := range shards {
		k := [2]string{s.Info.Language, s.Info.Source}
		g := byKey[k]
		if g == nil {
			g = &eval.Group{Language: k[0], Source: k[1]}
			byKey[k] = g
			keys = append(keys, k)
		}
		for i := 0; i < s.Shard.Rows; i++ {
			g.Rows = append(g.Rows, s.Shard.Row(i))
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("dataset " + path + " has no shards")
	}
	var out []eval.Group
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	return out, nil
}
