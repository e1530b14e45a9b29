// gemm_sm90a.cu — a bf16 GEMM for Hopper (sm_90a) on wgmma (warpgroup
// matrix multiply-accumulate), reading both operands from shared memory
// through matrix descriptors. The emulator cannot run it: TestGPUHopper*
// check it on a GPU against float64, and Matmul uses it only after it has
// reproduced an exactly computable product on the device (gemm.go).
//
// It computes a 128×256 tile of C per block with two consumer warpgroups,
// each 64×256 with wgmma m64n256k16 (128 float32 accumulators per thread),
// K in steps of 64: one 128-byte row per tile row, its eight 16-byte chunks
// stored at chunk c ^ (row % 8) — the 128-byte swizzle the descriptors name.
// Tiles start on 1024-byte boundaries. Each consumer keeps one K step of
// wgmma in flight while it issues the next.
//
// It is warp-specialised. A producer warpgroup (its registers given up with
// setmaxnreg) has one thread issue bulk tensor copies (TMA) of both tiles
// into a 4-stage ring, each stage's arrival counted by an mbarrier ("full");
// the consumers wait on it, and free the stage on a second mbarrier
// ("empty") once their wgmma has read it. No block barrier in the loop. The
// operands are described by tensor maps in device memory (Backend.tensorMap),
// which zero-fill outside the matrices. Every transposition: an operand
// stored with M (N) contiguous is read M- (N-) major by wgmma, from boxes of
// 64 K rows. (A first version fed by cp.async from every thread, with a block
// barrier per K step, reached half the speed; docs/BENCHMARKS.md.)
//
// C is float32 (accumulated into with acc) or bfloat16 (cbf).
#include "mma.cuh"

#define FOM90_BM 128
#define FOM90_BN 256
#define FOM90_BK 64
#define FOM90_ST 4
#define FOM90_SA (FOM90_BM * 128) // bytes of a stage's A tile
#define FOM90_SB (FOM90_BN * 128)

// fom_desc: the wgmma matrix descriptor of a K-major, 128-byte-swizzled tile
// at p: start address >> 4 (bits 0–13), leading byte offset 16 (unused by
// swizzled K-major layouts; bits 16–29, encoded >> 4), stride byte offset
// 1024 between groups of 8 rows (bits 32–45), swizzle mode 1 = 128 bytes
// (bits 62–63).
FOM_DEV uint64_t fom_desc(const void *p) {
	uint64_t a = fom_smem(p);
	return ((a & 0x3FFFF) >> 4) | (1ull << 16) | (64ull << 32) | (1ull << 62);
}

// fom_wgmma: d (64×256 of this warpgroup) += A·B for one K step of 16; TA
// (TB) reads A (B) as M-major (N-major) instead of K-major.
template <bool TA, bool TB> FOM_DEV void fom_wgmma(float *d, uint64_t da, uint64_t db) {
	asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
	             "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}, %128, %129, p, 1, 1, %130, %131;\n}\n"
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
	             : "l"(da), "l"(db), "n"(TA ? 1 : 0), "n"(TB ? 1 : 0));
}

// fom_desc_mn: the descriptor of an M- or N-major 128-byte-swizzled tile:
// rows of 64 elements along M (N), one row per K; lbo bytes between
// 64-element chunks along M (N), sbo bytes between groups of 8 K rows.
FOM_DEV uint64_t fom_desc_mn(const void *p, int lbo, int sbo) {
	uint64_t a = fom_smem(p);
	return ((a & 0x3FFFF) >> 4) | ((uint64_t)(lbo >> 4) << 16) | ((uint64_t)(sbo >> 4) << 32) | (1ull << 62);
}

