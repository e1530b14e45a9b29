// gemm.cu — the bf16 path's matrix products on tensor cores (sm_80 and
// newer): C = (acc ? C : 0) + op(A)·op(B) with A and B in bfloat16 and
// float32 accumulation, C float32 (or bfloat16 when cbf is set).
//
// A and B are bfloat16 with leading dimensions lda and ldb (multiples of 8,
// so every row starts on a 16-byte boundary): A is stored [M][lda] (K
// columns used) or, transposed, [K][lda] (M used); B [K][ldb] (N used) or,
// transposed, [N][ldb] (K used). Where K is the stored row's inner dimension
// the elements in [K, ld) must be zero (Backend's conversion writes them).
//
// Scheme: one block computes a BM×BN tile of C; its warps form a WGM×WGN
// grid, each warp a (BM/WGM)×(BN/WGN) tile of 16×8 mma.sync fragments.
// K advances in steps of BK through an ST-stage ring of shared-memory tiles
// filled by cp.async (16-byte copies, zero-filled outside the matrices), so
// that ST−1 tiles are in flight while the tensor cores work on one. Tiles
// are stored as they lie in global memory (k-contiguous or m/n-contiguous)
// with each row padded by 16 bytes, which makes ldmatrix's eight row
// addresses fall on distinct banks; ldmatrix's .trans form reads the
// m/n-contiguous layouts, so no transposition takes a pass of its own. Blocks
// walk the tiles in groups of 8 tile rows, so that the A and B tiles a wave
// of blocks reads stay in L2.
#include "mma.cuh"

// FOM_GEMM_SPAN: bfloat16 elements of one operand's tile in one stage, the
// larger of its two layouts ([R][BK+8] or [BK][R+8]). gemmConfig.shared
// (gemm.go) computes the same.
#define FOM_GEMM_SPAN(R, BK) ((R) * ((BK) + 8) > (BK) * ((R) + 8) ? (R) * ((BK) + 8) : (BK) * ((R) + 8))

