package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/internal/fsutil"
	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

func newDataCmd(e *env) *cobra.Command {
	cmd := &cobra.Command{Use: "data", Short: "Prepare and inspect content-addressed datasets", Args: noArgs}
	cmd.AddCommand(newDataPrepareCmd(e), newDataPartCmd(e), newDataMergeCmd(e), newDataInspectCmd(e), newDataPublishCmd(e))
	return cmd
}

type prepareOut struct {
	DatasetCID string           `json:"dataset_cid"`
	Dir        string           `json:"dir"`
	Shards     int              `json:"shards"`
	Tokens     int64            `json:"tokens"`
	Totals     []sharding.Total `json:"totals"`
	Report     sharding.Report  `json:"report"`
	Tokenizer  string           `json:"tokenizer_cid"`
	// Skipped lists the files of input directories left out.
	Skipped []sharding.SkippedFile `json:"skipped_files,omitempty"`
	// How the preparation went on this machine (not part of the dataset).
	InputBytes int64   `json:"input_bytes"`
	Threads    int     `json:"threads"`
	Seconds    float64 `json:"seconds"` // preparation, without tokenizer training
	MiBPerS    float64 `json:"mib_per_s"`
	PeakRSS    int64   `json:"peak_rss_bytes"` // of the whole command
}

