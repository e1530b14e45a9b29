// cuda_emu.h — just enough of CUDA's execution model, on the CPU, to run
// fomnet's kernels (../*.cu) unchanged in tests without a GPU.
//
// A launch runs its blocks one after another. The threads of a block are
// fibers (ucontext) on one OS thread: each runs until it reaches
// __syncthreads or returns, and a barrier opens when every live thread of the
// block waits at it. __shared__ variables are function statics, which is
// exactly one copy per block because blocks do not overlap. Arithmetic
// intrinsics map to IEEE operations (compile with -ffp-contract=off so that
// nothing is fused that the kernel did not fuse); bfloat16 conversions round
// to nearest even.
//
// Warp-level operations (the tensor-core kernels of gemm.cu and flash.cu):
// a warp is 32 threads consecutive in threadIdx order. A warp-collective
// operation (shuffle, ldmatrix, mma.sync) is modelled as an exchange: each
// lane writes its operands to the warp's staging area, the lanes meet at a
// warp barrier, and each lane computes its own results from every lane's
// operands, laid out exactly as PTX specifies (m16n8k16 and m8n8 fragments),
// so a kernel that gets a fragment layout wrong computes wrong numbers here
// as on the GPU. cp.async copies are queued per thread and performed only
// when the thread waits for their group (cp.async.wait_group), so a kernel
// that reads shared memory before waiting reads stale data here too. Dynamic
// shared memory is one buffer per launch, followed by a guard that the
// scheduler checks after every block.
//
// Not modelled: votes, atomics, streams, timing. The kernels do not use them.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>


struct dim3 {
	unsigned x, y, z;
};

extern dim3 threadIdx, blockIdx, blockDim, gridDim;
void emu_syncthreads(void);

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __syncthreads() emu_syncthreads()

struct __align__(16) float4 {
	float x, y, z, w;
};
struct __align__(16) uint4 {
	unsigned x, y, z, w;
};
struct __align__(8) float2 {
	float x, y;
};
static inline float2 make_float2(float x, float y) { return {x, y}; }

// Warp primitives, implemented by the scheduler (emu.cc).
int emu_lane(void);
void emu_syncwarp(void);
enum { EMU_STAGE_WORDS = 8 };
uint32_t *emu_warp_stage(void);
void *emu_dyn_smem(void);
void emu_cp_async(void *dst, const void *src, int src_bytes);
void emu_cp_commit(void);
void emu_cp_wait(int pending);

// emu_exchange publishes n words of this lane's and returns the warp's
// staging area ([32][EMU_STAGE_WORDS]) once every lane has published.
static inline const uint32_t *emu_exchange(const uint32_t *mine, int n) {
	uint32_t *st = emu_warp_stage();
	memcpy(st + emu_lane() * EMU_STAGE_WORDS, mine, 4 * n);
	emu_syncwarp();
	return st;
}

template <class T> static inline T emu_shfl(T v, int src) {
	static_assert(sizeof(T) == 4, "32-bit shuffles only");
	uint32_t u;
	memcpy(&u, &v, 4);
	const uint32_t *st = emu_exchange(&u, 1);
	memcpy(&v, &st[(src & 31) * EMU_STAGE_WORDS], 4);
	return v;
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int mask) { return emu_shfl(v, emu_lane() ^ mask); }

static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }
static inline float emu_expf(float x) { return expf(x); }
#define __expf emu_expf
static inline float __int_as_float(int i) {
	float f;
	memcpy(&f, &i, 4);
	return f;
}
static inline unsigned __float_as_uint(float f) {
	unsigned u;
	memcpy(&u, &f, 4);
	return u;
}
// Round to nearest, ties to even (the default rounding mode).
static inline int __double2int_rn(double x) { return (int)nearbyint(x); }

struct __nv_bfloat16 {
	uint16_t x;
};

static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
	uint32_t u;
	memcpy(&u, &f, 4);
	__nv_bfloat16 h;
	if ((u & 0x7fffffffu) > 0x7f800000u) { // NaN: keep it quiet
		h.x = (uint16_t)((u >> 16) | 0x40);
		return h;
	}
	u += 0x7fffu + ((u >> 16) & 1); // round to nearest, ties to even
	h.x = (uint16_t)(u >> 16);
	return h;
}

static inline float __bfloat162float(__nv_bfloat16 h) {
	uint32_t u = (uint32_t)h.x << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}



// emu_bf16x2: element e (0 = low half) of a register holding two bfloat16.
static inline float emu_bf16x2(uint32_t r, int e) { return __int_as_float((int)(e ? r & 0xffff0000u : r << 16)); }

// emu_ldmatrix is ldmatrix.sync.aligned.m8n8.x{n}[.trans].shared.b16: lanes
// 8j..8j+7 give the addresses of rows 0..7 of matrix j (16 bytes each); lane
// l receives, of matrix j, row l/4 elements 2(l%4) and 2(l%4)+1 in r[j]
// (low half first), or with trans the same of the transposed matrix.
static inline void emu_ldmatrix(uint32_t *r, int n, bool trans, const void *p) {
	uint32_t mine[2];
	memcpy(mine, &p, sizeof p);
	const uint32_t *st = emu_exchange(mine, 2);
	int l = emu_lane();
	auto row = [&](int lane) {
		const uint16_t *q;
		memcpy(&q, &st[lane * EMU_STAGE_WORDS], sizeof q);
		return q;
	};
	for (int j = 0; j < n; j++) {
		uint16_t e0, e1;
		if (trans) {
			e0 = row(8 * j + 2 * (l % 4))[l / 4];
			e1 = row(8 * j + 2 * (l % 4) + 1)[l / 4];
		} else {
			e0 = row(8 * j + l / 4)[2 * (l % 4)];
			e1 = row(8 * j + l / 4)[2 * (l % 4) + 1];
		}
		r[j] = (uint32_t)e0 | (uint32_t)e1 << 16;
	}
	emu_syncwarp(); // the addresses' rows must not change before every lane read them (shared memory may be rewritten next)
}

// emu_mma_bf16 is mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 with
// d as c: with g = lane/4 and t = lane%4, a[0..3] hold A(g, 2t..2t+1),
// A(g+8, 2t..), A(g, 2t+8..), A(g+8, 2t+8..); b[0..1] hold B(2t..2t+1, g),
// B(2t+8.., g); d[0..3] hold D(g, 2t), D(g, 2t+1), D(g+8, 2t), D(g+8, 2t+1).
// Each output is a chain of float32 FMAs over k in order (the hardware's
// order is its own: the bf16 path is checked within tolerance).
static inline void emu_mma_bf16(float *d, const uint32_t *a, const uint32_t *b) {
	uint32_t mine[6] = {a[0], a[1], a[2], a[3], b[0], b[1]};
	const uint32_t *st = emu_exchange(mine, 6);
	int l = emu_lane(), g = l / 4, t = l % 4;
	auto A = [&](int m, int k) {
		int lane = (m % 8) * 4 + (k % 8) / 2, reg = (m >= 8) + 2 * (k >= 8);
		return emu_bf16x2(st[lane * EMU_STAGE_WORDS + reg], k % 2);
	};
	auto B = [&](int k, int n) {
		int lane = n * 4 + (k % 8) / 2, reg = 4 + (k >= 8);
		return emu_bf16x2(st[lane * EMU_STAGE_WORDS + reg], k % 2);
	};
	for (int e = 0; e < 4; e++) {
		int m = g + 8 * (e / 2), n = 2 * t + e % 2;
		float s = d[e];
		for (int k = 0; k < 16; k++) s = fmaf(A(m, k), B(k, n), s);
		d[e] = s;
	}
}
