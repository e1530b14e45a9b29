// flash.cu — the bf16 path's attention on tensor cores (sm_80 and newer), in
// the manner of FlashAttention-2: causal, document-masked, grouped-query,
// head dimensions that are multiples of 16 up to 128 (computed in tiles of
// HDP = 64 or 128 columns, the columns beyond HD zero-filled).
//
// Inputs are bfloat16 copies of q, k, v (and dout) in the layouts of
// kernels.AttnShape: q [B,T,NH,HD], k and v [B,T,KVH,HD]; out, dq, dk, dv
// and lse are float32 as the backend's contract has them.
//
// Forward: a block owns 64 query rows of one head (4 warps, 16 rows each)
// and walks the key blocks its rows can see, 64 keys at a time through a
// double-buffered cp.async ring: S = Q·Kᵀ on tensor cores, an online softmax
// in registers (exp2 of scores pre-scaled by log2 e, running maximum and sum
// per row), then O += P·V with P taken straight from the S accumulators
// (their fragment layout is the A operand's). Key blocks entirely before the
// first row's document or after the last row are skipped; masks are applied
// only to blocks that cross a document start or the diagonal.
//
// Backward recomputes P per tile from the saved log-sum-exp, in two kernels
// so that no output is written by two blocks (no atomics, a fixed order of
// every sum): dkdv owns 64 keys of one key/value head and walks, for each
// query head of its group in order, the query blocks that can see its keys
// (dV += Pᵀ·dO, dK += dSᵀ·Q); dq owns 64 query rows and walks their key
// blocks (dQ += dS·K), with dS = P∘(dP − D), dP = dO·Vᵀ and D = rowsum(dO∘O).
#include "mma.cuh"

#define FOM_LOG2E_F 1.4426950408889634f
#define FOM_LN2_F 0.6931471805599453f

// FomTile moves [R][HDP] bfloat16 tiles (rows padded to HDP + 8) and reads
// mma fragments from them.
template <int HDP, int NT> struct FomTile {
	static constexpr int LD = HDP + 8;

	// load issues cp.async copies of rows r0..r0+R−1 (those below rmax) of
	// the matrix at src with row stride rs, columns below hd; the rest of
	// the tile is zero-filled.
	template <int R>
	FOM_MEM static void load(fom_bf16_t *dst, const fom_bf16_t *src, long long rs, long long r0, long long rmax, int hd) {
		constexpr int CH = HDP / 8;
#pragma unroll
		for (int i = 0; i < (R * CH + NT - 1) / NT; i++) {
			int e = (int)threadIdx.x + i * NT;
			if (R * CH % NT != 0 && e >= R * CH) break;
			int r = e / CH, c = e % CH * 8;
			bool ok = r0 + r < rmax && c < hd;
			fom_cp16(dst + r * LD + c, ok ? src + (r0 + r) * rs + c : src, ok ? 16 : 0);
		}
	}

	// a reads the A fragment of rows row..row+15, columns k..k+15.
	FOM_MEM static void a(uint32_t *f, const fom_bf16_t *s, int row, int k) {
		int lane = threadIdx.x % 32;
		fom_ldsm4(f, s + (row + lane % 16) * LD + k + lane / 16 * 8);
	}
	// bn reads the B fragments of two 8-wide n tiles from a tile stored
	// [n][k] (rows n..n+15, columns k..k+15).
	FOM_MEM static void bn(uint32_t (&f)[2][2], const fom_bf16_t *s, int n, int k) {
		int lane = threadIdx.x % 32, j = lane / 8, r = lane % 8;
		uint32_t q[4];
		fom_ldsm4(q, s + (n + r + j / 2 * 8) * LD + k + j % 2 * 8);
		f[0][0] = q[0], f[0][1] = q[1], f[1][0] = q[2], f[1][1] = q[3];
	}
	// bk reads the B fragments of two 8-wide n tiles from a tile stored
	// [k][n] (rows k..k+15, columns n..n+15).
	FOM_MEM static void bk(uint32_t (&f)[2][2], const fom_bf16_t *s, int k, int n) {
		int lane = threadIdx.x % 32, j = lane / 8, r = lane % 8;
		uint32_t q[4];
		fom_ldsm4t(q, s + (k + r + j % 2 * 8) * LD + n + j / 2 * 8);
		f[0][0] = q[0], f[0][1] = q[1], f[1][0] = q[2], f[1][1] = q[3];
	}
};