func newDataPrepareCmd(e *env) *cobra.Command {
	var (
		out, configPath, tokPath string
		vocab, seq, shardTokens  int
		in                       sharding.Input
		builtin                  bool
		synthetic, instr, pairs  int
		multiTurn                int
		synthSeed                uint64
		asJSON                   bool
		trainRoles               []string
		threads, parts           int
		swarm                    bool
	)
	cmd := &cobra.Command{
		Use:   "prepare [flags] INPUT...",
		Short: "Filter, deduplicate, tokenise and pack inputs into shards with a manifest",
		Long: `Prepare a dataset: read the inputs (text, .tsv pairs, .jsonl; a directory
stands for the files under it, in lexical order, and those that are not text
or hidden are skipped and counted, where a file named alone that is not text
is refused), normalise to
NFC, apply the quality filters, drop exact and near duplicates, tokenise, pack
documents (EOS after each) into rows of --seq+1 tokens, and write shards named
by CID under OUT/shards, OUT/tokenizer.json and OUT/manifest.json (IPLD
dag-json). The dataset CID (the manifest's CID) is printed last.

Inputs given as arguments share the provenance flags (--source, --generator,
--licence, --stage); a --config file (JSON: {"inputs": [{"path", "source",
"generator", "licence", "stage", "format", "field"}], "filters": {...},
"seq_len", "shard_tokens"}) can give each input its own. Without --tokenizer a
tokenizer of --vocab tokens is trained on the inputs first. --builtin and
--synthetic N add the project's own texts (CC0-1.0), so a dataset can be
made without any input file.

Conversations — .jsonl records of {"messages": [{"role", "content"}…]} (roles
system, user, assistant) or {"instruction", "input", "output"} — are encoded
in the chat format (fomnet chat), each kept whole within one row, into
shards that carry a loss mask: only the turns of --train-roles (default:
the assistant's) are trained.

Preference pairs — .jsonl records of {"prompt" or "messages", "chosen",
"rejected"} (each answer a string or assistant turns) — become shards of
pairs (a run with --objective dpo or simpo trains on them). --instructions N,
--multi-turn N and --pairs N add the project's own bilingual post-training
data (sums, translations, definitions asked in Korean or English;
multi-turn conversations whose follow-up asks for the answer again in the
other language, arithmetic word problems among their questions; pairs whose rejected
answer is wrong, in the other language or unfinished; CC0-1.0), from the
generator's training split (a tenth of the prompts is held out for fomnet
eval).

Documents are analysed on --threads goroutines and packed in input order:
the dataset does not depend on the thread count. To split a preparation
across machines, --parts N writes a plan instead (OUT/plan.json: the recipe,
every input's digest, the inputs cut into N parts at document boundaries;
OUT/tokenizer.json): each machine runs fomnet data part on one part, and
fomnet data merge packs the pieces into the dataset a single run of
prepare would have made, CID for CID. With --swarm the plan also names
every input by CID and its directory's CID is printed: added to a node with
the inputs, it is a job the swarm runs (fomnet join PLAN-CID: each node
makes the pieces rendezvous hashing gives it, checks its peers' pieces
against the inputs, and merges them all into the dataset).`,
		Example: `  fomnet data prepare ../shared/data/bilingual/parallel/*.tsv --licence MPL-2.0 --out ds
  fomnet data prepare --config recipe.json --tokenizer tok/tokenizer.json --out ds --json
  fomnet data prepare corpus/ --tokenizer tok --parts 3 --out plan`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg := sharding.PrepareConfig{Filters: sharding.DefaultFilters()}
			if configPath != "" {
				b, err := os.ReadFile(configPath)
				if err != nil {
					return err
				}
				dec := json.NewDecoder(bytes.NewReader(b))
				dec.DisallowUnknownFields()
				if err := dec.Decode(&cfg); err != nil {
					return usagef("config %s: %v", configPath, err)
				}
			}
			for _, a := range args {
				x := in
				x.Path = a
				cfg.Inputs = append(cfg.Inputs, x)
			}
			cfg.Builtin = cfg.Builtin || builtin
			if cmd.Flags().Changed("synthetic") {
				cfg.Synthetic, cfg.SyntheticSeed = synthetic, synthSeed
			}
			if cmd.Flags().Changed("instructions") || cmd.Flags().Changed("pairs") || cmd.Flags().Changed("multi-turn") {
				cfg.Instructions, cfg.Pairs, cfg.MultiTurn, cfg.SyntheticSeed = instr, pairs, multiTurn, synthSeed
			}
			if cmd.Flags().Changed("seq") || cfg.SeqLen == 0 {
				cfg.SeqLen = seq
			}
			if cmd.Flags().Changed("shard-tokens") || cfg.ShardTokens == 0 {
				cfg.ShardTokens = shardTokens
			}
			if cmd.Flags().Changed("train-roles") {
				cfg.TrainRoles = trainRoles
			}
			if threads < 0 {
				return usagef("--threads %d: want 0 (all cores) or more", threads)
			}
			cfg.Threads = threads
			if err := cfg.Validate(); err != nil {
				return usageError{err}
			}
			start := time.Now()
			var tk *tokenizer.Tokenizer
			var err error
			if tokPath != "" {
				if tk, err = loadTokenizer(tokPath); err != nil {
					return err
				}
			} else {
				e.logf("training a %d-token tokenizer on the inputs…", vocab)
				if tk, err = trainOnInputs(cmd, cfg, vocab); err != nil {
					return err
				}
			}
			if parts > 0 {
				return writePlan(e, cmd, cfg, tk, parts, swarm, out, asJSON)
			}
			last, prepStart := -1, time.Now()
			p, err := sharding.Prepare(ctxOf(cmd), cfg, tk, out, func(p sharding.Progress) {
				pct := 100
				if p.Total > 0 {
					pct = int(100 * p.Bytes / p.Total)
				}
				if pct/10 != last/10 {
					last = pct
					el := time.Since(prepStart)
					e.logf("[%-20s] %3d%%  %s  %d documents  %d shards, %.1f MiB/s%s", strings.Repeat("#", pct/5), pct, filepath.Base(p.Input), p.Documents, p.Shards,
						float64(p.Bytes)/(1<<20)/max(el.Seconds(), 1e-3), eta(p.Bytes, p.Total, el))
				}
			})
			if err != nil {
				return err
			}
			threads := cfg.Threads
			if threads == 0 {
				threads = runtime.GOMAXPROCS(0)
			}
			res := newPrepareOut(p, cfg.SkippedFiles, threads, time.Since(prepStart))
			if asJSON {
				return e.printJSON(res)
			}
			printPrepareSummary(e, res, time.Since(start))
			fmt.Fprintln(e.stdout, res.DatasetCID)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&out, "out", "dataset", "output directory")
	f.StringVar(&configPath, "config", "", "recipe file (JSON)")
	f.StringVar(&tokPath, "tokenizer", "", "tokenizer.json to use (default: train one on the inputs)")
	f.IntVar(&vocab, "vocab", 16000, "vocabulary when training a tokenizer")
	f.IntVar(&seq, "seq", 256, "model context T (rows hold T+1 tokens)")
	f.IntVar(&shardTokens, "shard-tokens", 1<<20, "tokens per shard")
	f.StringVar(&in.Source, "source", "natural", "provenance of argument inputs: natural or synthetic")
	f.StringVar(&in.Generator, "generator", "", "generator of synthetic argument inputs")
	f.StringVar(&in.Licence, "licence", "unknown", "licence of argument inputs (SPDX id)")
	f.StringVar(&in.Stage, "stage", "pretrain", "stage of argument inputs: "+strings.Join(sharding.Stages, ", "))
	f.StringVar(&in.Field, "field", "", "JSONL text field of argument inputs (default text)")
	f.BoolVar(&builtin, "builtin", false, "add the built-in bilingual corpus")
	f.IntVar(&synthetic, "synthetic", 0, "add N documents from the built-in synthetic generator")
	f.Uint64Var(&synthSeed, "synthetic-seed", 1, "seed of the synthetic and post-training generators")
	f.IntVar(&instr, "instructions", 0, "add N built-in bilingual instructions (conversations for SFT)")
	f.IntVar(&multiTurn, "multi-turn", 0, "add N built-in multi-turn conversations (follow-ups in the other language, word problems; SFT)")
	f.IntVar(&pairs, "pairs", 0, "add N built-in bilingual preference pairs")
	f.BoolVar(&asJSON, "json", false, "print the summary as JSON")
	f.StringSliceVar(&trainRoles, "train-roles", nil, "roles of a conversation whose turns are trained (default assistant)")
	f.IntVar(&threads, "threads", 0, "goroutines analysing documents (0: GOMAXPROCS); the dataset does not depend on it")
	f.IntVar(&parts, "parts", 0, "write a plan of N parts to OUT instead of preparing (see fomnet data part, merge)")
	f.BoolVar(&swarm, "swarm", false, "with --parts: record the inputs' CIDs in the plan, so that the swarm can run it (fomnet join PLAN-CID)")
	return cmd
}

