package gen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/fomnet/fomnet/contentstore"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/fomnet/fomnet/tokenizer"
)

// SpecFormat is the current spec format.
const SpecFormat = "gen/v1"

// Spec is a generation job: a dag-json block whose CID is the job's.
type Spec struct {
	Format string `json:"fomnet"`
	// Generator is the checkpoint's CID (a directory as fomnet add gives it).
	Generator string `json:"generator"`
	// Prompts is the CID of the prompt set (JSONL: {"prompt", "lang"}).
	Prompts string `json:"prompts"`
	// PromptCount is how many prompts the set holds.
	PromptCount int `json:"prompt_count"`
	// Chat: each prompt is a user's turn in the chat format and the record's
	// text is the answer; otherwise the text is the prompt continued.
	Chat     bool     `json:"chat,omitempty"`
	Sampling Sampling `json:"sampling"`
	// PerShard is how many prompts a shard covers (the last may cover fewer).
	PerShard int `json:"per_shard"`
	// What the output is, for the datasets made of it.
	Stage   string `json:"stage"`
	Licence string `json:"licence"`
}

// Sampling is how each prompt is continued. Record i draws from the stream
// SeedOf(Seed, i).
type Sampling struct {
	Temperature float64 `json:"temperature"`
	TopK        int     `json:"top_k,omitempty"`
	TopP        float64 `json:"top_p,omitempty"`
	MaxTokens   int     `json:"max_tokens"`
	Seed        uint64  `json:"seed"`
}

// SeedOf is the sampling seed of record i (splitmix64 of seed and i).
func SeedOf(seed uint64, i int) uint64 {
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Check validates a spec (perhaps from a peer).
func (s *Spec) Check() error {
	switch {
	case s.Format != SpecFormat:
		return fmt.Errorf("gen: spec format %q (this fomnet reads %s)", s.Format, SpecFormat)
	case s.Generator == "" || s.Prompts == "":
		return errors.New("gen: a spec names its generator checkpoint and its prompts")
	case s.PromptCount < 1:
		return fmt.Errorf("gen: %d prompts", s.PromptCount)
	case s.PerShard < 1:
		return fmt.Errorf("gen: %d prompts a shard", s.PerShard)
	case s.Sampling.Seed >= 1<<63:
		return fmt.Errorf("gen: seed %d (dag-json integers stop at 2⁶³)", s.Sampling.Seed)
	case s.Sampling.MaxTokens < 1 || s.Sampling.MaxTokens > 1<<16:
		return fmt.Errorf("gen: max_tokens %d (want 1…65536)", s.Sampling.MaxTokens)
	case s.Sampling.Temperature < 0 || s.Sampling.Temperature > 100 || s.Sampling.TopK < 0 || s.Sampling.TopP < 0 || s.Sampling.TopP > 1:
		return fmt.Errorf("gen: sampling %+v", s.Sampling)
	case !slices.Contains(sharding.Stages, s.Stage):
		return fmt.Errorf("gen: stage %q (want one of %v)", s.Stage, sharding.Stages)
	case s.Licence == "":
		return errors.New("gen: a spec names the licence of its output")
	}
	return nil
}

// Shards is the number of shards of the job.
func (s *Spec) Shards() int { return (s.PromptCount + s.PerShard - 1) / s.PerShard }

// Range is the prompts [lo, hi) of shard k.
func (s *Spec) Range(k int) (lo, hi int) {
	return k * s.PerShard, min((k+1)*s.PerShard, s.PromptCount)
}

// Encode is the spec's canonical bytes: a dag-json block, whose CID
// names the job.
func (s *Spec) Encode() ([]byte, error) {
	b, _, err := contentstore.DagJSON(s)
	return b, err
}

// CID is the job's identifier: the CID of the spec's dag-json block.
func (s *Spec) CID(context.Context) (string, error) {
	_, c, err := contentstore.DagJSON(s)
	return c.String(), err
}

// ReadSpec reads and checks a spec file.
func ReadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	s, err := ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ParseSpec reads a spec strictly (unknown fields refused) and checks it.
func ParseSpec(b []byte) (*Spec, error) {
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("gen: spec: %w", err)
	}
	if dec.More() {
		return nil, errors.New("gen: spec: trailing data after the JSON object")
	}
	return &s, s.Check()
}

// Prompt is one line of a prompt set.
type Prompt struct {
	Prompt string `json:"prompt"`
	Lang   string `json:"lang,omitempty"` // ko, en: what the output is meant to be
}

// maxPrompt bounds one prompt line.
const maxPrompt = 1 << 20

// ReadPrompts reads a prompt set: one JSON object a line, {"prompt":
// string, "lang": optional string}, blank lines not allowed. Errors name
// the line.
func ReadPrompts(r io.Reader) ([]Prompt, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), maxPrompt)
	var out []Prompt
	for line := 1; sc.Scan(); line++ {
		var p Prompt
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&p); err != nil {
			return nil, fmt.Errorf("gen: prompts line %d: %w", line, err)
		}
		if dec.More() {
			return nil, fmt.Errorf("gen: prompts line %d: more than one JSON value", line)
		}
		if p.Prompt == "" || !utf8.ValidString(p.Prompt) {
			return nil, fmt.Errorf("gen: prompts line %d: an empty or invalid prompt", line)
		}
		if p.Lang != "" && p.Lang != "ko" && p.Lang != "en" {
			return nil, fmt.Errorf("gen: prompts line %d: lang %q (want ko or en)", line, p.Lang)
		}
		out = append(out, p)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("gen: prompts: %w", err)
	}
	if len(out) == 0 {
		return nil, errors.New("gen: no prompts")
	}
	return out, nil
}

