// Package cuda is fomnet's GPU backend: kernels.Backend's operations on
// NVIDIA GPUs through the CUDA driver API (gorgonia.org/cu), with fomnet's own
// kernels.
//
// Layout. The kernels are CUDA C files beside their Go launchers, named as in
// kernels/cpu: vec.cu (scale, sums of squares, AdamW, SwiGLU), ops.cu
// (embedding, RMSNorm, RoPE, softmax cross-entropy), matmul.cu and
// attention.cu (the fp32 path), gemm.cu and flash.cu (the bf16 path's
// tensor-core matrix products and attention, sm_80 and newer), gemm_sm90a.cu
// (Hopper's wgmma and TMA), with common.cuh and mma.cuh (warp-level
// primitives). `go generate ./kernels/cuda` compiles them to PTX
// (scripts/gen-ptx.sh: sm_80, and sm_90a for *_sm90a.cu); the PTX in ptx/
// is committed and embedded, so at run time only the driver (libcuda) is
// needed and the driver JITs the PTX for the GPU. Each PTX file records the
// hash of its sources (TestPTXIsCurrent); scripts/check-ptx.sh regenerates
// and compares with nvcc.
//
// Build tags. The Backend over an abstract Device (cuda.go, device.go, and
// the launchers ops.go, matmul.go and attention.go) builds everywhere. device_cu.go, the Device on the CUDA driver, and
// gpu_test.go build only with -tags cuda, because gorgonia.org/cu calls cuInit
// when the process starts and exits where no GPU exists; without the tag Open
// returns ErrNotBuilt. The kernels themselves are tested everywhere: package
// emu compiles the same .cu sources for the CPU (a small model of CUDA's
// execution model) and emu_test.go checks every operation against the CPU
// backend.
//
// Arithmetic. The fp32 path (the default) reproduces the CPU backend bit for
// bit: same roundings, same order of every sum (each matmul output one FMA
// chain over k; sums of squares in 4096-element chunks of 16 float64 lanes;
// softmax sums in 16 float64 lanes), the same exponential (a port of
// kernels/cpu's expCore, never the device's expf), and PTX built with
// -fmad=false. So a GPU and a CPU peer compute the same bytes, which fomnet's
// verification relies on. The price is that attention is computed one row per
// thread with three passes over the keys. The bf16 path (Options.Precision =
// BF16) rounds the inputs of matrix products and attention to bfloat16 and
// multiplies on tensor cores with float32 accumulation (mma.sync; wgmma with
// TMA on Hopper in each transposition once the kernel has passed its check
// in it on the device; flash-style attention where the head dimension is a multiple of
// 16); master weights, AdamW state, every other operation and the loss stay
// float32 — the gradients too, unless the model asks for them in bfloat16
// (AllocBF16: summed in float32 by each op, rounded once when stored). It
// is faster and agrees with the CPU to bfloat16 precision, not bit for
// bit.
//
// Memory. Buffers live in device memory, except those from AllocHost and
// AllocHostBytes (kernels.HostBackend): pinned host memory mapped into the
// device's address space, which kernels and copies take like any other
// address and which every access reaches over the bus (a model's AdamW
// moments with Options.OffloadMoments). AllocMaster (kernels.MasterBackend,
// the bf16 path) puts float32 weights there too, with a bfloat16 copy in
// device memory that the kernels reading weights read and every write the
// backend accepts keeps current (a model's master weights with
// Options.OffloadMaster).
//
// Concurrency. A CUDA context is bound to an OS thread; the Device owns one
// goroutine locked to its thread and every driver call runs there (thread.go);
// launches, clears and device copies are queued without waiting. The Backend
// is one ordered stream of work, like the CPU backend, used from one goroutine
// at a time.
//
// Errors. Device failures (out of memory, launch errors) are returned, not
// panicked — a queued launch's by the next call that waits, naming the
// kernel: the Backend records the first and reports it from Err
// (kernels.Err), skipping later device work; the model checks it every step.
package cuda

//go:generate bash ../../scripts/gen-ptx.sh
//go:generate go generate ./emu
