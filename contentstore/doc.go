// Package contentstore is a node's content store: a boxo blockstore on
// flatfs, bitswap (client and server) with DHT content routing, UnixFS
// files and directories, byte ranges, recursive pins with garbage
// collection, DAG verification and CAR import/export. What it stores is a
// standard IPFS object: any IPFS implementation can fetch it by CID.
//
// FileCID fixes how fomnet names a file (CIDv1, sha2-256, raw leaves,
// balanced DAG of 1 MiB chunks) and BlockCID names one IPLD block such as a
// dag-json manifest; Store.Add imports with the same parameters, so the CID
// the data pipeline computes is the CID the store serves.
//
//	s, err := contentstore.Open(dir, contentstore.Options{Host: h})
//	c, err := s.Add(ctx, "shards/", contentstore.AddOptions{Pin: true})
//	err = s.Get(ctx, c, "out/", progress) // on another node
//	rep, err := s.Verify(ctx, c)
//
// Hand-written here, and why: the pin set (a small JSON file; boxo's pinner
// needs a datastore and an IPLD-prime stack we do not otherwise use), the
// DAG walk that Verify and GC share (it must read the raw store without the
// rehash-and-delete of normal reads, and follow dag-json links), and the
// level-by-level fetch (progress in bytes, one session, resume).
package contentstore
