// Package emu runs fomnet's CUDA kernels on the CPU, so that the CUDA
// backend (package kernels/cuda) and its kernels are tested where no GPU is.
//
// It compiles the kernel sources of kernels/cuda (*.cu) with the C++
// compiler against cuda_emu.h, a small model of CUDA's execution model:
// blocks run one after another, a block's threads are fibers that meet at
// __syncthreads, __shared__ arrays are one copy per block, and device memory
// is host memory. It is written here because no library does this for plain
// CUDA C without a GPU (gpuocelot, the one that did, is long unmaintained).
// It is slow — a fiber switch per thread per barrier — and meant for test
// shapes, not for training.
//
// What it does not check: anything about real hardware — memory coalescing,
// occupancy, warp scheduling, races between threads of a block that the
// fibers happen to order, and how tensor cores lay fragments out (WMMA hides
// that layout from kernels, and the emulator models a fragment as a whole
// tile). Those need the GPU tests in kernels/cuda (built with -tags cuda).
//
// The package needs cgo and a C++ compiler; without cgo, New reports that.
package emu
