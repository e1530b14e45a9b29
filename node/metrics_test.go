package node_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	pmodel "github.com/prometheus/common/model"

	"github.com/fomnet/fomnet/node"
	"github.com/fomnet/fomnet/node/nodetest"
)

// Three nodes train a run; each node's /metrics, scraped over HTTP in the
// middle of the run and at its end, counts what the run did: the rounds,
// the inner steps' tokens, the peers' contributions admitted (those in the
// round records, less the node's own), a phase time per round, and
// bitswap's bytes as the store accounts them.
func TestMetrics(t *testing.T) {
	const n, rounds = 3, 2
	c := nodetest.New(t, n, nodetest.Options{})
	c.ConnectAll()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	spec := smallRun(t, c, rounds)
	runID, err := c.Nodes[0].CreateRun(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	var log checkpointLog
	ps := openAll(t, c, runID, n, func(_ int, e node.RoundEvent) { log.record(e) })
	run := runID.String()
	for upto := 1; upto <= rounds; upto++ {
		for i, err := range runAll(ps, func(_ int, p *node.Participant) error { return p.RunRounds(ctx, upto) }) {
			if err != nil {
				t.Fatalf("node %d: %v", i, err)
			}
		}
		log.agreed(t, upto)
		vl, err := ps[0].ValLoss()
		if err != nil || len(vl) == 0 {
			t.Fatalf("validation loss %v: %v", vl, err)
		}
		if got := value(t, scrape(t, c.Nodes[0]), "fomnet_validation_loss", map[string]string{"run": run, "split": "en"}); got != vl["en"] {
			t.Errorf("fomnet_validation_loss{split=en} %v, evaluated %v", got, vl["en"])
		}
		included := 0
		for r := 1; r <= upto; r++ {
			included += log.counts[r][0]
		}
		for i, nd := range c.Nodes {
			m := scrape(t, nd)
			tr := nd.Store.Traffic()
			for _, k := range []struct {
				name   string
				labels map[string]string
				want   float64
			}{
				{"fomnet_rounds_completed_total", map[string]string{"run": run}, float64(upto)},
				{"fomnet_tokens_trained_total", map[string]string{"run": run}, float64(upto * spec.Sync.H * spec.Inner.Batch * spec.Inner.Seq)},
				{"fomnet_contributions_admitted_total", map[string]string{"run": run}, float64(included - upto)},
				{"fomnet_run_peers", map[string]string{"run": run}, float64(log.counts[upto][0])},
				{"fomnet_round_phase_seconds", map[string]string{"phase": node.PhaseTrain}, float64(upto)},
				{"fomnet_round_phase_seconds", map[string]string{"phase": node.PhaseSettle}, float64(upto)},
				{"fomnet_bitswap_bytes_total", map[string]string{"direction": "received"}, float64(tr.BytesReceived)},
				{"fomnet_bitswap_bytes_total", map[string]string{"direction": "sent"}, float64(tr.BytesSent)},
				{"fomnet_peers_connected", nil, float64(n - 1)},
			} {
				if got := value(t, m, k.name, k.labels); got != k.want {
					t.Errorf("after round %d, node %d: %s%v = %v, want %v", upto, i, k.name, k.labels, got, k.want)
				}
			}
			// libp2p counts the streams' bytes, framing included: at least
			// bitswap's blocks, once its meters' sweep (each second) has
			// caught up.
			bitswapIn := func() float64 {
				return value(t, m, "fomnet_p2p_bytes_total", map[string]string{"protocol": "bitswap", "direction": "received"})
			}
			for start := time.Now(); bitswapIn() < float64(tr.BytesReceived) && time.Since(start) < 10*time.Second; {
				time.Sleep(100 * time.Millisecond)
				m = scrape(t, nd)
			}
			if got := bitswapIn(); got < float64(tr.BytesReceived) {
				t.Errorf("node %d: %v bitswap stream bytes received, fewer than the %d block bytes", i, got, tr.BytesReceived)
			}
			if got := value(t, m, "fomnet_p2p_bytes_total", map[string]string{"protocol": "gossip", "direction": "sent"}); got == 0 {
				t.Errorf("node %d: no gossip bytes sent", i)
			}
		}
	}
}

// scrape reads nd's metrics over HTTP in Prometheus' text format.
func scrape(t *testing.T, nd *node.Node) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(nd.Metrics.Handler())
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(pmodel.UTF8Validation)
	m, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// value is the counter, gauge or histogram count of the series of family
// name with labels.
func value(t *testing.T, m map[string]*dto.MetricFamily, name string, labels map[string]string) float64 {
	t.Helper()
	f := m[name]
	if f == nil {
		t.Fatalf("no metric %s", name)
	}
next:
	for _, s := range f.Metric {
		for k, v := range labels {
			found := false
			for _, l := range s.Label {
				found = found || l.GetName() == k && l.GetValue() == v
			}
			if !found {
				continue next
			}
		}
		switch {
		case s.Counter != nil:
			return s.Counter.GetValue()
		case s.Gauge != nil:
			return s.Gauge.GetValue()
		case s.Histogram != nil:
			return float64(s.Histogram.GetSampleCount())
		}
	}
	t.Fatalf("no series %s%s", name, fmt.Sprint(labels))
	return 0
}
