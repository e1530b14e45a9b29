package fsutil

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// WriteFile atomically replaces path with data (mode 0644).
func WriteFile(path string, data []byte) error {
	return WriteFileFunc(path, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFilePrivate is WriteFile for a file only its owner may read (mode
// 0600 from the moment it exists: the temporary file is created so).
func WriteFilePrivate(path string, data []byte) error {
	return writeFileMode(path, 0o600, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFileFunc atomically replaces path (mode 0644) with what write
// writes: into a temporary file beside it, fsynced, then renamed; on error
// nothing is left behind and path is untouched.
func WriteFileFunc(path string, write func(io.Writer) error) error {
	return writeFileMode(path, 0o644, write)
}

func writeFileMode(path string, mode os.FileMode, write func(io.Writer) error) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op after the rename
	if err := write(tmp); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("syncing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// SyncDir fsyncs a directory, making renames inside it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// WriteDir creates dir, which must not exist, holding files (name → bytes;
// plain names only): they are written and fsynced into a temporary
// directory beside dir, which is then renamed into place, so dir appears
// whole or not at all.
func WriteDir(dir string, files map[string][]byte) error {
	fs := make(map[string]func(io.Writer) error, len(files))
	for name, data := range files {
		fs[name] = func(w io.Writer) error {
			_, err := w.Write(data)
			return err
		}
	}
	return WriteDirFunc(dir, fs)
}

// WriteDirFunc is WriteDir with each file's bytes written by a function
// (name → what writes it), so that a large file streams to disk instead of
// being held in memory first.
func WriteDirFunc(dir string, files map[string]func(io.Writer) error) error {
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("%s already exists; refusing to overwrite it", dir)
	}
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return err
	}
	tmp, err := os.MkdirTemp(parent, "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp) // a no-op after the rename
	for name, write := range files {
		if name != filepath.Base(name) || name == "." || name == ".." || name == "" {
			return fmt.Errorf("file name %q in %s is not a plain name", name, dir)
		}
		if err := WriteFileFunc(filepath.Join(tmp, name), write); err != nil {
			return err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	if err := SyncDir(tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	return SyncDir(parent)
}
