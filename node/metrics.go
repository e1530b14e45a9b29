package node

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/fomnet/fomnet/p2p"
)

// Metrics are a node's Prometheus metrics, in a registry of its own (a
// process may hold several nodes, as the demo and the tests do, each
// scraped apart). Label sets are bounded: run IDs (the runs this node
// opened), round phases, refusal reasons, protocol groups, validation splits.
type Metrics struct {
	reg       *prometheus.Registry
	rounds    *prometheus.CounterVec   // run
	phase     *prometheus.HistogramVec // phase
	innerStep prometheus.Histogram
	tokens    *prometheus.CounterVec // run
	loss      *prometheus.GaugeVec   // run
	valLoss   *prometheus.GaugeVec   // run, split
	admitted  *prometheus.CounterVec // run
	refused   *prometheus.CounterVec // reason
	runPeers  *prometheus.GaugeVec   // run
	encoded   *prometheus.CounterVec // run
	down      *prometheus.GaugeVec   // run
	collector *nodeCollector
}

// Phases of a round, as fomnet_round_phase_seconds labels them.
const (
	PhaseTrain      = "train"      // inner steps, the contribution stored and announced
	PhaseSpotCheck  = "spot_check" // re-executing the contribution this node was picked to check
	PhaseCollect    = "collect"    // waiting for and admitting the others' contributions
	PhaseReduce     = "reduce"     // aggregating the partitions this node is first in line for
	PhaseAggregates = "aggregates" // fetching and verifying the others' aggregates
	PhaseCheckpoint = "checkpoint" // the round's transition and the checkpoint written
	PhaseSettle     = "settle"     // voting and settling on the round's checkpoint
)

func newMetrics(n *Node) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		rounds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fomnet_rounds_completed_total",
			Help: "Outer rounds this node settled, by run."}, []string{"run"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "fomnet_round_phase_seconds",
			Help:    "Time spent in each phase of a round.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2.5, 12)}, []string{"phase"}),
		innerStep: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "fomnet_inner_step_seconds",
			Help: "Time of one inner optimizer step.", Buckets: prometheus.ExponentialBuckets(0.005, 2, 14)}),
		tokens: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fomnet_tokens_trained_total",
			Help: "Tokens this node trained on in inner steps, by run."}, []string{"run"}),
		loss: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fomnet_train_loss",
			Help: "Training loss of this node's last inner step, by run."}, []string{"run"}),
		valLoss: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fomnet_validation_loss",
			Help: "Validation loss of the run's model when last evaluated, per split: a language (en, ko) or a language and source (ko/natural)."}, []string{"run", "split"}),
		admitted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fomnet_contributions_admitted_total",
			Help: "Peers' contributions this node fetched, checked and admitted into a round, by run."}, []string{"run"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fomnet_refused_total",
			Help: "Contributions, aggregates and checkpoints from peers this node refused, by reason."}, []string{"reason"}),
		runPeers: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fomnet_run_peers",
			Help: "Contributions in this node's last settled round, by run."}, []string{"run"}),
		encoded: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fomnet_contribution_bytes_total",
			Help: "Bytes of this node's encoded pseudo-gradients, by run."}, []string{"run"}),
		down: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "fomnet_download_bytes_per_second",
			Help: "This node's download rate as it estimates it from the rounds' transfers (timed while bytes arrive), by run."}, []string{"run"}),
		collector: &nodeCollector{n: n},
	}
	m.reg.MustRegister(m.rounds, m.phase, m.innerStep, m.tokens, m.loss, m.valLoss, m.admitted, m.refused, m.runPeers, m.encoded, m.down,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), m.collector)
	return m
}

// Handler serves the metrics in Prometheus' text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// Registry is where the node's metrics are registered.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// nodeCollector reads what the node's parts count themselves at scrape
// time: libp2p's bytes per protocol, bitswap's blocks, the peers, the
// store's size (walked at most once a minute).
type nodeCollector struct {
	n *Node

	mu     sync.Mutex
	sizeAt time.Time
	blocks int
	bytes  int64
}

var (
	descP2PBytes   = prometheus.NewDesc("fomnet_p2p_bytes_total", "Bytes of libp2p streams by protocol group (gossip, bitswap, dht, status, other) and direction (libp2p updates its meters each second).", []string{"protocol", "direction"}, nil)
	descPeers      = prometheus.NewDesc("fomnet_peers_connected", "Peers this node has a connection with.", nil, nil)
	descBSBlocks   = prometheus.NewDesc("fomnet_bitswap_blocks_total", "Blocks bitswap moved, by direction (received, sent).", []string{"direction"}, nil)
	descBSDup      = prometheus.NewDesc("fomnet_bitswap_duplicate_blocks_total", "Blocks bitswap received that the store already held.", nil, nil)
	descBSBytes    = prometheus.NewDesc("fomnet_bitswap_bytes_total", "Block bytes bitswap moved, by direction (received, sent).", []string{"direction"}, nil)
	descStoreBytes = prometheus.NewDesc("fomnet_store_bytes", "Bytes of the blocks in the node's store.", nil, nil)
	descStoreBlks  = prometheus.NewDesc("fomnet_store_blocks", "Blocks in the node's store.", nil, nil)
)

func (c *nodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descP2PBytes, descPeers, descBSBlocks, descBSDup, descBSBytes, descStoreBytes, descStoreBlks} {
		ch <- d
	}
}

