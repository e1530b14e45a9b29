// matmul.cu — C = (acc ? C : 0) + op(A)·op(B), row-major, as kernels/cpu's
// Matmul: op(A) is [M,K] (A stored [K,M] when ta), op(B) is [K,N] (B stored
// [N,K] when tb).
#include "common.cuh"

// fom_matmul_f32: 64×64 output tile per 256-thread block, K in steps of 16
// through shared memory. Thread (ty, tx) owns rows ty+16i and columns tx+16j
// and computes each of its outputs as one chain of fused multiply-adds over
// k = 0..K−1 in order, from 0 or from C: the CPU backend's arithmetic
// contract, so the two agree bit for bit.
FOM_KERNEL void fom_matmul_f32(float *C, const float *A, const float *B, long long M, long long N, long long K,
                               int ta, int tb, int acc) {
	__shared__ float As[16][65];
	__shared__ float Bs[16][65];
	int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
	long long m0 = (long long)blockIdx.y * 64, n0 = (long long)blockIdx.x * 64;
	float c[4][4];
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++) {
			long long m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
			c[i][j] = (acc && m < M && n < N) ? C[m * N + n] : 0.0f;
		}
	for (long long k0 = 0; k0 < K; k0 += 16) {
		for (int e = threadIdx.x; e < 1024; e += 256) {
			int mm = ta ? e % 64 : e / 16, kk = ta ? e / 64 : e % 16;
			long long m = m0 + mm, k = k0 + kk;
			As[kk][mm] = (m < M && k < K) ? (ta ? A[k * M + m] : A[m * K + k]) : 0.0f;
			int nn = tb ? e / 16 : e % 64, kb = tb ? e % 16 : e / 64;
			long long n = n0 + nn, kq = k0 + kb;
			Bs[kb][nn] = (n < N && kq < K) ? (tb ? B[n * K + kq] : B[kq * N + n]) : 0.0f;
		}
		__syncthreads();
		int kmax = K - k0 < 16 ? (int)(K - k0) : 16; // no padded terms: they could flip a zero's sign
		for (int kk = 0; kk < kmax; kk++) {
			float a[4], b[4];
			for (int i = 0; i < 4; i++) a[i] = As[kk][ty + 16 * i];
			for (int j = 0; j < 4; j++) b[j] = Bs[kk][tx + 16 * j];
			for (int i = 0; i < 4; i++)
				for (int j = 0; j < 4; j++) c[i][j] = __fmaf_rn(a[i], b[j], c[i][j]);
		}
		__syncthreads();
	}
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 4; j++) {
			long long m = m0 + ty + 16 * i, n = n0 + tx + 16 * j;
			if (m < M && n < N) C[m * N + n] = c[i][j];
		}
}

// fom_matmul_bf16: the mixed-precision path on tensor cores through WMMA.
// A and B are read as float32 (the master copies), rounded to bfloat16 into
// shared memory, multiplied with float32 accumulation; C stays float32.
// 128×128 output tile per 256-thread block (8 warps as 2×4, each 64×32 =
// 4×2 fragments of 16×16), K in steps of 32. The tensor cores' order of
// accumulation is the hardware's, so this path is not bit-identical to the
// CPU; it is checked against it within bf16 tolerance.
FOM_KERNEL void fom_matmul_bf16(float *C, const float *A, const float *B, long long M, long long N, long long K,
                                int ta, int tb, int acc) {
	using namespace nvcuda;
	__shared__ __align__(32) __nv_bfloat16 As[128][40]; // [m][k]; ld 40: a multiple of 8, rows 32-byte aligned every 16
	__shared__ __align__(32) __nv_bfloat16 Bs[32][136]; // [k][n]
	__shared__ __align__(32) float Cs[8][256];          // one 16×16 staging tile per warp
	int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
	int wm = warp / 4, wn = warp % 4;
	long long m0 = (long long)blockIdx.y * 128, n0 = (long long)blockIdx.x * 128;
	wmma::fragment<wmma::accumulator, 16, 16, 16, float> cf[4][2];
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 2; j++) wmma::fill_fragment(cf[i][j], 0.0f);
	// Each thread moves 16 elements of A's tile and 16 of B's per K step
	// (coalesced in both layouts). The next step's are fetched into registers
	// while the tensor cores work on this one.
	float ra[16], rb[16];
	auto fetch = [&](long long k0) {
		for (int t = 0; t < 16; t++) {
			int e = threadIdx.x + 256 * t;
			int mm = ta ? e % 128 : e / 32, kk = ta ? e / 128 : e % 32;
			long long m = m0 + mm, k = k0 + kk;
			ra[t] = (m < M && k < K) ? (ta ? A[k * M + m] : A[m * K + k]) : 0.0f;
			int nn = tb ? e / 32 : e % 128, kb = tb ? e % 32 : e / 128;
			long long n = n0 + nn, kq = k0 + kb;
			rb[t] = (n < N && kq < K) ? (tb ? B[n * K + kq] : B[kq * N + n]) : 0.0f;
		}
	};
	fetch(0);
	for (long long k0 = 0; k0 < K; k0 += 32) {
		for (int t = 0; t < 16; t++) {
			int e = threadIdx.x + 256 * t;
			As[ta ? e % 128 : e / 32][ta ? e / 128 : e % 32] = __float2bfloat16_rn(ra[t]);
			Bs[tb ? e % 32 : e / 128][tb ? e / 32 : e % 128] = __float2bfloat16_rn(rb[t]);
		}
		__syncthreads();
		if (k0 + 32 < K) fetch(k0 + 32);
		for (int kk = 0; kk < 32; kk += 16) {
			wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> af[4];
			wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> bf[2];
			for (int i = 0; i < 4; i++) wmma::load_matrix_sync(af[i], &As[wm * 64 + i * 16][kk], 40);
			for (int j = 0; j < 2; j++) wmma::load_matrix_sync(bf[j], &Bs[kk][wn * 32 + j * 16], 136);
			for (int i = 0; i < 4; i++)
				for (int j = 0; j < 2; j++) wmma::mma_sync(cf[i][j], af[i], bf[j], cf[i][j]);
		}
		__syncthreads();
	}
	for (int i = 0; i < 4; i++)
		for (int j = 0; j < 2; j++) {
			wmma::store_matrix_sync(Cs[warp], cf[i][j], 16, wmma::mem_row_major);
			__syncthreads();
			for (int e = lane; e < 256; e += 32) {
				long long m = m0 + wm * 64 + i * 16 + e / 16, n = n0 + wn * 32 + j * 16 + e % 16;
				if (m < M && n < N) C[m * N + n] = acc ? __fadd_rn(C[m * N + n], Cs[warp][e]) : Cs[warp][e];
			}
			__syncthreads();
		}
}