// fom_pfrag packs accumulators c (16 rows × 16 columns as two n tiles) into
// the A fragment of the next product, rounded to bfloat16.
FOM_DEV void fom_pfrag(uint32_t *a, const float *c0, const float *c1) {
	a[0] = fom_pack(c0[0], c0[1]), a[1] = fom_pack(c0[2], c0[3]);
	a[2] = fom_pack(c1[0], c1[1]), a[3] = fom_pack(c1[2], c1[3]);
}

// fom_kv_step starts the copies of key block j+1 (of nkb, the first at key
// kfirst) into the other stage of the K/V double buffer at skv, waits until
// block j has landed for every thread of the block, and returns block j's K
// tile (its V tile follows BC rows later).
template <int BC, class Tile>
FOM_DEV const fom_bf16_t *fom_kv_step(fom_bf16_t *skv, const fom_bf16_t *kh, const fom_bf16_t *vh, long long kvs, int j,
                                      int nkb, int kfirst, int T, int HD) {
	constexpr int LD = Tile::LD;
	if (j + 1 < nkb) {
		fom_bf16_t *nx = skv + (j + 1) % 2 * 2 * BC * LD;
		int k1 = kfirst + (j + 1) * BC;
		Tile::template load<BC>(nx, kh, kvs, k1, T, HD);
		Tile::template load<BC>(nx + BC * LD, vh, kvs, k1, T, HD);
	}
	fom_cp_commit();
	fom_cp_wait<1>();
	__syncthreads();
	return skv + j % 2 * 2 * BC * LD;
}

// fom_mma_abt2 computes two products side by side for one warp's 16 rows:
// s = A1·B1ᵀ and t = A2·B2ᵀ, with A1 (A2) the rows row..row+15 of the tile
// at a1 (a2) and B1 (B2) the NB rows of the tile at b1 (b2), all HDP wide —
// Sᵀ and dPᵀ in dkdv, S and dP in dq.
template <int HDP, int NB, class Tile>
FOM_DEV void fom_mma_abt2(float (&s)[NB / 8][4], float (&t)[NB / 8][4], const fom_bf16_t *a1, const fom_bf16_t *a2,
                          const fom_bf16_t *b1, const fom_bf16_t *b2, int row) {
#pragma unroll
	for (int i = 0; i < NB / 8; i++)
#pragma unroll
		for (int e = 0; e < 4; e++) s[i][e] = t[i][e] = 0.0f;
#pragma unroll
	for (int kk = 0; kk < HDP / 16; kk++) {
		uint32_t f1[4], f2[4];
		Tile::a(f1, a1, row, kk * 16);
		Tile::a(f2, a2, row, kk * 16);
#pragma unroll
		for (int p = 0; p < NB / 16; p++) {
			uint32_t bf[2][2];
			Tile::bn(bf, b1, p * 16, kk * 16);
			fom_mma(s[2 * p], f1, bf[0]);
			fom_mma(s[2 * p + 1], f1, bf[1]);
			Tile::bn(bf, b2, p * 16, kk * 16);
			fom_mma(t[2 * p], f2, bf[0]);
			fom_mma(t[2 * p + 1], f2, bf[1]);
		}
	}
}

