//go:build cgo

package emu

/*
#cgo CXXFLAGS: -std=c++17 -O2
#cgo LDFLAGS: -lm
#include <stdlib.h>
#include <string.h>
#include "emu.h"

// Device addresses are C heap addresses carried as integers.
static void *emu_ptr(uint64_t p) { return (void *)(uintptr_t)p; }
*/
import "C"

import (
	"errors"
	"fmt"
	"sync"
	"unsafe"
)

// Device is the emulated GPU. It implements kernels/cuda's Device.
type Device struct {
	mu     sync.Mutex
	allocs map[uint64]int64
	closed bool
}

// New returns an emulated device.
func New() (*Device, error) { return &Device{allocs: map[uint64]int64{}}, nil }

// Name describes the device.
func (d *Device) Name() string { return "emulator (CPU)" }

func (d *Device) check(p uint64, bytes int64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return errors.New("emu: device closed")
	}
	for base, n := range d.allocs {
		if p >= base && p+uint64(bytes) <= base+uint64(n) {
			return nil
		}
	}
	return fmt.Errorf("emu: [%#x, +%d) is not inside one allocation", p, bytes)
}

// Alloc returns host memory standing in for device memory.
func (d *Device) Alloc(bytes int64) (uint64, error) {
	p := C.malloc(C.size_t(bytes))
	if p == nil {
		return 0, fmt.Errorf("emu: out of memory allocating %d bytes", bytes)
	}
	d.mu.Lock()
	d.allocs[uint64(uintptr(p))] = bytes
	d.mu.Unlock()
	return uint64(uintptr(p)), nil
}

// AllocMapped is Alloc, zeroed: the emulator's device memory is the
// host's (what a GPU reads over the bus, it reads here in place).
func (d *Device) AllocMapped(bytes int64) (uint64, error) {
	p, err := d.Alloc(bytes)
	if err == nil {
		err = d.Clear(p, bytes)
	}
	return p, err
}

// FreeMapped releases memory from AllocMapped.
func (d *Device) FreeMapped(p uint64) error { return d.Free(p) }

// Free releases memory from Alloc.
func (d *Device) Free(p uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.allocs[p]; !ok {
		return fmt.Errorf("emu: free of %#x, which Alloc did not return", p)
	}
	delete(d.allocs, p)
	C.free(C.emu_ptr(C.uint64_t(p)))
	return nil
}

// dev converts a device address (emulated: a C heap address) to a pointer.
func dev(p uint64) unsafe.Pointer { return C.emu_ptr(C.uint64_t(p)) }

// CopyIn copies host memory in.
func (d *Device) CopyIn(dst uint64, src unsafe.Pointer, bytes int64) error {
	if err := d.check(dst, bytes); err != nil {
		return err
	}
	C.memcpy(dev(dst), src, C.size_t(bytes))
	return nil
}

// CopyOut copies device memory out.
func (d *Device) CopyOut(dst unsafe.Pointer, src uint64, bytes int64) error {
	if err := d.check(src, bytes); err != nil {
		return err
	}
	C.memcpy(dst, dev(src), C.size_t(bytes))
	return nil
}

// CopyDev copies within the device.
func (d *Device) CopyDev(dst, src uint64, bytes int64) error {
	if err := d.check(dst, bytes); err != nil {
		return err
	}
	if err := d.check(src, bytes); err != nil {
		return err
	}
	C.memmove(dev(dst), dev(src), C.size_t(bytes))
	return nil
}

// Clear zeroes device memory.
func (d *Device) Clear(dst uint64, bytes int64) error {
	if err := d.check(dst, bytes); err != nil {
		return err
	}
	C.memset(dev(dst), 0, C.size_t(bytes))
	return nil
}

// Launch runs a kernel, block after block, with shared bytes of dynamic
// shared memory.
func (d *Device) Launch(kernel string, grid, block [3]int, shared int, args []uint64) error {
	name := C.CString(kernel)
	defer C.free(unsafe.Pointer(name))
	var a *C.uint64_t
	if len(args) > 0 {
		a = (*C.uint64_t)(C.malloc(C.size_t(8 * len(args))))
		defer C.free(unsafe.Pointer(a))
		copy(unsafe.Slice((*uint64)(unsafe.Pointer(a)), len(args)), args)
	}
	var msg [256]C.char
	rc := C.emu_launch(name, C.uint(grid[0]), C.uint(grid[1]), C.uint(grid[2]), C.uint(block[0]), C.uint(block[1]), C.uint(block[2]), C.uint(shared),
		a, C.int(len(args)), &msg[0], C.int(len(msg)))
	if rc != 0 {
		return errors.New(C.GoString(&msg[0]))
	}
	return nil
}

// Has reports whether the emulator has the kernel (it has every kernel of
// the .cu files but the sm_90a ones).
func (d *Device) Has(kernel string) bool {
	name := C.CString(kernel)
	defer C.free(unsafe.Pointer(name))
	return C.emu_has(name) != 0
}

// Close frees what is still allocated. It is idempotent.
func (d *Device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	for p := range d.allocs {
		C.free(C.emu_ptr(C.uint64_t(p)))
	}
	d.allocs = nil
	d.closed = true
	return nil
}