template <int N> FOM_DEV void fom_wgmma_wait() { asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory"); }

// fom90_tile: this block's (m0, n0), walking tiles in groups of 8 tile rows.
FOM_DEV void fom90_tile(long long M, long long N, long long *m0, long long *n0) {
	long long tm = (M + FOM90_BM - 1) / FOM90_BM, tn = (N + FOM90_BN - 1) / FOM90_BN, id = blockIdx.x;
	long long per = 8 * tn, first = id / per * 8, rows = tm - first < 8 ? tm - first : 8;
	*m0 = (first + id % per % rows) * FOM90_BM, *n0 = id % per / rows * FOM90_BN;
}

// fom90_store writes warpgroup wg's 64×256 accumulators (t: its thread
// index 0..127) to C at (m0 + 64·wg, n0).
FOM_DEV void fom90_store(void *C, long long M, long long N, int acc, int cbf, const float *d, long long m0, long long n0,
                         int wg, int t) {
	int lane = t % 32, w = t / 32;
	long long mrow = m0 + wg * 64 + w * 16 + lane / 4;
	bool pairs = fom_pairs(C, N);
#pragma unroll
	for (int j = 0; j < 32; j++)
#pragma unroll
		for (int h = 0; h < 2; h++) {
			long long m = mrow + h * 8, c = n0 + j * 8 + lane % 4 * 2;
			if (m >= M || c >= N) continue;
			fom_store2(C, m * N + c, pairs, c + 1 < N, acc, cbf, d[4 * j + 2 * h], d[4 * j + 2 * h + 1]);
		}
}

// fom_align1024: the first 1024-byte boundary of dynamic shared memory (the
// launch adds 1 KiB).
FOM_DEV char *fom_align1024(char *raw) { return raw + ((1024 - (fom_smem(raw) & 1023)) & 1023); }

// mbarrier operations on a barrier in shared memory.
FOM_DEV void fom_mbar_init(uint64_t *b, int count) {
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(fom_smem(b)), "r"(count) : "memory");
}
FOM_DEV void fom_mbar_expect(uint64_t *b, int bytes) {
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(fom_smem(b)), "r"(bytes) : "memory");
}
FOM_DEV void fom_mbar_arrive(uint64_t *b) {
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(fom_smem(b)) : "memory");
}
FOM_DEV void fom_mbar_wait(uint64_t *b, int parity) {
	asm volatile("{\n.reg .pred P;\nFOM_WAIT_%=:\n"
	             "mbarrier.try_wait.parity.shared::cta.b64 P, [%0], %1;\n"
	             "@!P bra FOM_WAIT_%=;\n}\n" ::"r"(fom_smem(b)),
	             "r"(parity)
	             : "memory");
}

// fom_tma_load copies the box at (x, y) (x along the contiguous dimension)
// of the tensor map at tm into shared memory at dst, completing on b.
FOM_DEV void fom_tma_load(void *dst, const void *tm, int x, int y, uint64_t *b) {
	asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3}], [%4];\n" ::"r"(
	                 fom_smem(dst)),
	             "l"(tm), "r"(x), "r"(y), "r"(fom_smem(b))
	             : "memory");
}

