// Package simulate runs DiLoCo and data-parallel training side by side in
// one process, with K simulated workers on one compute backend, using the
// real gradsync code (codecs, error feedback, aggregation, outer step) and
// the real model. It is the evidence behind `fomnet bench sync`: validation
// loss at equal tokens against the bytes each method would send.
//
//	rows, _ := simulate.Run(ctx, be, train, val, simulate.DefaultOptions(), nil)
//	rows, _ = simulate.RunParallel(ctx, []kernels.Backend{be1, be2}, train, val, o, nil) // two methods at a time
//
// Bytes are counted as a bandwidth-optimal exchange would send them, per
// worker: data-parallel training all-reduces fp32 gradients every step with
// a ring (2·(K−1)/K·4·N bytes sent); DiLoCo sends, once per round, its
// encoded contribution to the K−1 other partition reducers ((K−1)/K of it)
// and, as a reducer, its aggregated partition, encoded with the same codec,
// to the K−1 others ((K−1)/K of one encoded vector in all). The aggregate is
// decoded from that encoding before the outer step, so its loss is counted.
//
// One outer loop (outer.go) runs every schedule: rounds waited for, or
// overlapped with the next round's steps (Method.Overlap: the aggregate
// applied a round late), the whole vector at once or in fragments on
// staggered schedules (Method.Fragments, streaming DiLoCo); Method.Hetero
// makes the workers unequal. Options.Sources scores held-out sources apart
// (natural text, generated documents): judge a method on the source that
// is hard to fit.
//
// What it does not do: networking, timing of a real swarm (node/swarmsim
// models that), or anything a node needs to run; it imports package model,
// which gradsync proper never does.
package simulate
