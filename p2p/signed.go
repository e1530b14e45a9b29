package p2p

import (
	"errors"
	"fmt"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/proto"
)

// maxSigned bounds a signed envelope OpenSigned reads: a topic message
// (pubsub's default limit is 1 MiB) with its header, signature and key.
const maxSigned = 1<<20 + 4<<10

// Signed returns the message as its author signed it: the pubsub envelope
// (data, author, sequence number, topic, signature and, where the author's
// ID does not embed it, the public key). Anyone can check it later, off the
// network, with OpenSigned: it is how a node shows others what a peer said.
func (m Message) Signed() ([]byte, error) {
	if m.env == nil || len(m.env.Signature) == 0 {
		return nil, errors.New("p2p: message has no signature")
	}
	return proto.Marshal(m.env)
}

// OpenSigned checks a signed envelope (Message.Signed) as pubsub checks a
// message on receipt — the signature, by the key the author's peer ID
// names, over the envelope without signature and key, prefixed with
// pubsub.SignPrefix — and returns its author, topic and data. Written here
// because go-libp2p-pubsub verifies only inside its router and exports no
// function for it.
func OpenSigned(b []byte) (from peer.ID, topic string, data []byte, err error) {
	if len(b) > maxSigned {
		return "", "", nil, fmt.Errorf("p2p: signed message of %d bytes (at most %d)", len(b), maxSigned)
	}
	var m pb.Message
	if err := proto.Unmarshal(b, &m); err != nil {
		return "", "", nil, fmt.Errorf("p2p: signed message: %w", err)
	}
	from, err = peer.IDFromBytes(m.From)
	if err != nil {
		return "", "", nil, fmt.Errorf("p2p: signed message: author: %w", err)
	}
	key, err := signingKey(from, m.Key)
	if err != nil {
		return "", "", nil, fmt.Errorf("p2p: signed message: key: %w", err)
	}
	unsigned := proto.CloneOf(&m)
	unsigned.Signature, unsigned.Key = nil, nil
	body, err := proto.Marshal(unsigned)
	if err != nil {
		return "", "", nil, err
	}
	ok, err := key.Verify(append([]byte(pubsub.SignPrefix), body...), m.Signature)
	if err != nil || !ok {
		return "", "", nil, fmt.Errorf("p2p: signed message: the signature of %s does not verify", from)
	}
	return from, m.GetTopic(), m.Data, nil
}

// signingKey is the author's public key: embedded in its peer ID (Ed25519,
// as fomnet's identities are), or attached and matching the ID.
func signingKey(from peer.ID, attached []byte) (crypto.PubKey, error) {
	if attached == nil {
		return from.ExtractPublicKey()
	}
	key, err := crypto.UnmarshalPublicKey(attached)
	if err != nil {
		return nil, err
	}
	if !from.MatchesPublicKey(key) {
		return nil, fmt.Errorf("the attached key is not %s's", from)
	}
	return key, nil
}