// fom_mma_acc: o (16 rows × HDP) += P·X, where P (16 × 16·KT) is held as
// accumulators p (a product's result, e.g. probabilities) and X is the
// 16·KT × HDP tile at s stored [k][n] — P·V, Pᵀ·dO, dSᵀ·Q and dS·K alike.
template <int HDP, int KT, class Tile>
FOM_DEV void fom_mma_acc(float (&o)[HDP / 8][4], const float (&p)[2 * KT][4], const fom_bf16_t *s) {
#pragma unroll
	for (int kk = 0; kk < KT; kk++) {
		uint32_t a[4];
		fom_pfrag(a, p[2 * kk], p[2 * kk + 1]);
#pragma unroll
		for (int n = 0; n < HDP / 16; n++) {
			uint32_t bf[2][2];
			Tile::bk(bf, s, kk * 16, n * 16);
			fom_mma(o[2 * n], a, bf[0]);
			fom_mma(o[2 * n + 1], a, bf[1]);
		}
	}
}

FOM_DEV float fom_quad_max(float x) {
	x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 1));
	return fmaxf(x, __shfl_xor_sync(0xffffffffu, x, 2));
}
FOM_DEV float fom_quad_sum(float x) {
	x += __shfl_xor_sync(0xffffffffu, x, 1);
	return x + __shfl_xor_sync(0xffffffffu, x, 2);
}

// fom_sees: query row t (document start d) attends to key s.
FOM_DEV bool fom_sees(int t, int d, int s) { return s <= t && s >= d; }

// fom_flash_span: the key blocks [first, end) a block of query rows
// [q0, qlast] attends to (block size BC).
template <int BC> FOM_DEV void fom_flash_span(const int *dsb, int q0, int qlast, int *first, int *n) {
	*first = dsb[q0] / BC * BC;
	*n = (qlast + 1 - *first + BC - 1) / BC;
}