type planOut struct {
	Plan      string  `json:"plan"`
	Hash      string  `json:"hash"`
	Parts     []int64 `json:"part_bytes"`
	Tokenizer string  `json:"tokenizer_cid"`
	// Job (--swarm): the plan directory's CID, what nodes join.
	Job    string   `json:"job,omitempty"`
	Inputs []string `json:"input_cids,omitempty"`
}

// newPrepareOut summarises a prepared dataset and how long it took.
func newPrepareOut(p *sharding.Prepared, skipped []sharding.SkippedFile, threads int, took time.Duration) prepareOut {
	res := prepareOut{DatasetCID: p.CID.String(), Dir: p.Dir, Shards: len(p.Manifest.Shards), Totals: p.Manifest.Totals,
		Report: p.Manifest.Report, Tokenizer: p.Manifest.Tokenizer.CID, Skipped: skipped,
		Threads: threads, Seconds: took.Seconds(), PeakRSS: peakRSS()}
	for _, s := range p.Manifest.Shards {
		res.Tokens += s.Tokens
	}
	for _, in := range p.Manifest.Recipe.Inputs {
		res.InputBytes += in.Bytes
	}
	res.MiBPerS = float64(res.InputBytes) / (1 << 20) / max(took.Seconds(), 1e-3)
	return res
}

