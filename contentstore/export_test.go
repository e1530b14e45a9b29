package contentstore

import (
	"time"

	dshelp "github.com/ipfs/boxo/datastore/dshelp"
	"github.com/ipfs/go-cid"
)

var carV2Pragma = []byte{0x0a, 0xa1, 0x67, 0x76, 0x65, 0x72, 0x73, 0x69, 0x6f, 0x6e, 0x02}

func dshelpKey(c cid.Cid) string { return dshelp.MultihashToDsKey(c.Hash()).String() }

// DecodeLinks exposes blockLinks to the external tests.
func DecodeLinks(c cid.Cid, data []byte) ([]cid.Cid, error) { return blockLinks(c, data) }

// RandBytes gives the external tests the same deterministic data helper.
var RandBytes = randBytes

// SetWaitReports makes waiting fetches report after and every; the
// returned function restores the defaults.
func SetWaitReports(after, every time.Duration) func() {
	a, e := reportAfter, reportEvery
	reportAfter, reportEvery = after, every
	return func() { reportAfter, reportEvery = a, e }
}