template <int BM, int BN, int BK, int WGM, int WGN, int ST, bool TA, bool TB> struct FomGemm {
	static constexpr int NT = WGM * WGN * 32;
	static constexpr int WM = BM / WGM, WN = BN / WGN; // a warp's tile
	static constexpr int FM = WM / 16, FN = WN / 8;     // its fragments
	static constexpr int LDA = TA ? BM + 8 : BK + 8, LDB = TB ? BK + 8 : BN + 8;
	static constexpr int SA = FOM_GEMM_SPAN(BM, BK), SB = FOM_GEMM_SPAN(BN, BK);
	static_assert(WM % 16 == 0 && WN % 16 == 0 && BK % 16 == 0, "fragment tiling");
	static_assert((BM * BK / 8) % NT == 0 && (BN * BK / 8) % NT == 0, "whole copies per thread");

	const fom_bf16_t *A, *B;
	long long M, N, K, lda, ldb, m0, n0;
	fom_bf16_t *smem;

	// tile issues the copies of a rows×cols tile as stored (cols contiguous,
	// in chunks of 8) from (r0, c0) of the matrix at src (row stride lds)
	// into dst (row stride ld); element (r, c) is read while r < rmax and
	// c < cmax, and zero-filled beyond.
	FOM_MEM static void tile(fom_bf16_t *dst, int ld, const fom_bf16_t *src, long long lds, int rows, int cols,
	                         long long r0, long long c0, long long rmax, long long cmax) {
		const int chunks = cols / 8;
#pragma unroll
		for (int i = 0; i < rows * chunks / NT; i++) {
			int e = (int)threadIdx.x + i * NT, r = e / chunks, c = (e % chunks) * 8;
			bool ok = r0 + r < rmax && c0 + c < cmax;
			fom_cp16(dst + r * ld + c, ok ? src + (r0 + r) * lds + c0 + c : src, ok ? 16 : 0);
		}
	}
	// load issues the copies of K tile kt into stage s.
	FOM_MEM void load(int s, long long kt) {
		fom_bf16_t *sa = smem + s * (SA + SB), *sb = sa + SA;
		long long k0 = kt * BK;
		if (TA)
			tile(sa, LDA, A, lda, BK, BM, k0, m0, K, M);
		else
			tile(sa, LDA, A, lda, BM, BK, m0, k0, M, K);
		if (TB)
			tile(sb, LDB, B, ldb, BN, BK, n0, k0, N, K);
		else
			tile(sb, LDB, B, ldb, BK, BN, k0, n0, K, N);
	}

	// mma multiplies stage s into acc.
	FOM_MEM void mma(int s, float (&acc)[FM][FN][4]) {
		const fom_bf16_t *sa = smem + s * (SA + SB), *sb = sa + SA;
		int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
		int wm0 = warp / WGN * WM, wn0 = warp % WGN * WN;
		int j = lane / 8, r = lane % 8;
#pragma unroll
		for (int kk = 0; kk < BK; kk += 16) {
			uint32_t af[FM][4], bf[FN][2];
#pragma unroll
			for (int i = 0; i < FM; i++) {
				if (TA)
					fom_ldsm4t(af[i], sa + (kk + r + j / 2 * 8) * LDA + wm0 + i * 16 + j % 2 * 8);
				else
					fom_ldsm4(af[i], sa + (wm0 + i * 16 + lane % 16) * LDA + kk + lane / 16 * 8);
			}
#pragma unroll
			for (int p = 0; p < FN / 2; p++) {
				uint32_t q[4];
				if (TB)
					fom_ldsm4(q, sb + (wn0 + p * 16 + r + j / 2 * 8) * LDB + kk + j % 2 * 8);
				else
					fom_ldsm4t(q, sb + (kk + r + j % 2 * 8) * LDB + wn0 + p * 16 + j / 2 * 8);
				bf[2 * p][0] = q[0], bf[2 * p][1] = q[1], bf[2 * p + 1][0] = q[2], bf[2 * p + 1][1] = q[3];
			}
#pragma unroll
			for (int i = 0; i < FM; i++)
#pragma unroll
				for (int n = 0; n < FN; n++) fom_mma(acc[i][n], af[i], bf[n]);
		}
	}

	FOM_MEM void store(void *C, int accum, int cbf, const float (&acc)[FM][FN][4]) {
		int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
		long long mw = m0 + warp / WGN * WM + lane / 4, nw = n0 + warp % WGN * WN + lane % 4 * 2;
		bool pairs = fom_pairs(C, N);
#pragma unroll
		for (int i = 0; i < FM; i++)
#pragma unroll
			for (int n = 0; n < FN; n++)
#pragma unroll
				for (int h = 0; h < 2; h++) {
					long long m = mw + i * 16 + h * 8, c = nw + n * 8;
					if (m >= M || c >= N) continue;
					fom_store2(C, m * N + c, pairs, c + 1 < N, accum, cbf, acc[i][n][2 * h], acc[i][n][2 * h + 1]);
				}
	}

	FOM_MEM void run(void *C, int accum, int cbf) {
		float acc[FM][FN][4];
#pragma unroll
		for (int i = 0; i < FM; i++)
#pragma unroll
			for (int n = 0; n < FN; n++)
#pragma unroll
				for (int e = 0; e < 4; e++) acc[i][n][e] = 0.0f;
		long long kt = (K + BK - 1) / BK;
#pragma unroll
		for (int s = 0; s < ST - 1; s++) {
			if (s < kt) load(s, s);
			fom_cp_commit();
		}
		for (long long t = 0; t < kt; t++) {
			fom_cp_wait<ST - 2>(); // tile t has landed (this thread's copies) ...
			__syncthreads();       // ... every thread's, and stage (t−1)%ST is free
			if (t + ST - 1 < kt) load((int)((t + ST - 1) % ST), t + ST - 1);
			fom_cp_commit();
			mma((int)(t % ST), acc);
		}
		store(C, accum, cbf, acc);
	}
};

