//go:build unix && !linux

package contentstore

import (
	"os"
	"syscall"
)

// syncFS makes every block written so far durable. Without syncfs(2) it
// flushes all file systems.
func syncFS(*os.File) error {
	syscall.Sync()
	return nil
}
