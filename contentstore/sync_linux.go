package contentstore

import (
	"os"

	"golang.org/x/sys/unix"
)

// syncFS makes every block written so far durable with one syncfs(2) of
// the file system holding the store (one journal commit, instead of an
// fsync per block file).
func syncFS(f *os.File) error { return unix.Syncfs(int(f.Fd())) }
