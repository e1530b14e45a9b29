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
// What it does not do: networking, membership and rounds on the swarm
// (issue "Rounds over the swarm"), or training itself. The in-process
// simulation behind `fomnet bench sync` lives in gradsync/simulate.
package gradsync
