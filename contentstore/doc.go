// Package contentstore will hold the node's boxo blockstore on disk, bitswap,
// UnixFS files and directories, CAR import/export, pins and verification, so
// that every fomnet artifact is a standard IPFS object.
//
// Today it fixes how fomnet names content: FileCID computes the CID a file
// gets when imported as UnixFS (CIDv1, sha2-256, raw leaves, balanced DAG of
// 1 MiB chunks), and BlockCID the CID of one IPLD block such as a dag-json
// manifest. The data pipeline names shards and datasets with them, so the
// store (issue "The swarm and its content store") will serve them under the
// same CIDs.
//
//	c, _ := contentstore.FileCID(ctx, file)
//
// What it does not do yet: store, fetch, pin or verify anything.
package contentstore