// FomTMA is the TMA kernel for one transposition. Stage layout: the A tile
// (16 KiB) then the B tile (32 KiB). K-major operands are one box of rows ×
// 64 K (128 bytes a row); M/N-major ones are boxes of 64 K rows × 64 M (N)
// elements, 8 KiB each, side by side along M (N): the consumer's A is then
// its own box, B the four boxes 8 KiB apart (lbo).
template <bool TA, bool TB> struct FomTMA {
	// load issues the copies of K step t into the stage at st.
	FOM_MEM static void load(char *st, const void *tmA, const void *tmB, int t, int m0, int n0, uint64_t *full) {
		int k0 = t * FOM90_BK;
		if (TA)
			for (int j = 0; j < FOM90_BM / 64; j++) fom_tma_load(st + j * 8192, tmA, m0 + 64 * j, k0, full);
		else
			fom_tma_load(st, tmA, k0, m0, full);
		if (TB)
			fom_tma_load(st + FOM90_SA, tmB, k0, n0, full);
		else
			for (int j = 0; j < FOM90_BN / 64; j++) fom_tma_load(st + FOM90_SA + j * 8192, tmB, n0 + 64 * j, k0, full);
	}
	// mma issues warpgroup wg's four K steps of the stage at st.
	FOM_MEM static void mma(float *d, const char *st, int wg, int lbo, int sbo) {
		asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
		for (int k = 0; k < FOM90_BK / 16; k++) {
			uint64_t da = TA ? fom_desc_mn(st + wg * 8192 + k * 2048, lbo, sbo) : fom_desc(st + wg * 64 * 128 + k * 32);
			uint64_t db = TB ? fom_desc(st + FOM90_SA + k * 32) : fom_desc_mn(st + FOM90_SA + k * 2048, lbo, sbo);
			fom_wgmma<TA, !TB>(d, da, db);
		}
		asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
	}
	FOM_MEM static void run(void *C, const void *tmA, const void *tmB, long long M, long long N, long long K, int acc, int cbf,
	                        int lbo, int sbo, char *sm, uint64_t *full, uint64_t *empty) {
		long long m0, n0;
		fom90_tile(M, N, &m0, &n0);
		int kt = (int)((K + FOM90_BK - 1) / FOM90_BK), wg = threadIdx.x / 128;
		if (wg == 0) {
			asm volatile("setmaxnreg.dec.sync.aligned.u32 40;\n");
			if (threadIdx.x == 0) {
				for (int t = 0; t < kt; t++) {
					int s = t % FOM90_ST;
					fom_mbar_wait(&empty[s], (t / FOM90_ST & 1) ^ 1); // a fresh barrier's "previous phase" is complete
					fom_mbar_expect(&full[s], FOM90_SA + FOM90_SB);
					load(sm + s * (FOM90_SA + FOM90_SB), tmA, tmB, t, (int)m0, (int)n0, &full[s]);
				}
			}
			return;
		}
		asm volatile("setmaxnreg.inc.sync.aligned.u32 232;\n");
		float d[128];
#pragma unroll
		for (int i = 0; i < 128; i++) d[i] = 0.0f;
		for (int t = 0; t < kt; t++) {
			int s = t % FOM90_ST;
			fom_mbar_wait(&full[s], t / FOM90_ST & 1);
			mma(d, sm + s * (FOM90_SA + FOM90_SB), wg - 1, lbo, sbo);
			fom_wgmma_wait<1>();
			if (t > 0) fom_mbar_arrive(&empty[(t - 1) % FOM90_ST]);
		}
		fom_wgmma_wait<0>();
		fom90_store(C, M, N, acc, cbf, d, m0, n0, wg - 1, threadIdx.x % 128);
	}
};

// fom_gemm90tma_128x256: ta (tb) as gemm.cu's; lbo and sbo are the
// descriptor strides of M/N-major tiles (fom_desc_mn).
FOM_KERNEL void __launch_bounds__(384, 1) fom_gemm90tma_128x256(void *C, const void *tmA, const void *tmB, long long M,
                                                                 long long N, long long K, int ta, int tb, int acc, int cbf,
                                                                 int lbo, int sbo) {
	FOM_DYN_SMEM(char, raw);
	char *sm = fom_align1024(raw);
	uint64_t *full = (uint64_t *)(sm + FOM90_ST * (FOM90_SA + FOM90_SB)), *empty = full + FOM90_ST;
	if (threadIdx.x == 0) {
		for (int s = 0; s < FOM90_ST; s++) {
			fom_mbar_init(&full[s], 1);
			fom_mbar_init(&empty[s], 256);
		}
		asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
	}
	__syncthreads();
	if (ta && tb)
		FomTMA<true, true>::run(C, tmA, tmB, M, N, K, acc, cbf, lbo, sbo, sm, full, empty);
	else if (ta)
		FomTMA<true, false>::run(C, tmA, tmB, M, N, K, acc, cbf, lbo, sbo, sm, full, empty);
	else if (tb)
		FomTMA<false, true>::run(C, tmA, tmB, M, N, K, acc, cbf, lbo, sbo, sm, full, empty);
	else
		FomTMA<false, false>::run(C, tmA, tmB, M, N, K, acc, cbf, lbo, sbo, sm, full, empty);
}
