//go:build !cgo

package emu

import (
	"errors"
	"unsafe"
)

// ErrNoCgo reports a build without cgo, where the emulator cannot be compiled.
var ErrNoCgo = errors.New("emu: the CUDA emulator needs cgo and a C++ compiler (CGO_ENABLED=1)")

// Device is the emulated GPU (unavailable without cgo).
type Device struct{}

// New reports ErrNoCgo.
func New() (*Device, error) { return nil, ErrNoCgo }

func (*Device) Name() string                                       { return "emulator (unavailable)" }
func (*Device) Alloc(int64) (uint64, error)                        { return 0, ErrNoCgo }
func (*Device) Free(uint64) error                                  { return ErrNoCgo }
func (*Device) CopyIn(uint64, unsafe.Pointer, int64) error         { return ErrNoCgo }
func (*Device) CopyOut(unsafe.Pointer, uint64, int64) error        { return ErrNoCgo }
func (*Device) CopyDev(uint64, uint64, int64) error                { return ErrNoCgo }
func (*Device) Clear(uint64, int64) error                          { return ErrNoCgo }
func (*Device) Launch(string, [3]int, [3]int, int, []uint64) error { return ErrNoCgo }
func (*Device) Has(string) bool                                    { return false }
func (*Device) Close() error                                       { return nil }
