// Package p2p will hold fomnet's libp2p host: identity, transports, resource
// limits, discovery (DHT, mDNS, bootstrap), NAT traversal and gossipsub
// topics with validators.
//
// Status: not built yet (issue "The swarm and its content store").
package p2p
