package p2p

import (
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/metrics"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// LinkMeter measures this peer's download throughput: the bytes bitswap
// streams read over the time they spent arriving. It is the host's
// bandwidth reporter (libp2p calls it on every stream read and write) and
// passes everything on to the counter it embeds.
//
// Only reads are timed: a read returns as its bytes come in, so bytes
// over the time between consecutive reads — within a burst, reads less
// than burstGap apart — is the rate the link delivered while it was busy,
// whatever it did between bursts. Writes are not: they return once the
// bytes are in the muxer's or QUIC's stream window (megabytes), not when
// they left, so a sender cannot time its uplink. libp2p's own meters give rates
// averaged over seconds of mostly idle links, which says nothing about a
// link's capacity; hence this.
type LinkMeter struct {
	*metrics.BandwidthCounter

	mu    sync.Mutex
	last  time.Time // the last timed read, of any stream
	total LinkStats
}

// burstGap: reads further apart than this start a new burst (the link
// idled); the first read of a burst carries bytes of unknown duration and
// is not timed.
const burstGap = 50 * time.Millisecond

// LinkStats are bytes read and the seconds they took to arrive.
type LinkStats struct {
	Bytes   int64
	Seconds float64
}

// Rate is the bytes a second the stats show (0 with none timed).
func (s LinkStats) Rate() float64 {
	if s.Seconds <= 0 {
		return 0
	}
	return float64(s.Bytes) / s.Seconds
}

// Sub is what was read between snapshot o and s.
func (s LinkStats) Sub(o LinkStats) LinkStats {
	return LinkStats{Bytes: s.Bytes - o.Bytes, Seconds: s.Seconds - o.Seconds}
}

// NewLinkMeter returns a meter over a fresh bandwidth counter.
func NewLinkMeter() *LinkMeter {
	return &LinkMeter{BandwidthCounter: metrics.NewBandwidthCounter()}
}

// timed says whether proto's reads are timed: bitswap's, the bulk
// transfers (gossip and the DHT are small messages, far apart).
func timed(proto protocol.ID) bool { return strings.HasPrefix(string(proto), "/ipfs/bitswap") }

// LogRecvMessageStream times a read of size bytes from p on proto.
func (m *LinkMeter) LogRecvMessageStream(size int64, proto protocol.ID, p peer.ID) {
	m.BandwidthCounter.LogRecvMessageStream(size, proto, p)
	if size <= 0 || !timed(proto) {
		return
	}
	now := time.Now()
	m.mu.Lock()
	defer m.mu.Unlock()
	m.total.add(&m.last, now, size)
}

// add counts a read of n bytes at now after the read at *last.
func (s *LinkStats) add(last *time.Time, now time.Time, n int64) {
	if d := now.Sub(*last); d > 0 && d <= burstGap {
		s.Bytes += n
		s.Seconds += d.Seconds()
	}
	*last = now
}

// Down is everything timed so far (take two snapshots and Sub them for a
// window's rate).
func (m *LinkMeter) Down() LinkStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.total
}