// writePlan cuts a preparation into parts: OUT/plan.json and the tokenizer
// beside it.
func writePlan(e *env, cmd *cobra.Command, cfg sharding.PrepareConfig, tk *tokenizer.Tokenizer, parts int, swarm bool, out string, asJSON bool) error {
	pl, err := sharding.MakePlan(ctxOf(cmd), cfg, tk, parts)
	if err != nil {
		return err
	}
	if swarm {
		if err := pl.AddCIDs(ctxOf(cmd)); err != nil {
			return err
		}
	}
	b, err := pl.Encode()
	if err != nil {
		return err
	}
	tokJSON, err := tk.MarshalJSON()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	for name, data := range map[string][]byte{"plan.json": b, "tokenizer.json": tokJSON} {
		if err := fsutil.WriteFile(filepath.Join(out, name), data); err != nil {
			return err
		}
	}
	hash, err := pl.Hash()
	if err != nil {
		return err
	}
	res := planOut{Plan: filepath.Join(out, "plan.json"), Hash: fmt.Sprintf("%x", hash), Tokenizer: pl.Tokenizer}
	for _, ranges := range pl.Parts {
		var n int64
		for _, r := range ranges {
			if r.Input < len(pl.Config.Inputs) {
				n += r.End - r.Start
			}
		}
		res.Parts = append(res.Parts, n)
	}
	if swarm {
		c, err := contentstore.PathCID(ctxOf(cmd), out)
		if err != nil {
			return err
		}
		res.Job, res.Inputs = c.String(), pl.InputCIDs
	}
	if asJSON {
		return e.printJSON(res)
	}
	for i, n := range res.Parts {
		e.logf("part %d: %.1f MiB of input", i, float64(n)/(1<<20))
	}
	if swarm {
		e.logf("fomnet add %s and each input on a node that serves them; nodes take part with `fomnet join %s`", out, res.Job)
		fmt.Fprintln(e.stdout, res.Job)
		return nil
	}
	e.logf("run `fomnet data part %s --part I --out PIECE` for each part, then `fomnet data merge %s PIECE…`", out, out)
	fmt.Fprintln(e.stdout, res.Plan)
	return nil
}

// loadPlan reads PLANDIR/plan.json and the tokenizer beside it.
func loadPlan(dir string) (*sharding.Plan, *tokenizer.Tokenizer, error) {
	pl, err := sharding.ReadPlan(filepath.Join(dir, "plan.json"))
	if err != nil {
		return nil, nil, err
	}
	tk, err := loadTokenizer(filepath.Join(dir, "tokenizer.json"))
	if err != nil {
		return nil, nil, err
	}
	return pl, tk, nil
}

