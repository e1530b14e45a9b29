//go:build unix

package contentstore

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// lockDir takes an exclusive advisory lock on dir/lock, held until the
// returned file is closed (or the process dies, so a crash never leaves a
// stale lock).
func lockDir(dir string) (*os.File, error) {
	path := dir + string(os.PathSeparator) + "lock"
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("contentstore: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("contentstore: %s is in use by another process (is a fomnet daemon running on it?)", dir)
		}
		return nil, fmt.Errorf("contentstore: locking %s: %w", path, err)
	}
	return f, nil
}