func (c *nodeCollector) Collect(ch chan<- prometheus.Metric) {
	n := c.n
	if h := n.Host; h != nil {
		ch <- prometheus.MustNewConstMetric(descPeers, prometheus.GaugeValue, float64(len(h.Network().Peers())))
		bytes := p2pBytes(h)
		for _, g := range protocolGroups {
			ch <- prometheus.MustNewConstMetric(descP2PBytes, prometheus.CounterValue, bytes[g][0], g, "received")
			ch <- prometheus.MustNewConstMetric(descP2PBytes, prometheus.CounterValue, bytes[g][1], g, "sent")
		}
	}
	if n.Store == nil {
		return
	}
	t := n.Store.Traffic()
	ch <- prometheus.MustNewConstMetric(descBSBlocks, prometheus.CounterValue, float64(t.BlocksReceived), "received")
	ch <- prometheus.MustNewConstMetric(descBSBlocks, prometheus.CounterValue, float64(t.BlocksSent), "sent")
	ch <- prometheus.MustNewConstMetric(descBSDup, prometheus.CounterValue, float64(t.DupBlocks))
	ch <- prometheus.MustNewConstMetric(descBSBytes, prometheus.CounterValue, float64(t.BytesReceived), "received")
	ch <- prometheus.MustNewConstMetric(descBSBytes, prometheus.CounterValue, float64(t.BytesSent), "sent")
	blocks, bytes := c.storeSize()
	ch <- prometheus.MustNewConstMetric(descStoreBlks, prometheus.GaugeValue, float64(blocks))
	ch <- prometheus.MustNewConstMetric(descStoreBytes, prometheus.GaugeValue, float64(bytes))
}

// storeSize walks the store at most once a minute (a walk reads every
// block's size), within five seconds.
func (c *nodeCollector) storeSize() (int, int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.sizeAt) > time.Minute {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if b, n, err := c.n.Store.Stat(ctx); err == nil {
			c.blocks, c.bytes = b, n
		}
		c.sizeAt = time.Now()
	}
	return c.blocks, c.bytes
}

// p2pBytes sums libp2p's stream bytes by protocol group: [received, sent].
func p2pBytes(h *p2p.Host) map[string][2]float64 {
	out := map[string][2]float64{}
	for proto, st := range h.Bandwidth.GetBandwidthByProtocol() {
		g := protocolGroup(string(proto))
		b := out[g]
		out[g] = [2]float64{b[0] + float64(st.TotalIn), b[1] + float64(st.TotalOut)}
	}
	return out
}

var protocolGroups = []string{"gossip", "bitswap", "dht", "status", "other"}

// protocolGroup folds a libp2p protocol ID into a bounded label.
func protocolGroup(id string) string {
	switch {
	case strings.HasPrefix(id, "/meshsub/"), strings.HasPrefix(id, "/floodsub/"):
		return "gossip"
	case strings.HasPrefix(id, "/ipfs/bitswap"):
		return "bitswap"
	case strings.Contains(id, "/kad/"):
		return "dht"
	case id == string(StatusProtocol):
		return "status"
	}
	return "other"
}

// phaseTimer times the phases of one round, each from the end of the one
// before: fomnet_round_phase_seconds and a "timing" event per phase.
type phaseTimer struct {
	p      *Participant
	round  int
	last   time.Time
	steps0 int64 // p.stepNanos when the round began
}

func (p *Participant) phases() *phaseTimer {
	return &phaseTimer{p: p, round: p.Round(), last: time.Now(), steps0: p.stepNanos.Load()}
}

// steps ends the round: a "busy" event with the time this node's own
// inner steps ran since it began.
func (t *phaseTimer) steps() {
	d := time.Duration(t.p.stepNanos.Load() - t.steps0)
	t.p.event(RoundEvent{Phase: "busy", Seconds: d.Seconds(), Round: t.round})
}

// done ends phase.
func (t *phaseTimer) done(phase string) {
	now := time.Now()
	d := now.Sub(t.last).Seconds()
	t.p.n.Metrics.phase.WithLabelValues(phase).Observe(d)
	t.p.event(RoundEvent{Phase: "timing", Name: phase, Seconds: d, Round: t.round})
	t.p.n.timeline.add(t.p.id, PhaseTiming{Round: t.round, Phase: phase, Seconds: d})
	t.last = now
}

// metricsServer serves /metrics alone on a loopback address, without a
// token (api.metrics, --metrics).
type metricsServer struct {
	srv  *http.Server
	addr string
	done chan struct{}
	once sync.Once
}

func serveMetrics(n *Node, listen string) (*metricsServer, error) {
	if err := checkLoopback(listen); err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("metrics: listening on %s: %w", listen, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.Metrics.Handler())
	s := &metricsServer{srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}, addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			n.logf("metrics: %v", err)
		}
	}()
	n.logf("metrics on http://%s/metrics", s.addr)
	return s, nil
}

func (s *metricsServer) close() {
	s.once.Do(func() {
		s.srv.Close()
		<-s.done
	})
}

// MetricsAddr is where the node serves /metrics without a token ("" if
// it does not).
func (n *Node) MetricsAddr() string {
	if n.metrics == nil {
		return ""
	}
	return n.metrics.addr
}