func newDataPartCmd(e *env) *cobra.Command {
	var (
		part, threads int
		out           string
	)
	cmd := &cobra.Command{
		Use:   "part PLANDIR --part I --out PIECE",
		Short: "Analyse one part of a split preparation into a piece",
		Long: `Analyse part I of the plan in PLANDIR (written by fomnet data prepare --parts):
read its stretch of the inputs, normalise, filter, compute dedup keys and
MinHash signatures, tokenise, and write the piece to PIECE. The plan names
the inputs by path: run it where they are. fomnet data merge takes the
pieces of every part.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("part takes the plan directory, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pl, tk, err := loadPlan(args[0])
			if err != nil {
				return err
			}
			if out == "" {
				return usagef("--out PIECE is required")
			}
			start := time.Now()
			err = fsutil.WriteFileFunc(out, func(w io.Writer) error {
				return sharding.PreparePart(ctxOf(cmd), pl, tk, part, threads, w)
			})
			if err != nil {
				return err
			}
			var size int64
			if fi, err := os.Stat(out); err == nil {
				size = fi.Size()
			}
			e.logf("part %d analysed in %s: %.1f MiB piece, peak resident memory %.0f MiB", part, time.Since(start).Round(time.Millisecond),
				float64(size)/(1<<20), float64(peakRSS())/(1<<20))
			fmt.Fprintln(e.stdout, out)
			return nil
		},
	}
	cmd.Flags().IntVar(&part, "part", 0, "which part (from 0)")
	cmd.Flags().IntVar(&threads, "threads", 0, "goroutines analysing documents (0: GOMAXPROCS)")
	cmd.Flags().StringVar(&out, "out", "", "piece file to write")
	return cmd
}

func newDataMergeCmd(e *env) *cobra.Command {
	var (
		out           string
		asJSON, trust bool
		share         float64
		threads       int
	)
	cmd := &cobra.Command{
		Use:   "merge PLANDIR PIECE...",
		Short: "Pack the pieces of a split preparation into the dataset",
		Long: `Merge the pieces of every part of the plan in PLANDIR, in part order:
decide duplicates across all of them, pack the documents kept into shards,
and write the dataset to OUT as fomnet data prepare does — the same shards
and the same dataset CID as one prepare of the same inputs. A piece of
another plan, of another part, or damaged is refused, naming where.

Pieces made elsewhere are not trusted: before merging, each is checked
against the inputs (which the plan's paths must reach here) by re-executing
its part's cheap stages on every document — normalisation, filters, dedup
key, which must give exactly the piece's records and counts — and the full
analysis (MinHash signature, tokens) on a --check share of them, drawn from
this machine's own randomness. A piece that differs is refused, naming the
document. --trust skips the checks (pieces you made yourself).`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) < 2 {
				return usagef("merge takes the plan directory and its pieces, got %d arguments", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			pl, tk, err := loadPlan(args[0])
			if err != nil {
				return err
			}
			start := time.Now()
			if !trust {
				if err := checkPieces(e, cmd, pl, tk, args[1:], share, threads); err != nil {
					return err
				}
			}
			p, err := sharding.Merge(ctxOf(cmd), pl, tk, args[1:], out, nil)
			if err != nil {
				return err
			}
			res := newPrepareOut(p, nil, 1, time.Since(start))
			if asJSON {
				return e.printJSON(res)
			}
			printPrepareSummary(e, res, time.Since(start))
			fmt.Fprintln(e.stdout, res.DatasetCID)
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "dataset", "output directory")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the summary as JSON")
	cmd.Flags().Float64Var(&share, "check", 0.01, "share of each piece's documents analysed again in full before merging (every document gets the cheap checks)")
	cmd.Flags().BoolVar(&trust, "trust", false, "merge the pieces without checking them")
	cmd.Flags().IntVar(&threads, "threads", 0, "threads for the checks (0: GOMAXPROCS)")
	cmd.PreRunE = func(*cobra.Command, []string) error {
		if share < 0 || share > 1 {
			return usagef("--check %g: want a share in [0, 1]", share)
		}
		return nil
	}
	return cmd
}

// checkPieces checks each piece against its part (sharding.CheckPiece),
// with a share of documents analysed in full, drawn from this machine's
// randomness.
func checkPieces(e *env, cmd *cobra.Command, pl *sharding.Plan, tk *tokenizer.Tokenizer, pieces []string, share float64, threads int) error {
	if len(pieces) != len(pl.Parts) {
		return fmt.Errorf("merge: %d pieces for a plan of %d parts", len(pieces), len(pl.Parts))
	}
	var seed [8]byte
	rand.Read(seed[:])
	full := sharding.SampleDocs(share, binary.LittleEndian.Uint64(seed[:]))
	for i, path := range pieces {
		t0 := time.Now()
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		_, err = sharding.CheckPiece(ctxOf(cmd), pl, tk, i, threads, bufio.NewReader(f), full)
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		e.logf("piece %d (%s) checked against part %d's inputs in %.1fs", i, path, i, time.Since(t0).Seconds())
	}
	return nil
}

func trainOnInputs(cmd *cobra.Command, cfg sharding.PrepareConfig, vocab int) (*tokenizer.Tokenizer, error) {
	texts, readErr := sharding.Texts(cfg.Inputs, cfg.Builtin, cfg.Synthetic, cfg.SyntheticSeed)
	tk, err := tokenizer.Train(ctxOf(cmd), texts, tokenizer.TrainConfig{Vocab: vocab})
	if _, err := readErr(); err != nil {
		return nil, err
	}
	return tk, err
}

func printPrepareSummary(e *env, r prepareOut, took time.Duration) {
	const show = 10
	for i, s := range r.Skipped {
		if i == show {
			e.logf("… and %d more files skipped", len(r.Skipped)-show)
			break
		}
		e.logf("skipped %s", s)
	}
	w := tabwriter.NewWriter(e.stderr, 0, 4, 2, ' ', tabwriter.AlignRight)
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, "files skipped in input directories\t%d\t\n", len(r.Skipped))
	}
	fmt.Fprintf(w, "documents read\t%d\t\n", r.Report.DocumentsIn)
	reasons := make([]string, 0, len(r.Report.Dropped))
	for k := range r.Report.Dropped {
		reasons = append(reasons, k)
	}
	sort.Strings(reasons)
	for _, k := range reasons {
		fmt.Fprintf(w, "  dropped: %s\t%d\t\n", k, r.Report.Dropped[k])
	}
	fmt.Fprintf(w, "  malformed records skipped\t%d\t\n", r.Report.Malformed)
	fmt.Fprintf(w, "documents kept\t%d\t\n", r.Report.DocumentsOut)
	w.Flush()
	w = tabwriter.NewWriter(e.stderr, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(w, "language\tsource\tdocuments\ttokens\tshare\t\n")
	for _, t := range r.Totals {
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%.1f%%\t\n", t.Language, t.Source, t.Documents, t.Tokens, 100*float64(t.Tokens)/float64(max(r.Tokens, 1)))
	}
	w.Flush()
	e.logf("%d shards, %d tokens in %s; tokenizer %s", r.Shards, r.Tokens, took.Round(time.Millisecond), r.Tokenizer)
	e.logf("prepared %.1f MiB in %.1f s on %d threads: %.1f MiB/s, peak resident memory %.0f MiB",
		float64(r.InputBytes)/(1<<20), r.Seconds, r.Threads, r.MiBPerS, float64(r.PeakRSS)/(1<<20))
}

func newDataInspectCmd(e *env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect MANIFEST|SHARD",
		Short: "Validate and describe a manifest (or dataset directory) or a shard",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("inspect takes one file, got %d", len(args))
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			path := args[0]
			if fi, err := os.Stat(path); err == nil && fi.IsDir() {
				path = filepath.Join(path, "manifest.json")
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if bytes.HasPrefix(b, []byte("FOMSHARD")) {
				s, err := sharding.DecodeShard(b)
				if err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
				info := map[string]any{"rows": s.Rows, "seq_len": s.SeqLen, "vocab": s.Vocab, "dtype": s.DType, "tokenizer": s.Tokenizer.String(), "tokens": len(s.Tokens)}
				if asJSON {
					return e.printJSON(info)
				}
				fmt.Fprintf(e.stdout, "shard: %d rows of %d tokens (seq len %d), vocab %d, tokenizer %s, checksum ok\n", s.Rows, s.RowLen(), s.SeqLen, s.Vocab, s.Tokenizer)
				return nil
			}
			m, err := sharding.DecodeManifest(b)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if asJSON {
				return e.printJSON(m)
			}
			_, c, err := sharding.EncodeManifest(m)
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "dataset %s\ntokenizer %s  vocab %d  seq len %d  %s\n", c, m.Tokenizer.CID, m.Vocab, m.SeqLen, m.DType)
			w := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "group\tlicence\tshards\ttokens\tdocs\n")
			type agg struct{ shards, tokens, docs int64 }
			sums := map[[2]string]*agg{}
			var keys [][2]string
			for _, s := range m.Shards {
				k := [2]string{s.Group, s.Licence}
				if sums[k] == nil {
					sums[k] = &agg{}
					keys = append(keys, k)
				}
				sums[k].shards++
				sums[k].tokens += s.Tokens
				sums[k].docs += int64(s.Docs)
			}
			for _, k := range keys {
				a := sums[k]
				fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\n", k[0], k[1], a.shards, a.tokens, a.docs)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// joinPrep is fomnet join of a preparation plan: take part until this
// node holds every piece, merge them, print the dataset's CID, and keep
// serving the pieces for linger (default 30 s) so that peers still at work
// can check them.
func joinPrep(ctx context.Context, e *env, n *node.Node, id cid.Cid, o node.PrepJobOptions, linger time.Duration) error {
	j, err := n.OpenPrepJob(ctx, id, o)
	if err != nil {
		return err
	}
	defer j.Close()
	e.logf("prep job %s: %d parts, %d inputs", id, len(j.Plan.Parts), len(j.Plan.Inputs))
	r, err := j.Run(ctx)
	if err != nil {
		return err
	}
	e.logf("prep job %s: done in %.1fs: %d of %d pieces made here, %d documents of peers' pieces analysed again, %d peers convicted, %d passed over; dataset in %s",
		id, r.Seconds, r.Made, len(r.Units), r.Checked, len(r.Convicted), len(r.Passed), r.Dir)
	fmt.Fprintln(e.stdout, r.Dataset)
	serveJob(ctx, e, "prep job "+id.String(), "pieces", linger)
	return nil
}

// serveJob keeps a finished job's node serving its units for linger
// (default 30 s), so that peers still at work can check them.
func serveJob(ctx context.Context, e *env, job, units string, linger time.Duration) {
	if linger < 0 {
		linger = 30 * time.Second
	}
	if linger > 0 {
		e.logf("%s: serving its %s for %v so that peers still at work can check them (--linger)", job, units, linger)
		select {
		case <-time.After(linger):
		case <-ctx.Done():
		}
	}
}
