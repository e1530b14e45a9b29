package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/fomnet/fomnet/contentstore"
	"reflect"
	"strings"
	"testing"

	"github.com/fomnet/fomnet/gradsync"
	"github.com/fomnet/fomnet/model"
	"github.com/fomnet/fomnet/sharding"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	testCID1 = "bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy"
	testCID2 = "bafybeibrd4cd76gxpjefvfyqq2owhw2smeolm3xi33hzrmfjgrt7hva2xi"
)

func testRun(t testing.TB) *RunSpec {
	t.Helper()
	sync := gradsync.DefaultConfig()
	sync.H = 20
	r, err := NewRunSpec("test", "tiny", cid.MustParse(testCID1), 5, sync, 7)
	if err != nil {
		t.Fatal(err)
	}
	r.Inner.Seq = 64
	return r
}

func TestRunSpecRoundTrip(t *testing.T) {
	r := testRun(t)
	b, id, err := EncodeRunSpec(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRunSpec(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, id2, _ := EncodeRunSpec(got)
	if !bytes.Equal(b, b2) || !id.Equals(id2) {
		t.Fatal("run spec changed on a round trip")
	}
	if got.Sync != r.Sync {
		t.Fatalf("sync %+v vs %+v", got.Sync, r.Sync)
	}
	c, _ := got.ModelConfig()
	if c.Dim == 0 || got.TrainConfig().Steps != 100 {
		t.Fatalf("model %+v, steps %d", c, got.TrainConfig().Steps)
	}
	// Warmup rounds shorten the run: 2 rounds of 5 steps, then 3 of 20.
	w := *got
	w.Sync.WarmupRounds, w.Sync.WarmupH = 2, 5
	if steps := w.TrainConfig().Steps; steps != 70 {
		t.Fatalf("with warmup rounds, steps %d, want 70", steps)
	}
	// Any change is a different run.
	r.Seed++
	_, id3, _ := EncodeRunSpec(r)
	if id3.Equals(id) {
		t.Fatal("different seed, same run ID")
	}
	// Non-canonical bytes are refused (their CID would not be the run ID).
	spaced := bytes.Replace(b, []byte(`"format":`), []byte(`"format": `), 1)
	if _, err := DecodeRunSpec(spaced); err == nil || !strings.Contains(err.Error(), "canonical") {
		t.Fatalf("non-canonical spec: %v", err)
	}
}

// The inner AdamW betas are optional: a spec without them encodes without
// the keys (so specs written before they existed keep their run IDs) and
// trains with model.DefaultOptim()'s; set, they reach the train config and
// make another run.
func TestRunSpecBetas(t *testing.T) {
	r := testRun(t)
	b, id, err := EncodeRunSpec(r)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, []byte("beta")) {
		t.Fatalf("spec without betas encodes them: %s", b)
	}
	if op := r.TrainConfig().Optim; op != model.DefaultOptim() {
		t.Fatalf("optim %+v, want the default", op)
	}
	r.Inner.Beta1, r.Inner.Beta2 = 0.95, 0.99
	b2, id2, err := EncodeRunSpec(r)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeRunSpec(b2)
	if err != nil {
		t.Fatal(err)
	}
	if op := got.TrainConfig().Optim; op.Beta1 != 0.95 || op.Beta2 != 0.99 || id2.Equals(id) {
		t.Fatalf("optim %+v, run ID %s (without betas %s)", op, id2, id)
	}
}

func TestRunSpecErrorsNameTheField(t *testing.T) {
	for field, mutate := range map[string]func(*RunSpec){
		"format":  func(r *RunSpec) { r.Format = "x" },
		"rounds":  func(r *RunSpec) { r.Rounds = 0 },
		"dataset": func(r *RunSpec) { r.Dataset = sharding.Link{CID: "nope"} },
		"sync":    func(r *RunSpec) { r.Sync.H = 0 },
		"inner":   func(r *RunSpec) { r.Inner.Batch = 0 },
		"model":   func(r *RunSpec) { r.Model = []byte(`{"hidden_size":-1}`) },
		"stage":   func(r *RunSpec) { r.Stage = "" },
		"beta1":   func(r *RunSpec) { r.Inner.Beta1 = 1 },
		"beta2":   func(r *RunSpec) { r.Inner.Beta2 = -0.5 },
		"clip":    func(r *RunSpec) { r.Inner.ClipNorm = -1 },
		"from":    func(r *RunSpec) { r.From = &sharding.Link{CID: "nope"} },
		"objective": func(r *RunSpec) {
			r.Inner.Objective, r.Inner.Beta = "ppo", 0.1
		},
		"needs from": func(r *RunSpec) { r.Inner.Objective, r.Inner.Beta = "dpo", 0.1 },
		"even":       func(r *RunSpec) { r.Inner.Objective, r.Inner.Beta, r.Inner.Batch = "simpo", 1, 3 },
		"gamma":      func(r *RunSpec) { r.Inner.Gamma = 0.5 },
	} {
		r := testRun(t)
		mutate(r)
		if _, _, err := EncodeRunSpec(r); err == nil || !strings.Contains(err.Error(), field) {
			t.Errorf("%s: %v", field, err)
		}
	}
}

func FuzzDecodeRunSpec(f *testing.F) {
	b, _, _ := EncodeRunSpec(testRun(f))
	f.Add(b)
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRunSpec(b)
		if err != nil {
			return
		}
		again, _, err := EncodeRunSpec(r)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted spec does not re-encode to itself: %v", err)
		}
	})
}

