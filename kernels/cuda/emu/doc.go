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
// Warp-level operations follow PTX's definitions: mma.sync, ldmatrix and
// shuffles exchange operands through a per-warp staging area at a warp
// barrier, and each lane computes its results from the documented fragment
// layouts; cp.async copies wait in a per-thread queue until the thread waits
// for their group. Each warp runs as far as it can before the next starts,
// so a kernel that reads what other warps write without a barrier reads
// stale memory here.
//
// What it does not check: anything about real hardware — memory coalescing,
// occupancy, timing, bank conflicts, the accumulation order inside a tensor
// core (modelled as float32 FMAs in k order), races the warp order above does
// not expose, and Hopper's wgmma and TMA, which it does not model at all
// (*_sm90a.cu is not compiled here). Those need the GPU tests in
// kernels/cuda (built with -tags cuda).
//
// The package needs cgo and a C++ compiler; without cgo, New reports that.
package emu
