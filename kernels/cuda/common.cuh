// common.cuh — definitions shared by fomnet's CUDA kernels.
//
// Every kernel is written twice-readable: nvcc compiles it to PTX for the GPU
// (go generate), and g++ compiles the same source against
// emu/cuda_emu.h, a small CPU emulator of the CUDA execution model, so that
// CI checks the kernels' arithmetic without a GPU. Kernels therefore use only
// what the emulator provides: threadIdx/blockIdx/blockDim/gridDim,
// __syncthreads, statically sized __shared__ arrays, the __*_rn intrinsics,
// bf16 conversions, and mma.cuh's warp-level primitives (mma.sync, ldmatrix,
// cp.async, shuffles, dynamic shared memory). *_sm90a.cu files (wgmma, TMA)
// are the exception: the emulator does not compile them.
//
// fp32 kernels reproduce the CPU backend's arithmetic definitions (kernels/cpu:
// vec.go, ops.go, attention.go) operation for operation: the same roundings,
// the same order of every sum, the same exponential. PTX is generated with
// -fmad=false so that nvcc never fuses a multiply and an add the definition
// rounds separately; fused multiply-adds are written out (__fmaf_rn).
#pragma once

#ifdef __CUDACC__
#include <cuda_bf16.h>
#include <math.h>
#include <mma.h>
#include <stdint.h>
#endif

#define FOM_KERNEL extern "C" __global__
#define FOM_DEV static __device__ __forceinline__

typedef uint16_t fom_bf16_t; // bfloat16 bits in device memory

// Constants of fom_exp, bit for bit those of kernels/cpu (expCore): the
// hexadecimal literals are the float32 values Go's constant conversion gives.
#define FOM_EXP_LO (-0x1.5d589ep+06f)
#define FOM_EXP_HI (0x1.62e42ep+06f)
#define FOM_LOG2E (0x1.715476p+00f)
#define FOM_LN2_HI (0x1.63p-01f)
#define FOM_LN2_LO (-0x1.bd0106p-13f)
#define FOM_C720 (0x1.6c16c2p-10f)
#define FOM_C120 (0x1.111112p-07f)
#define FOM_C24 (0x1.555556p-05f)
#define FOM_C6 (0x1.555556p-03f)

// fom_exp is kernels/cpu's expCore: exp(t) = 2^k·exp(r), k = roundeven(t·log2e),
// r = t − k·ln2 in two parts, a degree-6 Taylor polynomial in Horner form with
// FMAs, and the power of two applied in two halves. Inputs are clamped so it
// never returns 0 or +Inf; NaN stays NaN.
FOM_DEV float fom_exp(float t) {
	if (t != t) return t;
	if (t < FOM_EXP_LO) t = FOM_EXP_LO;
	if (t > FOM_EXP_HI) t = FOM_EXP_HI;
	float k = rintf(__fmul_rn(t, FOM_LOG2E));
	float r = __fmaf_rn(-k, FOM_LN2_HI, t);
	r = __fmaf_rn(-k, FOM_LN2_LO, r);
	float p = FOM_C720;
	p = __fmaf_rn(p, r, FOM_C120);
	p = __fmaf_rn(p, r, FOM_C24);
	p = __fmaf_rn(p, r, FOM_C6);
	p = __fmaf_rn(p, r, 0.5f);
	p = __fmaf_rn(p, r, 1.0f);
	p = __fmaf_rn(p, r, 1.0f);
	int ki = (int)k;
	int k1 = ki >> 1;
	int k2 = ki - k1;
	p = __fmul_rn(p, __int_as_float((k1 + 127) << 23));
	return __fmul_rn(p, __int_as_float((k2 + 127) << 23));
}

// fom_sigmoid is 1/(1+exp(0−g)), each operation rounded.
FOM_DEV float fom_sigmoid(float g) {
	return __fdiv_rn(1.0f, __fadd_rn(1.0f, fom_exp(__fsub_rn(0.0f, g))));
}

// fom_bf16 rounds x to bfloat16 (nearest, ties to even) and back.
FOM_DEV float fom_bf16(float x) { return __bfloat162float(__float2bfloat16_rn(x)); }

// fom_ld reads x[i]: as it is (bf 0), rounded to bfloat16 (bf 1: the bf16
// path's float32 activations), or from a buffer held in bfloat16 (bf 2,
// the same values).
FOM_DEV float fom_ld(const float *x, long long i, int bf) {
	if (bf == 2) return __int_as_float((int)((uint32_t)((const uint16_t *)x)[i] << 16));
	float v = x[i];
	return bf ? fom_bf16(v) : v;
}

// The bf16 path holds some buffers in bfloat16 (kernels.BF16Backend):
// gradients, optionally, and the activations only matrix products read.
// fom_gld reads element i of such a buffer and fom_gst writes it (rounded
// to nearest, ties to even), as bfloat16 when gbf is set, else as float32.
// A kernel that accumulates into one adds in float32 and rounds once, when
// it stores.
FOM_DEV float fom_gld(const void *g, long long i, int gbf) {
	if (gbf) return __int_as_float((int)((uint32_t)((const fom_bf16_t *)g)[i] << 16));
	return ((const float *)g)[i];
}
FOM_DEV void fom_gst(void *g, long long i, int gbf, float v) {
	if (gbf) {
		__nv_bfloat16 h = __float2bfloat16_rn(v);
		((fom_bf16_t *)g)[i] = *(const fom_bf16_t *)&h;
	} else {
		((float *)g)[i] = v;
	}
}
