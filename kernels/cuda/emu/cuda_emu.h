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
// to nearest even; WMMA fragments hold whole tiles (the hardware spreads them
// over a warp in an unspecified layout that kernels may not depend on, so a
// whole copy per thread is a faithful model).
//
// Not modelled: warp shuffles and votes, atomics, dynamic shared memory,
// streams, timing. The kernels do not use them.
#pragma once

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <type_traits>

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
#define __syncthreads() emu_syncthreads()

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

static inline float emu_tofloat(float f) { return f; }
static inline float emu_tofloat(__nv_bfloat16 h) { return __bfloat162float(h); }

// WMMA operations are warp-collective and a warp's lanes hold the same tile,
// so only lane 0 of each warp does the work; the other lanes' fragments are
// never read (stores are collective too). Same results, 32 times less work.
static inline bool emu_lane0(void) {
	return ((threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x) % 32 == 0;
}

namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <class Use, int M, int N, int K, class T, class Layout = void>
struct fragment {
	enum { rows = std::is_same<Use, matrix_b>::value ? K : M,
	       cols = std::is_same<Use, matrix_a>::value ? K : N };
	T x[rows * cols];
};

template <class Use, int M, int N, int K, class T, class L>
inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, T v) {
	if (!emu_lane0()) return;
	for (auto &e : f.x) e = v;
}

template <class Use, int M, int N, int K, class T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, row_major> &f, const T *p, unsigned ldm) {
	typedef fragment<Use, M, N, K, T, row_major> F;
	if (!emu_lane0()) return;
	for (int r = 0; r < F::rows; r++)
		for (int c = 0; c < F::cols; c++) f.x[r * F::cols + c] = p[r * ldm + c];
}

template <class Use, int M, int N, int K, class T>
inline void load_matrix_sync(fragment<Use, M, N, K, T, col_major> &f, const T *p, unsigned ldm) {
	typedef fragment<Use, M, N, K, T, col_major> F;
	if (!emu_lane0()) return;
	for (int r = 0; r < F::rows; r++)
		for (int c = 0; c < F::cols; c++) f.x[r * F::cols + c] = p[c * ldm + r];
}

template <int M, int N, int K, class TA, class LA, class LB>
inline void mma_sync(fragment<accumulator, M, N, K, float> &d, const fragment<matrix_a, M, N, K, TA, LA> &a,
                     const fragment<matrix_b, M, N, K, TA, LB> &b, const fragment<accumulator, M, N, K, float> &c) {
	if (!emu_lane0()) return;
	float t[M * N];
	for (int i = 0; i < M; i++)
		for (int j = 0; j < N; j++) {
			float s = c.x[i * N + j];
			for (int k = 0; k < K; k++) s = fmaf(emu_tofloat(a.x[i * K + k]), emu_tofloat(b.x[k * N + j]), s);
			t[i * N + j] = s;
		}
	memcpy(d.x, t, sizeof t);
}

template <int M, int N, int K>
inline void store_matrix_sync(float *p, const fragment<accumulator, M, N, K, float> &f, unsigned ldm, layout_t l) {
	if (!emu_lane0()) return;
	for (int r = 0; r < M; r++)
		for (int c = 0; c < N; c++) {
			if (l == mem_row_major)
				p[r * ldm + c] = f.x[r * N + c];
			else
				p[c * ldm + r] = f.x[r * N + c];
		}
}
} // namespace wmma
} // namespace nvcuda
