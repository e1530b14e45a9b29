// Package p2p is fomnet's libp2p layer: a host built from Options (TCP and
// QUIC, Noise and TLS, yamux, resource and connection managers), a
// persistent ed25519 identity, discovery (bootstrap peers, a Kademlia DHT
// under the /fomnet protocol prefix, optional mDNS), NAT traversal
// (AutoNAT, hole punching, circuit relay v2 client and optional service),
// and gossipsub topics with a network-wide message size limit, strict
// signatures, per-topic validators and peer scoring.
//
//	h, err := p2p.New(ctx, p2p.Options{Identity: key, Bootstrap: addrs})
//	t, err := h.Join("fomnet/run/…", validate)
//	err = t.Publish(ctx, msg, 1) // waits for one subscribed peer
//
// Everything here is go-libp2p, go-libp2p-kad-dht and go-libp2p-pubsub;
// this package only chooses their settings, so what fomnet says on the wire
// is standard libp2p.
package p2p