template <int HDP>
FOM_DEV void fom_flash_fwd(float *out, float *lse, const fom_bf16_t *q, const fom_bf16_t *k, const fom_bf16_t *v,
                           const int *ds, int T, int NH, int KVH, int HD, float scale) {
	constexpr int BR = 64, BC = 64, NT = 128, NO = HDP / 8;
	typedef FomTile<HDP, NT> Tile;
	constexpr int LD = Tile::LD;
	FOM_DYN_SMEM(fom_bf16_t, sm);
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	int h = blockIdx.y, b = blockIdx.z, g = h / (NH / KVH), q0 = blockIdx.x * BR;
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	const fom_bf16_t *qh = q + (long long)b * T * qs + h * HD;
	const fom_bf16_t *kh = k + (long long)b * T * kvs + g * HD, *vh = v + (long long)b * T * kvs + g * HD;
	const int *dsb = ds + (long long)b * T;
	int qlast = (q0 + BR < T ? q0 + BR : T) - 1, kfirst, nkb;
	fom_flash_span<BC>(dsb, q0, qlast, &kfirst, &nkb);
	int dlast = dsb[qlast];
	fom_bf16_t *sq = sm, *skv = sm + BR * LD; // stage s: K at skv + 2s·BC·LD, V after it
	Tile::template load<BR>(sq, qh, qs, q0, T, HD);
	Tile::template load<BC>(skv, kh, kvs, kfirst, T, HD);
	Tile::template load<BC>(skv + BC * LD, vh, kvs, kfirst, T, HD);
	fom_cp_commit();

	int row[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};
	int dst[2];
	for (int i = 0; i < 2; i++) dst[i] = row[i] < T ? dsb[row[i]] : T; // rows past T see nothing
	const float c = scale * FOM_LOG2E_F;
	float o[NO][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
#pragma unroll
	for (int i = 0; i < NO; i++) o[i][0] = o[i][1] = o[i][2] = o[i][3] = 0.0f;
	uint32_t qf[HDP / 16][4];
	for (int j = 0; j < nkb; j++) {
		int k0 = kfirst + j * BC;
		const fom_bf16_t *sk = fom_kv_step<BC, Tile>(skv, kh, vh, kvs, j, nkb, kfirst, T, HD), *sv = sk + BC * LD;
		if (j == 0)
#pragma unroll
			for (int kk = 0; kk < HDP / 16; kk++) Tile::a(qf[kk], sq, warp * 16, kk * 16);
		float s[BC / 8][4];
#pragma unroll
		for (int i = 0; i < BC / 8; i++) s[i][0] = s[i][1] = s[i][2] = s[i][3] = 0.0f;
#pragma unroll
		for (int kk = 0; kk < HDP / 16; kk++)
#pragma unroll
			for (int p = 0; p < BC / 16; p++) {
				uint32_t bf[2][2];
				Tile::bn(bf, sk, p * 16, kk * 16);
				fom_mma(s[2 * p], qf[kk], bf[0]);
				fom_mma(s[2 * p + 1], qf[kk], bf[1]);
			}
		bool full = k0 + BC - 1 <= q0 && k0 >= dlast;
		float mx[2] = {m[0], m[1]};
#pragma unroll
		for (int i = 0; i < BC / 8; i++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float x = s[i][e] * c;
				if (!full && !fom_sees(row[e / 2], dst[e / 2], k0 + i * 8 + lane % 4 * 2 + e % 2)) x = -INFINITY;
				s[i][e] = x;
				mx[e / 2] = fmaxf(mx[e / 2], x);
			}
		float base[2], sum[2] = {0.0f, 0.0f};
#pragma unroll
		for (int r = 0; r < 2; r++) {
			mx[r] = fom_quad_max(mx[r]);
			base[r] = mx[r] == -INFINITY ? 0.0f : mx[r];
			float alpha = exp2f(m[r] - base[r]);
			m[r] = mx[r];
			l[r] *= alpha;
#pragma unroll
			for (int i = 0; i < NO; i++) o[i][2 * r] *= alpha, o[i][2 * r + 1] *= alpha;
		}
#pragma unroll
		for (int i = 0; i < BC / 8; i++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float p = exp2f(s[i][e] - base[e / 2]);
				s[i][e] = p;
				sum[e / 2] += p;
			}
		l[0] += sum[0], l[1] += sum[1];
		fom_mma_acc<HDP, BC / 16, Tile>(o, s, sv);
		__syncthreads(); // every warp is done with this stage before it is refilled
	}
#pragma unroll
	for (int r = 0; r < 2; r++) {
		float tot = fom_quad_sum(l[r]);
		if (row[r] >= T) continue;
		float inv = 1.0f / tot;
		float *orow = out + ((long long)b * T + row[r]) * qs + h * HD;
#pragma unroll
		for (int i = 0; i < NO; i++) {
			int d = i * 8 + lane % 4 * 2;
			if (d < HD) orow[d] = o[i][2 * r] * inv, orow[d + 1] = o[i][2 * r + 1] * inv;
		}
		if (lane % 4 == 0) lse[((long long)b * NH + h) * T + row[r]] = m[r] * FOM_LN2_F + logf(tot);
	}
}

FOM_KERNEL void __launch_bounds__(128) fom_flash_fwd_64(float *out, float *lse, const fom_bf16_t *q, const fom_bf16_t *k,
                                                        const fom_bf16_t *v, const int *ds, int B, int T, int NH, int KVH,
                                                        int HD, float scale) {
	fom_flash_fwd<64>(out, lse, q, k, v, ds, T, NH, KVH, HD, scale);
}

FOM_KERNEL void __launch_bounds__(128) fom_flash_fwd_128(float *out, float *lse, const fom_bf16_t *q, const fom_bf16_t *k,
                                                         const fom_bf16_t *v, const int *ds, int B, int T, int NH, int KVH,
                                                         int HD, float scale) {
	fom_flash_fwd<128>(out, lse, q, k, v, ds, T, NH, KVH, HD, scale);
}

// fom_flash_dkdv: dK and dV of 64 keys of one key/value head (4 warps, 16
// keys each), over every query head of the group in order and, for each,
// the query blocks of BQ rows that can see these keys. Per tile, with the
// keys as rows: Sᵀ = K·Qᵀ, Pᵀ = exp(Sᵀ·scale − lse), dV += Pᵀ·dO,
// dPᵀ = V·dOᵀ, dSᵀ = Pᵀ∘(dPᵀ − D), dK += dSᵀ·Q (scaled at the end).
template <int HDP>
FOM_DEV void fom_flash_dkdv(float *dk, void *dv, int dvbf, const fom_bf16_t *dout, const fom_bf16_t *q, const fom_bf16_t *k,
                            const fom_bf16_t *v, const float *lse, const float *D, const int *ds, int T, int NH, int KVH,
                            int HD, float scale) {
	constexpr int BC = 64, BQ = HDP == 128 ? 32 : 64, NT = 128, NO = HDP / 8, NQ = BQ / 8;
	typedef FomTile<HDP, NT> Tile;
	constexpr int LD = Tile::LD;
	FOM_DYN_SMEM(fom_bf16_t, sm);
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	int g = blockIdx.y, b = blockIdx.z, k0 = blockIdx.x * BC, rep = NH / KVH;
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	const fom_bf16_t *kh = k + (long long)b * T * kvs + g * HD, *vh = v + (long long)b * T * kvs + g * HD;
	const int *dsb = ds + (long long)b * T;
	int klast = k0 + BC - 1;
	fom_bf16_t *sk = sm, *sv = sm + BC * LD, *sqd = sm + 2 * BC * LD; // stage s: Q at sqd + 2s·BQ·LD, dO after it
	Tile::template load<BC>(sk, kh, kvs, k0, T, HD);
	Tile::template load<BC>(sv, vh, kvs, k0, T, HD);
	// The query blocks that see these keys: from the block holding key k0
	// (causal) while the block's first row's document starts by klast.
	int qfirst = k0 / BQ * BQ, nqb = 0;
	while (qfirst + nqb * BQ < T && dsb[qfirst + nqb * BQ] <= klast) nqb++;
	int ntile = rep * nqb; // (head, query block) pairs, in order
	auto load = [&](int t) {
		if (t >= ntile) return;
		int h = g * rep + t / nqb, qb0 = qfirst + t % nqb * BQ;
		fom_bf16_t *st = sqd + t % 2 * 2 * BQ * LD;
		long long off = (long long)b * T * qs + h * HD;
		Tile::template load<BQ>(st, q + off, qs, qb0, T, HD);
		Tile::template load<BQ>(st + BQ * LD, dout + off, qs, qb0, T, HD);
	};
	load(0);
	fom_cp_commit();
	int key[2] = {k0 + warp * 16 + lane / 4, k0 + warp * 16 + lane / 4 + 8};
	const float c = scale * FOM_LOG2E_F;
	float gk[NO][4], gv[NO][4];
#pragma unroll
	for (int i = 0; i < NO; i++)
#pragma unroll
		for (int e = 0; e < 4; e++) gk[i][e] = gv[i][e] = 0.0f;
	for (int t = 0; t < ntile; t++) {
		load(t + 1);
		fom_cp_commit();
		fom_cp_wait<1>();
		__syncthreads();
		int h = g * rep + t / nqb, qb0 = qfirst + t % nqb * BQ;
		const fom_bf16_t *sq = sqd + t % 2 * 2 * BQ * LD, *sdo = sq + BQ * LD;
		const float *lrow = lse + ((long long)b * NH + h) * T, *drow = D + ((long long)b * NH + h) * T;
		float s[NQ][4], dp[NQ][4];
		fom_mma_abt2<HDP, BQ, Tile>(s, dp, sk, sv, sq, sdo, warp * 16);
		// Pᵀ and dSᵀ in place of Sᵀ and dPᵀ.
#pragma unroll
		for (int i = 0; i < NQ; i++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				int r = qb0 + i * 8 + lane % 4 * 2 + e % 2;
				float p = 0.0f, dd = 0.0f;
				if (r < T && fom_sees(r, dsb[r], key[e / 2])) {
					p = exp2f(s[i][e] * c - lrow[r] * FOM_LOG2E_F);
					dd = drow[r];
				}
				s[i][e] = p;
				dp[i][e] = p * (dp[i][e] - dd);
			}
		fom_mma_acc<HDP, BQ / 16, Tile>(gv, s, sdo);
		fom_mma_acc<HDP, BQ / 16, Tile>(gk, dp, sq);
		__syncthreads();
	}
#pragma unroll
	for (int r = 0; r < 2; r++) {
		if (key[r] >= T) continue;
		long long off = ((long long)b * T + key[r]) * kvs + g * HD;
#pragma unroll
		for (int i = 0; i < NO; i++) {
			int d = i * 8 + lane % 4 * 2;
			if (d >= HD) continue;
			dk[off + d] = gk[i][2 * r] * scale, dk[off + d + 1] = gk[i][2 * r + 1] * scale;
			fom_gst(dv, off + d, dvbf, gv[i][2 * r]), fom_gst(dv, off + d + 1, dvbf, gv[i][2 * r + 1]);
		}
	}
}

// fom_flash_dq: dQ of 64 query rows of one head (4 warps, 16 rows each) over
// the key blocks they see: S = Q·Kᵀ, P = exp(S·scale − lse), dP = dO·Vᵀ,
// dS = P∘(dP − D), dQ += dS·K (scaled at the end).
template <int HDP>
FOM_DEV void fom_flash_dq(float *dq, const fom_bf16_t *dout, const fom_bf16_t *q, const fom_bf16_t *k,
                          const fom_bf16_t *v, const float *lse, const float *D, const int *ds, int T, int NH, int KVH,
                          int HD, float scale) {
	constexpr int BR = 64, BC = 64, NT = 128, NO = HDP / 8;
	typedef FomTile<HDP, NT> Tile;
	constexpr int LD = Tile::LD;
	FOM_DYN_SMEM(fom_bf16_t, sm);
	int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
	int h = blockIdx.y, b = blockIdx.z, g = h / (NH / KVH), q0 = blockIdx.x * BR;
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	long long qoff = (long long)b * T * qs + h * HD;
	const fom_bf16_t *kh = k + (long long)b * T * kvs + g * HD, *vh = v + (long long)b * T * kvs + g * HD;
	const int *dsb = ds + (long long)b * T;
	int qlast = (q0 + BR < T ? q0 + BR : T) - 1, kfirst, nkb;
	fom_flash_span<BC>(dsb, q0, qlast, &kfirst, &nkb);
	int dlast = dsb[qlast];
	fom_bf16_t *sq = sm, *sdo = sm + BR * LD, *skv = sm + 2 * BR * LD; // stage s: K at skv + 2s·BC·LD, V after it
	Tile::template load<BR>(sq, q + qoff, qs, q0, T, HD);
	Tile::template load<BR>(sdo, dout + qoff, qs, q0, T, HD);
	Tile::template load<BC>(skv, kh, kvs, kfirst, T, HD);
	Tile::template load<BC>(skv + BC * LD, vh, kvs, kfirst, T, HD);
	fom_cp_commit();
	int row[2] = {q0 + warp * 16 + lane / 4, q0 + warp * 16 + lane / 4 + 8};
	int dst[2];
	float lr[2], dr[2];
#pragma unroll
	for (int r = 0; r < 2; r++) {
		bool in = row[r] < T;
		dst[r] = in ? dsb[row[r]] : T;
		lr[r] = in ? lse[((long long)b * NH + h) * T + row[r]] * FOM_LOG2E_F : 0.0f;
		dr[r] = in ? D[((long long)b * NH + h) * T + row[r]] : 0.0f;
	}
	const float c = scale * FOM_LOG2E_F;
	float gq[NO][4];
#pragma unroll
	for (int i = 0; i < NO; i++) gq[i][0] = gq[i][1] = gq[i][2] = gq[i][3] = 0.0f;
	for (int j = 0; j < nkb; j++) {
		int k0 = kfirst + j * BC;
		const fom_bf16_t *sk = fom_kv_step<BC, Tile>(skv, kh, vh, kvs, j, nkb, kfirst, T, HD), *sv = sk + BC * LD;
		float s[BC / 8][4], dp[BC / 8][4];
		fom_mma_abt2<HDP, BC, Tile>(s, dp, sq, sdo, sk, sv, warp * 16);
		bool full = k0 + BC - 1 <= q0 && k0 >= dlast;
#pragma unroll
		for (int i = 0; i < BC / 8; i++)
#pragma unroll
			for (int e = 0; e < 4; e++) {
				float p = exp2f(s[i][e] * c - lr[e / 2]);
				if (!full && !fom_sees(row[e / 2], dst[e / 2], k0 + i * 8 + lane % 4 * 2 + e % 2)) p = 0.0f;
				dp[i][e] = p * (dp[i][e] - dr[e / 2]);
			}
		fom_mma_acc<HDP, BC / 16, Tile>(gq, dp, sk);
		__syncthreads();
	}
#pragma unroll
	for (int r = 0; r < 2; r++) {
		if (row[r] >= T) continue;
		float *orow = dq + ((long long)b * T + row[r]) * qs + h * HD;
#pragma unroll
		for (int i = 0; i < NO; i++) {
			int d = i * 8 + lane % 4 * 2;
			if (d < HD) orow[d] = gq[i][2 * r] * scale, orow[d + 1] = gq[i][2 * r + 1] * scale;
		}
	}
}

FOM_KERNEL void __launch_bounds__(128) fom_flash_dkdv_64(float *dk, void *dv, int dvbf, const fom_bf16_t *dout, const fom_bf16_t *q,
                                                         const fom_bf16_t *k, const fom_bf16_t *v, const float *lse,
                                                         const float *D, const int *ds, int B, int T, int NH, int KVH,
                                                         int HD, float scale) {
	fom_flash_dkdv<64>(dk, dv, dvbf, dout, q, k, v, lse, D, ds, T, NH, KVH, HD, scale);
}

FOM_KERNEL void __launch_bounds__(128) fom_flash_dkdv_128(float *dk, void *dv, int dvbf, const fom_bf16_t *dout, const fom_bf16_t *q,
                                                          const fom_bf16_t *k, const fom_bf16_t *v, const float *lse,
                                                          const float *D, const int *ds, int B, int T, int NH, int KVH,
                                                          int HD, float scale) {
	fom_flash_dkdv<128>(dk, dv, dvbf, dout, q, k, v, lse, D, ds, T, NH, KVH, HD, scale);
}

FOM_KERNEL void __launch_bounds__(128) fom_flash_dq_64(float *dq, const fom_bf16_t *dout, const fom_bf16_t *q,
                                                       const fom_bf16_t *k, const fom_bf16_t *v, const float *lse,
                                                       const float *D, const int *ds, int B, int T, int NH, int KVH, int HD,
                                                       float scale) {
	fom_flash_dq<64>(dq, dout, q, k, v, lse, D, ds, T, NH, KVH, HD, scale);
}

FOM_KERNEL void __launch_bounds__(128) fom_flash_dq_128(float *dq, const fom_bf16_t *dout, const fom_bf16_t *q,
                                                        const fom_bf16_t *k, const fom_bf16_t *v, const float *lse,
                                                        const float *D, const int *ds, int B, int T, int NH, int KVH, int HD,
                                                        float scale) {
	fom_flash_dq<128>(dq, dout, q, k, v, lse, D, ds, T, NH, KVH, HD, scale);
}
