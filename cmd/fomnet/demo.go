package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/kernels"
	"github.com/fomnet/fomnet/model"
)

// The demo will become a swarm of libp2p nodes training with DiLoCo. Until
// the swarm exists it runs the part that does: one node training a small
// bilingual model on the built-in corpus, saving a checkpoint and sampling.

type demoOut struct {
	Checkpoint string  `json:"checkpoint"`
	CID        string  `json:"checkpoint_cid"`
	SHA256     string  `json:"model_sha256"`
	Loss       float32 `json:"loss"`
	Steps      int     `json:"steps"`
	SampleKO   string  `json:"sample_ko"`
	SampleEN   string  `json:"sample_en"`
}

func newDemoCmd(e *env) *cobra.Command {
	var (
		steps   int
		out     string
		seed    uint64
		threads int
		asJSON  bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Train a small bilingual model on the built-in corpus and sample from it",
		Long: `Train a small Korean–English model from the built-in corpus and print its
checkpoint and a sample in each language.

Today this runs on one node (this process); the swarm version — several libp2p
nodes on 127.0.0.1 training together with DiLoCo and agreeing on a checkpoint
CID — arrives with the swarm and round issues. The model is byte-level until
the tokenizer lands.`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if steps <= 0 {
				return usagef("--steps %d must be positive", steps)
			}
			c, _ := model.Preset("tiny")
			corpus := &model.Corpus{}
			if err := addBuiltin(corpus, c, 0, 0); err != nil {
				return err
			}
			if out == "" {
				tmp, err := os.MkdirTemp("", "fomnet-demo-")
				if err != nil {
					return err
				}
				out = tmp
			}
			dir := filepath.Join(out, fmt.Sprintf("step-%06d", steps))
			be, err := newBackend(e, threads, "auto")
			if err != nil {
				return err
			}
			defer be.Close()
			m, err := model.New(be, c)
			if err != nil {
				return err
			}
			m.Init(seed)
			tc := model.DefaultTrainConfig()
			tc.Batch, tc.Seq, tc.Steps, tc.Seed = 8, 128, steps, seed
			tc.Schedule = kernels.Schedule{Kind: kernels.ScheduleCosine, MaxLR: 3e-3, MinLR: 3e-4, Warmup: 20}
			e.logf("fomnet demo (single node: the swarm version is not built yet)")
			e.logf("training the tiny preset (%d parameters) on the built-in corpus: %d documents, %d byte tokens, %d steps on %s×%d",
				model.NumParams(c), corpus.Docs, len(corpus.Tokens), steps, be.Name(), be.Threads())
			every := max(1, steps/10)
			last, err := model.Train(ctxOf(cmd), m, corpus, nil, tc, func(p model.Progress) {
				if p.Step%every == 0 || p.Step == p.Steps {
					e.logf("  step %4d/%d  loss %.3f  %.0f tok/s  %s", p.Step, p.Steps, p.Loss, p.TokensPerS, p.Elapsed.Round(time.Second/10))
				}
			})
			if err != nil {
				return err
			}
			if err := m.Save(dir, map[string]string{"preset": "tiny", "source": "fomnet demo"}); err != nil {
				return err
			}
			sum, err := fileSHA256(filepath.Join(dir, "model.safetensors"))
			if err != nil {
				return err
			}
			ckptCID, err := contentstore.PathCID(ctxOf(cmd), dir)
			if err != nil {
				return err
			}
			sample := func(prompt string) (string, error) {
				toks := make([]int32, 0, len(prompt))
				for _, b := range []byte(prompt) {
					toks = append(toks, int32(b))
				}
				gen, err := model.Generate(m, toks, model.SampleConfig{MaxTokens: 120, Temperature: 0.7, TopK: 20, Seed: seed, Window: 128}, nil)
				return prompt + model.DecodeBytes(gen), err
			}
			ko, err := sample("오늘 아침에는")
			if err != nil {
				return err
			}
			en, err := sample("The train")
			if err != nil {
				return err
			}
			res := demoOut{Checkpoint: dir, CID: ckptCID.String(), SHA256: sum, Loss: last.Loss, Steps: last.Step, SampleKO: firstLine(ko), SampleEN: firstLine(en)}
			if asJSON {
				return e.printJSON(res)
			}
			fmt.Fprintf(e.stdout, "checkpoint  %s\n", res.Checkpoint)
			fmt.Fprintf(e.stdout, "cid         %s (the checkpoint directory as UnixFS: fomnet add gives the same)\n", res.CID)
			fmt.Fprintf(e.stdout, "sha256      %s (model.safetensors)\n", res.SHA256)
			fmt.Fprintf(e.stdout, "loss        %.3f after %d steps\n", res.Loss, res.Steps)
			fmt.Fprintf(e.stdout, "ko          %s\n", res.SampleKO)
			fmt.Fprintf(e.stdout, "en          %s\n", res.SampleEN)
			return nil
		},
	}
	cmd.Flags().IntVar(&steps, "steps", 300, "training steps")
	cmd.Flags().StringVar(&out, "out", "", "directory for the checkpoint (default: a new temporary directory)")
	cmd.Flags().Uint64Var(&seed, "seed", 1, "seed for initialisation, batches and sampling")
	cmd.Flags().IntVar(&threads, "threads", 0, "compute threads (0: GOMAXPROCS)")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