// Record is one line of a shard.
type Record struct {
	I          int    `json:"i"` // the prompt's index in the set
	Lang       string `json:"lang,omitempty"`
	Prompt     string `json:"prompt"`
	Completion string `json:"completion"`
	// Text is the document: the prompt and its continuation, or (chat)
	// the answer.
	Text string `json:"text"`
}

func (r Record) encode() []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.Encode(r) // a struct of strings and an int: never fails
	return b.Bytes()
}

// Generator is a loaded generator: the model, its tokenizer and the job.
type Generator struct {
	M       *model.Model
	Tok     *tokenizer.Tokenizer
	Spec    *Spec
	Prompts []Prompt
	Batch   int // sequences decoded at once (default 64)
}

// Generate makes the records of prompts [lo, hi), in order.
func (g *Generator) Generate(lo, hi int, emit func(done int)) ([]Record, error) {
	if lo < 0 || hi > len(g.Prompts) || lo > hi {
		return nil, fmt.Errorf("gen: prompts %d–%d of %d", lo, hi, len(g.Prompts))
	}
	idx := make([]int, hi-lo)
	for i := range idx {
		idx[i] = lo + i
	}
	return g.records(idx, emit)
}

// records makes the records of the prompts idx, a batch at a time; emit
// sees the number of tokens generated so far.
func (g *Generator) records(idx []int, emit func(done int)) ([]Record, error) {
	sc := model.SampleConfig{MaxTokens: g.Spec.Sampling.MaxTokens, Temperature: g.Spec.Sampling.Temperature,
		TopK: g.Spec.Sampling.TopK, TopP: g.Spec.Sampling.TopP, Mask: g.mask()}
	reqs := make([]model.GenRequest, len(idx))
	for j, i := range idx {
		ids, err := g.promptIDs(g.Prompts[i].Prompt, &sc)
		if err != nil {
			return nil, fmt.Errorf("gen: prompt %d: %w", i, err)
		}
		reqs[j] = model.GenRequest{Prompt: ids, Seed: SeedOf(g.Spec.Sampling.Seed, i)}
	}
	batch := g.Batch
	if batch <= 0 {
		batch = 64
	}
	done := 0
	outs, err := model.GenerateBatch(g.M, reqs, sc, batch, func(_ int, _ int32) {
		if done++; emit != nil {
			emit(done)
		}
	})
	if err != nil {
		return nil, err
	}
	recs := make([]Record, len(outs))
	for j, out := range outs {
		p := g.Prompts[idx[j]]
		b, _ := g.Tok.Decode(out)
		text := strings.ToValidUTF8(string(b), "\uFFFD") // a character cut at max_tokens
		r := Record{I: idx[j], Lang: p.Lang, Prompt: p.Prompt, Completion: text, Text: p.Prompt + text}
		if g.Spec.Chat {
			r.Text = r.Completion
		}
		recs[j] = r
	}
	return recs, nil
}

// mask keeps the output valid UTF-8 and free of special tokens other than
// the ones that end it (EOS, a chat's end of turn): synthetic text must not
// carry control tokens into the datasets made of it.
func (g *Generator) mask() func([]int32, []float32) {
	utf8 := g.Tok.UTF8Mask()
	var special []int32
	for _, name := range g.Tok.Specials() {
		if id, ok := g.Tok.SpecialID(name); ok && name != tokenizer.EOS && name != tokenizer.EndTurn {
			special = append(special, id)
		}
	}
	return func(out []int32, logits []float32) {
		utf8(out, logits)
		for _, id := range special {
			if int(id) < len(logits) {
				logits[id] = float32(math.Inf(-1))
			}
		}
	}
}

func (g *Generator) promptIDs(prompt string, sc *model.SampleConfig) ([]int32, error) {
	var ids []int32
	if g.Spec.Chat {
		if !g.Tok.Chat() {
			return nil, errors.New("the generator's tokenizer has no chat tokens")
		}
		var err error
		if ids, err = g.Tok.EncodeChat([]tokenizer.Message{{Role: tokenizer.RoleUser, Content: prompt}}, true); err != nil {
			return nil, err
		}
		end, _ := g.Tok.SpecialID(tokenizer.EndTurn)
		sc.Stop = []int32{end}
	} else {
		ids = g.Tok.Encode(prompt)
	}
	if len(ids) >= g.M.Config.MaxSeq {
		return nil, fmt.Errorf("%d tokens: longer than the model's context %d", len(ids), g.M.Config.MaxSeq)
	}
	return ids, nil
}

// Shard generates shard k and returns its bytes.
func (g *Generator) Shard(k int, emit func(done int)) ([]byte, error) {
	if k < 0 || k >= g.Spec.Shards() {
		return nil, fmt.Errorf("gen: shard %d of %d", k, g.Spec.Shards())
	}
	lo, hi := g.Spec.Range(k)
	recs, err := g.Generate(lo, hi, emit)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	for _, r := range recs {
		b.Write(r.encode())
	}
	return b.Bytes(), nil
}
