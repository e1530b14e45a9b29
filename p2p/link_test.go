package p2p

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// Reads are timed within bursts: the first read of a burst, and the gaps
// between bursts, count for nothing.
func TestLinkStatsBursts(t *testing.T) {
	var s LinkStats
	var last time.Time
	t0 := time.Unix(1000, 0)
	ms := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Millisecond) }
	for _, r := range []struct {
		at    int
		bytes int64
	}{{0, 100}, {10, 1000}, {20, 1000}, {500, 7000}, {510, 2000}, {530, 1000}} {
		s.add(&last, ms(r.at), r.bytes)
	}
	// Timed: 1000+1000 over 20 ms, then 2000+1000 over 30 ms.
	if s.Bytes != 5000 || s.Seconds < 0.0499 || s.Seconds > 0.0501 {
		t.Fatalf("stats %+v, want 5000 bytes over 0.05 s", s)
	}
	if r := s.Rate(); r < 99_000 || r > 101_000 {
		t.Fatalf("rate %v, want 100 kB/s", r)
	}
	if d := s.Sub(LinkStats{Bytes: 2000, Seconds: 0.02}); d.Bytes != 3000 || d.Rate() < 99_000 || d.Rate() > 101_000 {
		t.Fatalf("window %+v", d)
	}
	if (LinkStats{}).Rate() != 0 {
		t.Fatal("no time timed must give no rate")
	}
}

// A real stream over loopback on a bitswap protocol ID is timed; another
// protocol's is not.
func TestLinkMeterTimesBulkReads(t *testing.T) {
	hs := newHosts(t, 2, 0)
	const size = 8 << 20
	send := func(proto string) {
		hs[0].SetStreamHandler(protocol.ID(proto), func(s network.Stream) {
			defer s.Close()
			s.Write(make([]byte, size))
		})
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		s, err := hs[1].NewStream(ctx, hs[0].ID(), protocol.ID(proto))
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		s.SetReadDeadline(time.Now().Add(30 * time.Second))
		if n, err := io.Copy(io.Discard, s); err != nil || n != size {
			t.Fatalf("read %d bytes of %d: %v", n, size, err)
		}
	}
	send("/fomnet/test-bulk/1")
	if d := hs[1].Link.Down(); d.Bytes != 0 {
		t.Fatalf("another protocol's reads were timed: %+v", d)
	}
	send("/ipfs/bitswap/1.2.0")
	d := hs[1].Link.Down()
	// (Up to a few bytes more: a read may carry the stream's protocol
	// negotiation, which counts once the protocol is known.)
	if d.Bytes < size/2 || d.Bytes > size+256 || !(d.Seconds > 0) {
		t.Fatalf("timed %+v of %d bytes read", d, size)
	}
	t.Logf("timed %d bytes over %.4f s: %.0f MB/s on loopback", d.Bytes, d.Seconds, d.Rate()/1e6)
}
