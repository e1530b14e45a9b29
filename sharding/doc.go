// Package sharding turns corpora into the training data the swarm fetches:
// today, the small built-in bilingual corpus that `fomnet demo` and
// `fomnet train --builtin` train on.
//
//	files := sharding.Builtin()
//	for name, text := range files { ... }
//
// Planned here (issue "Bilingual data pipeline"): filtering, deduplication,
// tokenisation, packing into content-addressed shards, manifests, mixture
// sampling and deterministic shard assignment. None of that exists yet.
//
// The built-in corpus was written for this project (Korean and English
// paragraphs that translate each other) and is released with it.
package sharding
