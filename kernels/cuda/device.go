package cuda

import "unsafe"

// Device is what the Backend needs from a GPU: memory, copies and kernel
// launches by name. Two implement it: the CUDA driver through gorgonia.org/cu
// (device_cu.go, built with -tags cuda) and the CPU emulator of package
// kernels/cuda/emu, which runs the same kernel sources so that tests check the
// Backend and its kernels without a GPU.
//
// Addresses are device addresses as integers. Calls are made by one goroutine
// at a time and execute in order; CopyOut returns once every earlier call has
// finished.
type Device interface {
	// Name describes the device, e.g. "NVIDIA H100 80GB HBM3 (sm_90)".
	Name() string
	// Alloc returns bytes of device memory (not cleared).
	Alloc(bytes int64) (uint64, error)
	// Free releases memory from Alloc.
	Free(p uint64) error
	// CopyIn copies bytes from host memory to the device.
	CopyIn(dst uint64, src unsafe.Pointer, bytes int64) error
	// CopyOut copies bytes from the device to host memory.
	CopyOut(dst unsafe.Pointer, src uint64, bytes int64) error
	// CopyDev copies bytes within the device.
	CopyDev(dst, src uint64, bytes int64) error
	// Clear sets bytes of device memory to zero.
	Clear(dst uint64, bytes int64) error
	// Launch runs a kernel of fomnet's PTX modules with shared bytes of
	// dynamic shared memory. Each argument is 64 bits as the kernel's
	// parameter list needs it: pointers and long longs whole, ints and floats
	// in the low 32 bits.
	Launch(kernel string, grid, block [3]int, shared int, args []uint64) error
	// Has reports whether the device can run the kernel (sm_90a kernels exist
	// only on compute-capability-9.0 GPUs, and not in the emulator).
	Has(kernel string) bool
	// Close releases the device; it is idempotent.
	Close() error
}

// mapper is a Device that holds memory in the host, pinned and mapped into
// the device's address space (host buffers: kernels.HostBackend): the
// address it returns is used as any device address, by kernels and copies
// alike.
type mapper interface {
	// AllocMapped returns bytes of zeroed host memory's device address.
	AllocMapped(bytes int64) (uint64, error)
	// FreeMapped releases memory from AllocMapped.
	FreeMapped(p uint64) error
}
