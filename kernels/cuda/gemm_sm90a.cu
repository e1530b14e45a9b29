// gemm_sm90a.cu — an experimental bf16 GEMM for Hopper (sm_90a): wgmma
// (warpgroup matrix multiply-accumulate) reading both operands from shared
// memory through matrix descriptors, 128-byte-swizzled tiles filled by
// cp.async through a 4-stage ring. Only the NT case (A [M][K], B [N][K], both
// K-major, the forward x·Wᵀ), the others stay on gemm.cu. The emulator cannot
// run wgmma: this kernel is checked on a GPU (TestGEMMBF16Configs compares
// every configuration with float64 there) and is not chosen by Matmul until
// it has been.
//
// Contract as gemm.cu's (bf16 operands with leading dimensions multiples of
// 8, zero-padded along K; C float32, or bf16 with cbf).
//
// Tiles: 128×256 of C per block of two warpgroups (256 threads), each
// warpgroup 64×256 with wgmma m64n256k16 (128 float32 accumulators per
// thread); K in steps of 64 (one 128-byte row per tile row). A stage is the
// A tile (128 rows × 128 bytes) and the B tile (256 rows × 128 bytes), each
// row's eight 16-byte chunks stored at chunk c ^ (row % 8): the 128-byte
// swizzle the descriptors name, which also keeps ldmatrix-free wgmma reads
// free of bank conflicts. Tiles start on 1024-byte boundaries.
#include "mma.cuh"

#define FOM90_BM 128
#define FOM90_BN 256
#define FOM90_BK 64
#define FOM90_ST 4

// fom_desc: the wgmma matrix descriptor of a K-major, 128-byte-swizzled tile
// at p: start address >> 4 (bits 0–13), leading byte offset 16 (unused by
// swizzled K-major layouts; bits 16–29, encoded >> 4), stride byte offset
// 1024 between groups of 8 rows (bits 32–45), swizzle mode 1 = 128 bytes
// (bits 62–63).
FOM_DEV uint64_t fom_desc(const void *p) {
	uint64_t a = fom_smem(p);
	return ((a & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// fom_wgmma: d (64×256 of this warpgroup) += A·B for one K step of 16.
FOM_DEV void fom_wgmma(float *d, uint64_t da, uint64_t db) {
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, 0, 0;\n}\n"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),
	               "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),
	               "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),
	               "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),
	               "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),
	               "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
	               "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),
	               "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]), "+f"(d[64]),
	               "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]), "+f"(d[72]),
	               "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]), "+f"(d[80]),
	               "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]), "+f"(d[88]),
	               "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]), "+f"(d[96]),
	               "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]), "+f"(d[104]),
	               "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
	               "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]),
	               "+f"(d[119]), "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]),
	               "+f"(d[126]), "+f"(d[127])
	             : "l"(da), "l"(db));
}

// fom_swz_tile issues the cp.async copies of rows r0.. (of rows, below
// rmax) of a K-major matrix, 64 columns from k0 (below kmax), into a
// swizzled tile.
FOM_DEV void fom_swz_tile(char *dst, const fom_bf16_t *src, long long ld, int rows, long long r0, long long rmax,
                          long long k0, long long kmax) {
	for (int e = threadIdx.x; e < rows * 8; e += 256) {
		int r = e / 8, c = e % 8;
		bool ok = r0 + r < rmax && k0 + c * 8 < kmax;
		fom_cp16(dst + r * 128 + ((c ^ (r & 7)) << 4), ok ? src + (r0 + r) * ld + k0 + c * 8 : src, ok ? 16 : 0);
	}
}

FOM_KERNEL void __launch_bounds__(256, 1) fom_gemm90_128x256(void *C, const fom_bf16_t *A, const fom_bf16_t *B, long long M,
                                                              long long N, long long K, long long lda, long long ldb, int ta,
                                                              int tb, int acc, int cbf) {
	FOM_DYN_SMEM(char, raw);
	// 1024-byte alignment for the swizzle pattern (the launch adds 1 KiB).
	char *sm = raw + ((1024 - (fom_smem(raw) & 1023)) & 1023);
	constexpr int SA = FOM90_BM * 128, SB = FOM90_BN * 128;
	long long tm = (M + FOM90_BM - 1) / FOM90_BM, tn = (N + FOM90_BN - 1) / FOM90_BN, id = blockIdx.x;
	long long per = 8 * tn, first = id / per * 8, rows = tm - first < 8 ? tm - first : 8;
	long long m0 = (first + id % per % rows) * FOM90_BM, n0 = id % per / rows * FOM90_BN;
	long long kt = (K + FOM90_BK - 1) / FOM90_BK;
	auto load = [&](long long t) {
		char *st = sm + t % FOM90_ST * (SA + SB);
		fom_swz_tile(st, A, lda, FOM90_BM, m0, M, t * FOM90_BK, K);
		fom_swz_tile(st + SA, B, ldb, FOM90_BN, n0, N, t * FOM90_BK, K);
	};
	for (int s = 0; s < FOM90_ST - 1; s++) {
		if (s < kt) load(s);
		fom_cp_commit();
	}
	int wg = threadIdx.x / 128;
	float d[128];
#pragma unroll
	for (int i = 0; i < 128; i++) d[i] = 0.0f;
	for (long long t = 0; t < kt; t++) {
		fom_cp_wait<FOM90_ST - 2>();
		asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); // cp.async's writes, then wgmma's reads
		__syncthreads();
		if (t + FOM90_ST - 1 < kt) load(t + FOM90_ST - 1);
		fom_cp_commit();
		const char *st = sm + t % FOM90_ST * (SA + SB);
		asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
		for (int k = 0; k < FOM90_BK / 16; k++)
			fom_wgmma(d, fom_desc(st + wg * 64 * 128 + k * 32), fom_desc(st + SA + k * 32));
		asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
		asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
	}
	int lane = threadIdx.x % 32, w = threadIdx.x / 32 % 4;
	long long mrow = m0 + wg * 64 + w * 16 + lane / 4;
	bool pairs = N % 2 == 0 && ((size_t)C & 7) == 0;
#pragma unroll
	for (int j = 0; j < 32; j++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			long long m = mrow + h * 8, c = n0 + j * 8 + lane % 4 * 2;
			if (m >= M || c >= N) continue;
			float v0 = d[4 * j + 2 * h], v1 = d[4 * j + 2 * h + 1];
			long long o = m * N + c;
			if (cbf) {
				fom_bf16_t *p = (fom_bf16_t *)C + o;
				if (pairs)
					*(uint32_t *)p = fom_pack(v0, v1);
				else {
					p[0] = fom_bf16_bits(v0);
					if (c + 1 < N) p[1] = fom_bf16_bits(v1);
				}
				continue;
			}
			float *p = (float *)C + o;
			if (pairs) {
				float2 x = acc ? *(float2 *)p : make_float2(0.0f, 0.0f);
				*(float2 *)p = make_float2(x.x + v0, x.y + v1);
			} else {
				p[0] = acc ? p[0] + v0 : v0;
				if (c + 1 < N) p[1] = acc ? p[1] + v1 : v1;
			}
		}
}
