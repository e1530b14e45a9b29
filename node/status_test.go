package node

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/ipfs/go-cid"
)

func TestStatusMessages(t *testing.T) {
	q := StatusRequest{Run: testCID1, Round: 4}
	b, _ := json.Marshal(q)
	if got, err := DecodeStatusRequest(b); err != nil || got != q {
		t.Fatalf("request round trip: %+v, %v", got, err)
	}
	a := StatusResponse{Run: testCID1, Round: 4, Checkpoint: testCID2, Base: testCID1, Newest: 5, NewestCID: testCID2}
	b, _ = json.Marshal(a)
	if got, err := DecodeStatusResponse(b); err != nil || got != a {
		t.Fatalf("response round trip: %+v, %v", got, err)
	}
	for _, c := range []struct{ in, want string }{
		{`{"run":"` + testCID1 + `","round":-1}`, "round -1 is negative"},
		{`{"run":"x","round":1}`, `run: "x" is not a CID`},
		{`{"run":"` + testCID1 + `","round":1,"extra":1}`, "unknown field"},
		{`{"run":"` + testCID1 + `","round":1} {}`, "trailing data"},
		{`{"run":"` + testCID1 + `","round":1` + strings.Repeat(" ", maxStatusMsg) + `}`, "limit is"},
	} {
		if _, err := DecodeStatusRequest([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("request %.60q: error %v, want %q", c.in, err, c.want)
		}
	}
	for _, c := range []struct{ in, want string }{
		{`{"run":"` + testCID1 + `","round":2,"newest":-2}`, "below -1"},
		{`{"run":"` + testCID1 + `","round":2,"newest":3}`, "newest round 3 with checkpoint"},
		{`{"run":"` + testCID1 + `","round":2,"newest":-1,"newest_cid":"` + testCID2 + `"}`, "newest round -1 with checkpoint"},
		{`{"run":"` + testCID1 + `","round":4,"checkpoint":"` + testCID2 + `","base":"` + testCID1 + `","newest":3,"newest_cid":"` + testCID2 + `"}`, "beyond the newest"},
		{`{"run":"` + testCID1 + `","round":2,"checkpoint":"` + testCID2 + `","newest":3,"newest_cid":"` + testCID2 + `"}`, "has no base"},
		{`{"run":"` + testCID1 + `","round":2,"checkpoint":"nope","newest":3,"newest_cid":"` + testCID2 + `"}`, "checkpoint:"},
	} {
		if _, err := DecodeStatusResponse([]byte(c.in)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("response %.80q: error %v, want %q", c.in, err, c.want)
		}
	}
}

// A node answers with what it settled: the round asked for (with its
// base) when it has it, and always its newest round.
func TestSettledAnswers(t *testing.T) {
	var s settledRuns
	run, a, b, c := cid.MustParse(testCID1), cid.MustParse(testCID2), cid.MustParse(testCID1), cid.MustParse(testCID2)
	if got := s.answer(StatusRequest{Run: testCID1, Round: 1}); got.Newest != -1 || got.Checkpoint != "" {
		t.Fatalf("unknown run: %+v", got)
	}
	s.set(run, 0, a, cid.Undef)
	s.set(run, 1, b, a)
	s.set(run, 2, c, b)
	got := s.answer(StatusRequest{Run: testCID1, Round: 1})
	want := StatusResponse{Run: testCID1, Round: 1, Checkpoint: b.String(), Base: a.String(), Newest: 2, NewestCID: c.String()}
	if got != want {
		t.Fatalf("answer %+v, want %+v", got, want)
	}
	if got := s.answer(StatusRequest{Run: testCID1, Round: 7}); got.Checkpoint != "" || got.Newest != 2 {
		t.Fatalf("round not settled: %+v", got)
	}
	// Every answer passes the decoder the asking side uses.
	for r := range 4 {
		b, _ := json.Marshal(s.answer(StatusRequest{Run: testCID1, Round: r}))
		if _, err := DecodeStatusResponse(b); err != nil {
			t.Fatalf("round %d: own answer refused: %v", r, err)
		}
	}
}

func FuzzDecodeStatus(f *testing.F) {
	b, _ := json.Marshal(StatusResponse{Run: testCID1, Round: 4, Checkpoint: testCID2, Base: testCID1, Newest: 5, NewestCID: testCID2})
	f.Add(b)
	b, _ = json.Marshal(StatusRequest{Run: testCID1, Round: 4})
	f.Add(b)
	f.Add([]byte(`{"run":"` + testCID1 + `","round":0,"newest":-1}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if q, err := DecodeStatusRequest(b); err == nil {
			again, _ := json.Marshal(q)
			if q2, err := DecodeStatusRequest(again); err != nil || q2 != q {
				t.Fatalf("accepted request does not round-trip: %+v → %+v, %v", q, q2, err)
			}
		}
		if a, err := DecodeStatusResponse(b); err == nil {
			again, _ := json.Marshal(a)
			if a2, err := DecodeStatusResponse(again); err != nil || !reflect.DeepEqual(a2, a) {
				t.Fatalf("accepted response does not round-trip: %+v → %+v, %v", a, a2, err)
			}
		}
	})
}

func FuzzDecodeRoundRecord(f *testing.F) {
	f.Add([]byte(`{"format":"fomnet-round/3","run":{"/":"` + testCID1 + `"},"round":2,"base":{"/":"` + testCID2 + `"},"contributions":[{"/":"` + testCID1 + `"}],"aggregates":[{"cid":{"/":"` + testCID2 + `"},"inputs":[0],"included":[0]}],"shards":[],"participants":[],"rejected":{"` + testCID1 + `":{"1":"copied_delta"}}}`))
	f.Add([]byte(`{"format":"fomnet-round/3","run":{"/":"` + testCID1 + `"},"round":1,"contributions":[],"aggregates":[{"cid":{"/":"` + testCID2 + `"},"inputs":[1,0],"included":[]}]}`))
	f.Add([]byte(`{"format":"fomnet-round/3","run":{"/":"` + testCID1 + `"},"round":3,"contributions":[],"aggregates":[],"excluded":[{"peer":"` + testPeers(f, 1)[0].String() + `","proof":{"/":"` + testCID1 + `"}}]}`))
	f.Add([]byte(`{"run":{"/":"x"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := decodeRoundRecord(b)
		if err != nil {
			return
		}
		if _, err := rec.Run.Cid(); err != nil || rec.Round < 0 || rec.Format != RoundFormat {
			t.Fatalf("accepted %+v", rec)
		}
		for i, e := range rec.Excluded {
			if _, err := e.Proof.Cid(); err != nil || (i > 0 && e.Peer <= rec.Excluded[i-1].Peer) {
				t.Fatalf("accepted exclusions %+v", rec.Excluded)
			}
		}
		for _, a := range rec.Aggregates {
			for i, j := range append(append([]int(nil), a.Inputs...), a.Included...) {
				if j < 0 || j >= len(rec.Contributions) {
					t.Fatalf("accepted index %d (%d) of %d contributions", j, i, len(rec.Contributions))
				}
			}
		}
	})
}
