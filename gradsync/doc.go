// Package gradsync is DiLoCo's outer loop over flat float32 vectors: the
// pseudo-gradient of a round, codecs that compress it (fp32, blockwise int8,
// top-k with 2-bit values) with error feedback, robust partition-wise
// aggregation, and the Nesterov outer optimizer.
//
//	cfg := gradsync.DefaultConfig()
//	ef := gradsync.NewErrorFeedback(codec, n)
//	msg := ef.Encode(nil, delta)              // worker: Δ = θ_global − θ_local
//	agg, rep, _ := gradsync.Aggregate(cfg, contributions) // reducer, per partition
//	opt.Step(global, agg)                      // everyone: θ_global ← outer step
//
// It sees vectors and named ranges only, never the model's shape; package
// model's Layout supplies the ranges. Everything is deterministic: the same
// contributions in any arrival order give bit-identical results, so honest
// nodes compute the same checkpoint bytes.
//
// Overlapped rounds (Config.Overlap "local"). A worker need not idle while
// a round closes: it trains round r+1 from the checkpoint round r started
// from less its own round-r Δ as decoded — its local model as the others
// can rebuild it — and its round-(r+1) Δ is applied to checkpoint r, one
// round late. Of the two delayed outer steps bench sync measured (see
// docs/BENCHMARKS.md, per held-out source), "local" kept closest to DDP on
// natural text (1.009× and 0.983× at two seeds, against 1.021× and 1.005×
// for "eager", which starts from the outer step of its own Δ); it also
// needs no outer-optimizer state to name its start, so a re-execution
// rebuilds the start from two public objects: a checkpoint and a
// contribution.
//
// What it does not do: networking, membership and rounds on the swarm
// (issue "Rounds over the swarm"), or training itself. The in-process
// simulation behind `fomnet bench sync` lives in gradsync/simulate.
package gradsync
