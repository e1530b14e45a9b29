// Package nodetest starts clusters of real fomnet nodes on 127.0.0.1 for
// integration tests: each node has its own home in a temporary directory,
// real libp2p hosts (TCP and QUIC on random ports), a DHT in server mode
// and a flatfs content store on disk.
package nodetest