func TestRoundMsg(t *testing.T) {
	ok := []RoundMsg{
		{Type: MsgContribution, Run: testCID1, Round: 3, Base: testCID2, CID: testCID1, Tokens: 100},
		{Type: MsgContribution, Run: testCID1, Round: 3, Base: testCID2, CID: testCID1, Tokens: 100, Down: 6_250_000},
		{Type: MsgAggregate, Run: testCID1, Round: 3, Base: testCID2, CID: testCID1, Partition: 5, Inputs: []string{testCID1, testCID2}},
		{Type: MsgCheckpoint, Run: testCID1, Round: 3, Base: testCID2, CID: testCID2},
	}
	for _, m := range ok {
		b, err := EncodeRoundMsg(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRoundMsg(b)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(m) {
			t.Fatalf("%+v: %+v %v", m, got, err)
		}
	}
	bad := []RoundMsg{
		{Type: "vote", Run: testCID1, Base: testCID2, CID: testCID1},
		{Type: MsgContribution, Run: "x", Base: testCID2, CID: testCID1, Tokens: 1},
		{Type: MsgContribution, Run: testCID1, Base: testCID2, CID: testCID1},
		{Type: MsgContribution, Run: testCID1, Round: -1, Base: testCID2, CID: testCID1, Tokens: 1},
		{Type: MsgAggregate, Run: testCID1, Base: testCID2, CID: testCID1, Inputs: []string{testCID2, testCID1}},
		{Type: MsgAggregate, Run: testCID1, Base: testCID2, CID: testCID1, Inputs: []string{testCID1, testCID1}},
		{Type: MsgAggregate, Run: testCID1, Base: testCID2, CID: testCID1},
		{Type: MsgCheckpoint, Run: testCID1, Base: testCID2, CID: testCID1, Tokens: 5},
		{Type: MsgContribution, Run: testCID1, Base: testCID2, CID: testCID1, Tokens: 1, Down: -1},
		{Type: MsgContribution, Run: testCID1, Base: testCID2, CID: testCID1, Tokens: 1, Down: maxDown + 1},
		{Type: MsgCheckpoint, Run: testCID1, Base: testCID2, CID: testCID1, Down: 5},
	}
	for _, m := range bad {
		if _, err := EncodeRoundMsg(m); err == nil {
			t.Errorf("%+v accepted", m)
		}
	}
	if _, err := DecodeRoundMsg([]byte(`{"type":"checkpoint","run":"` + testCID1 + `","base":"` + testCID1 + `","cid":"` + testCID1 + `","x":1}`)); err == nil {
		t.Error("unknown field accepted")
	}
}

func FuzzDecodeRoundMsg(f *testing.F) {
	b, _ := EncodeRoundMsg(RoundMsg{Type: MsgAggregate, Run: testCID1, Round: 3, Base: testCID2, CID: testCID1, Partition: 5, Inputs: []string{testCID1, testCID2}})
	f.Add(b)
	f.Add([]byte(`{"type":"contribution"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeRoundMsg(b)
		if err != nil {
			return
		}
		if _, err := EncodeRoundMsg(m); err != nil {
			t.Fatalf("accepted message does not re-encode: %v", err)
		}
	})
}

func testPeers(t testing.TB, n int) []peer.ID {
	out := make([]peer.ID, n)
	for i := range out {
		k, _, _ := crypto.GenerateEd25519Key(bytes.NewReader(bytes.Repeat([]byte{byte(i + 1)}, 64)))
		out[i], _ = peer.IDFromPrivateKey(k)
	}
	return out
}

func TestContribution(t *testing.T) {
	ps := testPeers(t, 1)
	c := &Contribution{Format: ContributionFormat, Run: sharding.LinkTo(cid.MustParse(testCID1)), Round: 2,
		Base: sharding.LinkTo(cid.MustParse(testCID2)), Peer: ps[0].String(), Tokens: 512, Codec: "int8", Params: 1000,
		Partitions: []sharding.Link{sharding.LinkTo(cid.MustParse(testCID1))},
		Prior:      &sharding.Link{CID: testCID2}, State: sharding.LinkTo(cid.MustParse(testCID1))}
	b, k, err := EncodeContribution(c)
	if err != nil {
		t.Fatal(err)
	}
	if k.Prefix().Codec != cid.DagJSON {
		t.Fatalf("contribution CID %s", k)
	}
	got, err := DecodeContribution(b)
	if err != nil || got.Tokens != 512 || got.Peer != ps[0].String() || *got.Prior != *c.Prior || got.State != c.State {
		t.Fatalf("%+v %v", got, err)
	}
	dj, _ := contentstore.BlockCID(contentstore.CodecDagJSON, []byte("{}"))
	c.State = sharding.LinkTo(dj) // not a file
	if _, _, err := EncodeContribution(c); err == nil || !strings.Contains(err.Error(), "state") {
		t.Fatalf("a state that is not a file: %v", err)
	}
	c.State = sharding.LinkTo(cid.MustParse(testCID1))
	c.Partitions[0] = sharding.LinkTo(cid.MustParse(testCID2)) // dag-pb, not raw
	if _, _, err := EncodeContribution(c); err == nil {
		t.Fatal("non-raw partition accepted")
	}
}

func FuzzDecodeContribution(f *testing.F) {
	ps := testPeers(f, 1)
	b, _, _ := EncodeContribution(&Contribution{Format: ContributionFormat, Run: sharding.LinkTo(cid.MustParse(testCID1)),
		Base: sharding.LinkTo(cid.MustParse(testCID2)), Peer: ps[0].String(), Tokens: 1, Codec: "fp32", Params: 3,
		Partitions: []sharding.Link{sharding.LinkTo(cid.MustParse(testCID1))}, State: sharding.LinkTo(cid.MustParse(testCID2))})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := DecodeContribution(b)
		if err != nil {
			return
		}
		if _, _, err := EncodeContribution(c); err != nil {
			t.Fatalf("accepted contribution does not re-encode: %v", err)
		}
	})
}

func TestReducers(t *testing.T) {
	run := cid.MustParse(testCID1)
	ps := testPeers(t, 8)
	// Same order whatever the input order.
	rev := append([]peer.ID(nil), ps...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	counts := map[peer.ID]int{}
	const parts = 256
	for p := 0; p < parts; p++ {
		a, b := Reducers(run, 4, p, ps), Reducers(run, 4, p, rev)
		if fmt.Sprint(a) != fmt.Sprint(b) || len(a) != len(ps) {
			t.Fatalf("partition %d: order depends on input order", p)
		}
		counts[a[0]]++
	}
	for id, n := range counts {
		if n < parts/len(ps)/2 || n > 2*parts/len(ps) {
			t.Fatalf("peer %s reduces %d of %d partitions", id, n, parts)
		}
	}
	// A peer leaving moves only the partitions it reduced, to the next in
	// each partition's order.
	for p := 0; p < parts; p++ {
		full := Reducers(run, 4, p, ps)
		without := Reducers(run, 4, p, ps[1:])
		want := full[0]
		if want == ps[0] {
			want = full[1]
		}
		if without[0] != want {
			t.Fatalf("partition %d: reducer %s after peer 0 left, want %s", p, without[0], want)
		}
	}
	if fmt.Sprint(Reducers(run, 4, 0, ps)) == fmt.Sprint(Reducers(run, 5, 0, ps)) && fmt.Sprint(Reducers(run, 4, 1, ps)) == fmt.Sprint(Reducers(run, 5, 1, ps)) {
		t.Fatal("reducer order does not change between rounds")
	}
}

func TestEvidenceRecord(t *testing.T) {
	e := Evidence{Format: EvidenceFormat, Message: []byte{1, 2, 3}, Recomputed: testCID1}
	b, k, err := EncodeEvidence(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvidence(b)
	if err != nil || !bytes.Equal(got.Message, e.Message) || got.Recomputed != e.Recomputed {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if again, _ := contentstore.BlockCID(contentstore.CodecRaw, b); !again.Equals(k) {
		t.Fatalf("CID %s, the bytes hash to %s", k, again)
	}
	for name, bad := range map[string]string{
		"format":     `{"format":"fomnet-evidence/0","message":"AQID","recomputed":"` + testCID1 + `"}`,
		"no message": `{"format":"fomnet-evidence/1","message":"","recomputed":"` + testCID1 + `"}`,
		"bad cid":    `{"format":"fomnet-evidence/1","message":"AQID","recomputed":"bafy"}`,
		"unknown":    `{"format":"fomnet-evidence/1","message":"AQID","recomputed":"` + testCID1 + `","x":1}`,
		"too large":  `{"format":"fomnet-evidence/1","message":"` + strings.Repeat("A", maxEvidence) + `"}`,
	} {
		if _, err := DecodeEvidence([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzDecodeFraudProof(f *testing.F) {
	b, _, _ := EncodeFraudProof(FraudProof{Format: FraudFormat, Message: []byte("signed"), Detail: "partition 0 differs"})
	f.Add(b)
	f.Add([]byte(`{"format":"fomnet-fraud/1","message":""}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := DecodeFraudProof(b)
		if err != nil {
			return
		}
		if _, _, err := EncodeFraudProof(*p); err != nil {
			t.Fatalf("accepted proof does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeEvidence(f *testing.F) {
	b, _, _ := EncodeEvidence(Evidence{Format: EvidenceFormat, Message: []byte("signed"), Recomputed: testCID1})
	f.Add(b)
	f.Add([]byte(`{"format":"fomnet-evidence/1"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeEvidence(b)
		if err != nil {
			return
		}
		if _, _, err := EncodeEvidence(*e); err != nil {
			t.Fatalf("accepted evidence does not re-encode: %v", err)
		}
	})
}

func FuzzDecodeRecipe(f *testing.F) {
	b, _, err := EncodeRecipe(&Recipe{Format: RecipeFormat, Name: "r", Stages: []RunSpec{*testRun(f), *testRun(f)}})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"format":"fomnet-recipe/1","name":"","stages":[]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRecipe(b)
		if err != nil {
			return
		}
		again, _, err := EncodeRecipe(r)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("accepted recipe does not re-encode to itself: %v", err)
		}
		for i := range r.Stages {
			if err := r.Stage(i, placeholderFrom).Validate(); err != nil {
				t.Fatalf("stage %d of an accepted recipe: %v", i, err)
			}
		}
	})
}

func FuzzDecodeJobMsg(f *testing.F) {
	for _, m := range []JobMsg{
		{Type: JobClaim, Job: testCID1, Unit: 3, CID: testCID2},
		{Type: JobFraud, Job: testCID1, Unit: 0, Claim: []byte("signed"), Index: -1},
	} {
		b, _ := json.Marshal(m)
		f.Add(b)
	}
	f.Add([]byte(`{"type":"claim","job":"x","unit":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeJobMsg(b)
		if err != nil {
			return
		}
		again, _ := json.Marshal(m)
		if m2, err := DecodeJobMsg(again); err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("accepted message %+v does not re-encode: %v", m, err)
		}
	})
}
