package kernels

import (
	"math/rand/v2"
	"time"
)

// GEMMResult is one measured matrix product.
type GEMMResult struct {
	M, N, K int
	Op      string  // "NT" (forward: x·Wᵀ), "NN" (input gradient), "TN" (weight gradient)
	MS      float64 // median milliseconds per call
	GFLOPS  float64 // 2·M·N·K / time
}

// AttentionResult is one measured attention shape.
type AttentionResult struct {
	Shape                AttnShape
	FwdMS, BwdMS         float64
	FwdGFLOPS, BwdGFLOPS float64
}

// BenchGEMM measures C[M,N] = op(A)·op(B) for the transposition op on be.
func BenchGEMM(be Backend, m, n, k int, op string, minTime time.Duration) GEMMResult {
	ta, tb := op[0] == 'T', op[1] == 'T'
	a, b, c := randBuf(be, m*k, 1), randBuf(be, k*n, 2), be.Alloc(m*n)
	d := timeIt(be, minTime, func() { be.Matmul(c, a, b, m, n, k, ta, tb, false) })
	return GEMMResult{M: m, N: n, K: k, Op: op, MS: d.Seconds() * 1e3, GFLOPS: 2 * float64(m) * float64(n) * float64(k) / d.Seconds() / 1e9}
}

// BenchAttention measures causal attention (no document breaks) forward and
// backward on be. FLOPs count only unmasked work: forward 4·HD per (query,
// key) pair (scores, mixing), backward 10·HD (recomputed scores, dP, dQ, dK,
// dV).
func BenchAttention(be Backend, s AttnShape, minTime time.Duration) AttentionResult {
	nq, nk := s.B*s.T*s.NH*s.HD, s.B*s.T*s.KVH*s.HD
	q, k, v := randBuf(be, nq, 1), randBuf(be, nk, 2), randBuf(be, nk, 3)
	do := randBuf(be, nq, 4)
	ds := be.AllocInt(s.B * s.T)
	out, lse := be.Alloc(nq), be.Alloc(s.B*s.NH*s.T)
	dq, dk, dv := be.Alloc(nq), be.Alloc(nk), be.Alloc(nk)
	fwd := timeIt(be, minTime, func() { be.AttentionForward(out, lse, q, k, v, ds, s) })
	bwd := timeIt(be, minTime, func() { be.AttentionBackward(dq, dk, dv, do, q, k, v, out, lse, ds, s) })
	pairs := float64(s.B*s.NH) * float64(s.T) * float64(s.T+1) / 2
	return AttentionResult{Shape: s, FwdMS: fwd.Seconds() * 1e3, BwdMS: bwd.Seconds() * 1e3,
		FwdGFLOPS: 4 * float64(s.HD) * pairs / fwd.Seconds() / 1e9,
		BwdGFLOPS: 10 * float64(s.HD) * pairs / bwd.Seconds() / 1e9}
}

func randBuf(be Backend, n int, seed uint64) Buffer {
	r := rand.New(rand.NewPCG(seed, 7))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	b := be.Alloc(n)
	be.Upload(b, x)
	return b
}

// timeIt runs f until minTime has passed (after one warm-up call) and
// returns the median duration of a call. On a backend that queues work (a
// GPU: it has Sync) calls are timed in batches of 10 ended by a Sync, so that
// the wait for the device is paid once per batch, not per call; on the
// others each call is timed, at least 3.
func timeIt(be Backend, minTime time.Duration, f func()) time.Duration {
	sync := func() {}
	batch := 1
	if s, ok := be.(interface{ Sync() error }); ok {
		sync, batch = func() { s.Sync() }, 10
	}
	f()
	sync()
	var ds []time.Duration
	start := time.Now()
	for len(ds) < 3 || time.Since(start) < minTime {
		t0 := time.Now()
		for i := 0; i < batch; i++ {
			f()
		}
		sync()
		ds = append(ds, time.Since(t0)/time.Duration(batch))
	}
	return median(ds)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	for i := 1; i < len(s); i++ { // insertion sort: a few dozen values
		for j := i; j > 0 && s[j] < s[j-1]; j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
	return s[len(s)/2]
}
