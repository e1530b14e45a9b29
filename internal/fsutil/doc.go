// Package fsutil writes files so that a crash never leaves a half-written
// one in place: write a temporary file beside the target, fsync it, rename
// it over the target, and fsync the directory.
package fsutil
