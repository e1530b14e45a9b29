package contentstore

import (
	"encoding/json"
	"fmt"
	"sort"

	"github.com/ipfs/go-cid"
)

// The pin set is a small JSON file, pins.json, rewritten atomically on
// every change:
//
//	{"version": 1, "pins": [{"cid": "bafy…", "name": "shard-0001.fshard"}]}
//
// Pins are recursive: a pinned root keeps every block reachable from it.
// Entries are sorted by CID so the file's bytes depend only on the set.

const pinsVersion = 1

// maxPinsFile bounds what DecodePins reads (about a million pins).
const maxPinsFile = 128 << 20

// Pin is one recursive pin.
type Pin struct {
	CID  cid.Cid
	Name string // what the user called it (a file name), may be empty
}

type pinJSON struct {
	CID  string `json:"cid"`
	Name string `json:"name,omitempty"`
}

type pinsFile struct {
	Version int       `json:"version"`
	Pins    []pinJSON `json:"pins"`
}

// EncodePins serialises a pin set in CID order.
func EncodePins(pins []Pin) ([]byte, error) {
	sorted := append([]Pin(nil), pins...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].CID.KeyString() < sorted[j].CID.KeyString() })
	f := pinsFile{Version: pinsVersion, Pins: make([]pinJSON, len(sorted))}
	for i, p := range sorted {
		if !p.CID.Defined() {
			return nil, fmt.Errorf("contentstore: pin %d has no CID", i)
		}
		f.Pins[i] = pinJSON{CID: p.CID.String(), Name: p.Name}
	}
	return json.MarshalIndent(f, "", "  ")
}

// DecodePins parses pins.json; name is the file's path, for errors.
func DecodePins(data []byte, name string) ([]Pin, error) {
	if len(data) > maxPinsFile {
		return nil, fmt.Errorf("contentstore: pin file %s: %d bytes is more than the %d allowed", name, len(data), maxPinsFile)
	}
	var f pinsFile
	if err := json.Unmarshal(data, &f); err != nil {
		return nil, fmt.Errorf("contentstore: pin file %s: %w", name, err)
	}
	if f.Version != pinsVersion {
		return nil, fmt.Errorf("contentstore: pin file %s: version %d, want %d", name, f.Version, pinsVersion)
	}
	seen := make(map[cid.Cid]bool, len(f.Pins))
	out := make([]Pin, 0, len(f.Pins))
	for i, p := range f.Pins {
		c, err := cid.Decode(p.CID)
		if err != nil {
			return nil, fmt.Errorf("contentstore: pin file %s: pin %d: %w", name, i, err)
		}
		if seen[c] {
			return nil, fmt.Errorf("contentstore: pin file %s: pin %d: %s listed twice", name, i, c)
		}
		seen[c] = true
		out = append(out, Pin{CID: c, Name: p.Name})
	}
	return out, nil
}
