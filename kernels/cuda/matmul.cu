// matmul.cu — the fp32 path's C = (acc ? C : 0) + op(A)·op(B), row-major, as kernels/cpu's
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