// fom_gemm runs the configuration on the tile of this block.
template <int BM, int BN, int BK, int WGM, int WGN, int ST>
FOM_DEV void fom_gemm(void *C, const fom_bf16_t *A, const fom_bf16_t *B, long long M, long long N, long long K,
                      long long lda, long long ldb, int ta, int tb, int acc, int cbf) {
	FOM_DYN_SMEM(fom_bf16_t, smem);
	// Grouped order: 8 tile rows at a time, column by column within a group.
	long long tm = (M + BM - 1) / BM, tn = (N + BN - 1) / BN, id = blockIdx.x;
	long long per = 8 * tn, first = id / per * 8, rows = tm - first < 8 ? tm - first : 8;
	long long m0 = (first + id % per % rows) * BM, n0 = id % per / rows * BN;
#define FOM_GEMM_CASE(TA, TB)                                                                                  \
	FomGemm<BM, BN, BK, WGM, WGN, ST, TA, TB>{A, B, M, N, K, lda, ldb, m0, n0, smem}.run(C, acc, cbf)
	if (ta && tb)
		FOM_GEMM_CASE(true, true);
	else if (ta)
		FOM_GEMM_CASE(true, false);
	else if (tb)
		FOM_GEMM_CASE(false, true);
	else
		FOM_GEMM_CASE(false, false);
#undef FOM_GEMM_CASE
}

// The configurations (name: BM×BN; BK 32, 2×2 warps, 4 stages). gemm.go's
// table gives each one's threads and shared memory. On an H200, 128×128 was
// the fastest of 128×256 (3 stages, 8 warps), 128×128 with BK 64 and 64×128
// at most shapes measured and within 4% of the fastest at the others
// (docs/BENCHMARKS.md); 64×128 makes more blocks for small products.
FOM_KERNEL void __launch_bounds__(128) fom_gemm_128x128(void *C, const fom_bf16_t *A, const fom_bf16_t *B, long long M,
                                                        long long N, long long K, long long lda, long long ldb, int ta,
                                                        int tb, int acc, int cbf) {
	fom_gemm<128, 128, 32, 2, 2, 4>(C, A, B, M, N, K, lda, ldb, ta, tb, acc, cbf);
}

FOM_KERNEL void __launch_bounds__(128) fom_gemm_64x128(void *C, const fom_bf16_t *A, const fom_bf16_t *B, long long M,
                                                       long long N, long long K, long long lda, long long ldb, int ta,
                                                       int tb, int acc, int cbf) {
	fom_gemm<64, 128, 32, 2, 2, 4>(C, A, B, M, N, K, lda, ldb, ta, tb, acc, cbf);
}

// fom_bf16_pad: dst[r][c] = src[r·cols + c] for c < cols, 0 for cols ≤ c <
// ld: a bfloat16 matrix given rows 16-byte aligned; one thread per element.
FOM_KERNEL void fom_bf16_pad(fom_bf16_t *dst, const fom_bf16_t *src, long long rows, long long cols, long long ld) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (e >= rows * ld) return;
	long long r = e / ld, c = e % ld;
	dst[e] = c < cols ? src[r * cols + c] : (fom_bf16_t)0;
}

// fom_to_bf16: dst[r][c] = bf16(src[r·cols + c]) for c < cols, 0 for
// cols ≤ c < ld; one thread per 8 elements (one 16-byte store).
FOM_KERNEL void fom_to_bf16(fom_bf16_t *dst, const float *src, long long rows, long long cols, long long ld) {
	long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x, per = ld / 8;
	if (e >= rows * per) return;
	long long r = e / per, c = e % per * 8;
	const float *s = src + r * cols + c;
	float v[8];
	if (c + 8 <= cols && ((size_t)s & 15) == 0) {
		float4 x = *(const float4 *)s, y = *(const float4 *)(s + 4);
		v[0] = x.x, v[1] = x.y, v[2] = x.z, v[3] = x.w, v[4] = y.x, v[5] = y.y, v[6] = y.z, v[7] = y.w;
	} else {
		for (int i = 0; i < 8; i++) v[i] = c + i < cols ? s[i] : 0.0f;
	}
	uint4 o = {fom_pack(v[0], v[1]), fom_pack(v[2], v[3]), fom_pack(v[4], v[5]), fom_pack(v[6], v[7])};
	*(uint4 *)(dst + r * ld + c) = o;
}
