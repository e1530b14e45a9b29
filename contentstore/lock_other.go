//go:build !unix

package contentstore

import (
	"fmt"
	"os"
)

// lockDir opens dir/lock; on systems without flock the store relies on
// the node's single-process discipline.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(dir+string(os.PathSeparator)+"lock", os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("contentstore: %w", err)
	}
	return f, nil
}
