// Package swarmsim simulates fomnet's rounds at a scale no machine here can
// hold: N peers with their own inner-step times and links, churn, and the
// bytes a round moves, as a model of time — no training, no network. It
// reports how busy the peers' accelerators are (inner steps, their own and
// the spot checks'), the useful share (steps of contributions a round
// included), round times, bytes per node, and the stragglers left out, for
// `fomnet bench swarm`.
//
// Decisions are the protocol's own: when a round stops waiting and who is
// left out is gradsync.CloseRule, the bytes of a contribution and of an
// aggregate are the run codec's exact encoded sizes. The network is a
// fluid model: a peer's transfers run at its link's rate, and a fetch that
// many peers make is served by the uploads of everyone who holds the
// blocks (bitswap fetches from any provider), so a phase lasts at least as
// long as its bytes take through the peer's link and through the swarm's
// total upload. Latency adds a fixed time per exchange. Compute besides
// inner steps — writing and voting on the checkpoint, recomputing
// aggregates — is Overhead plus a cost per aggregated element; each
// included contribution is re-executed, with probability SpotShare, by
// another participant drawn at random, in the next round (after its own
// steps and before it collects, as the node does; with overlap, before its
// next inner steps).
//
// Two admission protocols:
//
//   - "all", today's node: every participant fetches every contribution
//     (admission costs work) and recomputes every aggregate, which the
//     reducers only announce by CID, so a node's bytes grow with N;
//   - "scatter": the admitted peers whose downlink is at least half the
//     median reduce one partition each (reduce-scatter, then all-gather of
//     the aggregates); every node also recomputes Verify partitions drawn
//     at random, so its bytes do not grow with N.
//
// With Overlap a peer starts the next round's inner steps once its
// contribution is out (gradsync/simulate's overlapped outer step: the
// aggregate applied a round late) and at most one round ahead of the
// checkpoint it settled. With Adaptive each peer trains as many steps as
// land its contribution by the round's target.
//
// Written here because no library simulates this protocol; the model is
// ours to check (scripts/swarm-netns.sh measures real swarms on shaped
// links, scripts/swarm-validate.sh compares, docs/BENCHMARKS.md records).
package swarmsim
