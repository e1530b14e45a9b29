package p2p

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
)

// LoadOrCreateIdentity returns the ed25519 key stored at path, creating it
// (mode 0600, parent directories 0700) when the file does not exist. The file
// holds the key in libp2p's protobuf encoding, as IPFS keystores do.
//
// A key file that others can read is refused: a leaked key lets anyone sign
// gossip as this peer.
func LoadOrCreateIdentity(path string) (crypto.PrivKey, error) {
	k, err := LoadIdentity(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	k, _, err = crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, err
	}
	raw, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	// O_EXCL: two processes initialising the same home never overwrite
	// each other's key.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		if errors.Is(err, fs.ErrExist) {
			return LoadIdentity(path)
		}
		return nil, fmt.Errorf("identity: %w", err)
	}
	if _, err := f.Write(raw); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("identity: writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return nil, fmt.Errorf("identity: writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("identity: writing %s: %w", path, err)
	}
	return k, nil
}

// LoadIdentity reads the key file at path (see LoadOrCreateIdentity).
func LoadIdentity(path string) (crypto.PrivKey, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity: key file %s has mode %#o; it must be readable by its owner only (chmod 600 %s)", path, st.Mode().Perm(), path)
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("identity: %w", err)
	}
	return DecodeIdentity(raw, path)
}

// DecodeIdentity parses a key file's bytes; name is used in errors.
func DecodeIdentity(raw []byte, name string) (crypto.PrivKey, error) {
	if len(raw) == 0 || len(raw) > 4096 {
		return nil, fmt.Errorf("identity: key file %s: %d bytes is not an ed25519 key", name, len(raw))
	}
	k, err := crypto.UnmarshalPrivateKey(raw)
	if err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", name, err)
	}
	if k.Type() != crypto.Ed25519 {
		return nil, fmt.Errorf("identity: key file %s holds a %s key; fomnet uses ed25519", name, k.Type())
	}
	if _, err := peer.IDFromPrivateKey(k); err != nil {
		return nil, fmt.Errorf("identity: key file %s: %w", name, err)
	}
	return k, nil
}
