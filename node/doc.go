// Package node will be the fomnet daemon: it composes the p2p host, the
// content store, the data pipeline, the model and gradsync into the roles
// trainer, seeder, mirror and verifier, runs the inner training loop over
// assigned shards, and serves the HTTP API, metrics and dashboard.
//
// Status: not built yet (issues "swarm and content store" and "rounds over
// the swarm"). Single-node training lives in package model today
// (model.Train), driven by `fomnet train`.
package node
