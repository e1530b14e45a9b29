// Package contentstore will hold the node's boxo blockstore on disk, bitswap,
// UnixFS files and directories, CAR import/export, pins and verification, so
// that every fomnet artifact is a standard IPFS object.
//
// Status: not built yet (issue "The swarm and its content store").
package contentstore
