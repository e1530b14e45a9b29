// attention.cu — causal grouped-query attention with document masking,
// forward and backward (kernels/cpu/attention.go is the definition).
//
// Flash-style in memory: no T×T matrix exists. One thread owns one query row
// (forward, dq) or one key row (dk, dv) and recomputes the scores it needs;
// the threads of a block walk the same key (or query) rows in the same order,
// so those loads are broadcasts. Every sum is the CPU backend's chain, in its
// order, which is why a row is one thread's work: the forward pass makes
// three passes over the keys (maximum, Σexp in 16 float64 lanes, P·V) where a
// fused online softmax would make one but round differently.
//
// q and out are [B,T,NH,HD], k and v [B,T,KVH,HD], lse and D [B,NH,T].
// bf rounds q, k and v to bfloat16 as they are read (the bf16 path).
#include "common.cuh"

#define FOM_HDMAX 128

FOM_DEV float fom_dot(const float *a, const float *x, long long off, int hd, int bf) {
	float s = 0.0f;
	for (int d = 0; d < hd; d++) s = __fmaf_rn(a[d], fom_ld(x, off + d, bf), s);
	return s;
}

FOM_KERNEL void fom_attn_fwd(float *out, float *lse, const float *q, const float *k, const float *v, const int *ds,
                             int B, int T, int NH, int KVH, int HD, float scale, int bf) {
	int r = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
	if (r >= T) return;
	int g = h / (NH / KVH);
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	long long qoff = ((long long)b * T + r) * qs + (long long)h * HD;
	float qv[FOM_HDMAX], o[FOM_HDMAX];
	for (int d = 0; d < HD; d++) qv[d] = fom_ld(q, qoff + d, bf);
	int lo = ds[b * T + r];
	long long kb = (long long)b * T * kvs + (long long)g * HD;
	float mx = fom_dot(qv, k, kb + (long long)lo * kvs, HD, bf);
	for (int s = lo + 1; s <= r; s++) {
		float x = fom_dot(qv, k, kb + (long long)s * kvs, HD, bf);
		mx = mx > x ? mx : x;
	}
	float mxs = __fmul_rn(mx, scale);
	double lanes[16];
	for (int l = 0; l < 16; l++) lanes[l] = 0;
	for (int s = lo; s <= r; s++) {
		float x = fom_dot(qv, k, kb + (long long)s * kvs, HD, bf);
		lanes[(s - lo) % 16] = __dadd_rn(lanes[(s - lo) % 16], (double)fom_exp(__fsub_rn(__fmul_rn(x, scale), mxs)));
	}
	double sum = 0;
	for (int l = 0; l < 16; l++) sum = __dadd_rn(sum, lanes[l]);
	lse[((long long)b * NH + h) * T + r] = __fadd_rn(mxs, (float)log(sum));
	float inv = (float)__ddiv_rn(1.0, sum);
	for (int d = 0; d < HD; d++) o[d] = 0.0f;
	for (int s = lo; s <= r; s++) {
		float x = fom_dot(qv, k, kb + (long long)s * kvs, HD, bf);
		float p = __fmul_rn(fom_exp(__fsub_rn(__fmul_rn(x, scale), mxs)), inv);
		long long vo = kb + (long long)s * kvs;
		for (int d = 0; d < HD; d++) o[d] = __fmaf_rn(p, fom_ld(v, vo + d, bf), o[d]);
	}
	for (int d = 0; d < HD; d++) out[qoff + d] = o[d];
}

// fom_attn_delta: D[b,h,r] = float32(Σ_d out·dout in float64, in order).
FOM_KERNEL void fom_attn_delta(float *D, const float *out, const float *dout, int B, int T, int NH, int HD) {
	int r = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
	if (r >= T) return;
	long long off = ((long long)b * T + r) * NH * HD + (long long)h * HD;
	double s = 0;
	for (int d = 0; d < HD; d++) s = __dadd_rn(s, __dmul_rn((double)out[off + d], (double)dout[off + d]));
	D[((long long)b * NH + h) * T + r] = (float)s;
}

// fom_attn_dkdv: one thread per key row s of kv head g; for each query head of
// the group in order, and each query row r ≥ s of s's document in order:
// P = exp(q·k·scale − lse), dS = P·(dO·v − D)·scale, dv += P·dO, dk += dS·q.
FOM_KERNEL void fom_attn_dkdv(float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                              const float *lse, const float *D, const int *ds, int B, int T, int NH, int KVH, int HD,
                              float scale, int bf) {
	int s = blockIdx.x * blockDim.x + threadIdx.x, g = blockIdx.y, b = blockIdx.z;
	if (s >= T) return;
	int rep = NH / KVH;
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	long long koff = ((long long)b * T + s) * kvs + (long long)g * HD;
	float kv[FOM_HDMAX], vv[FOM_HDMAX], gk[FOM_HDMAX], gv[FOM_HDMAX];
	for (int d = 0; d < HD; d++) {
		kv[d] = fom_ld(k, koff + d, bf);
		vv[d] = fom_ld(v, koff + d, bf);
		gk[d] = 0.0f;
		gv[d] = 0.0f;
	}
	int r0 = blockIdx.x * blockDim.x; // every thread of the block walks the same rows
	for (int h = g * rep; h < (g + 1) * rep; h++) {
		for (int r = r0; r < T; r++) {
			if (r < s || ds[b * T + r] > s) continue;
			long long qoff = ((long long)b * T + r) * qs + (long long)h * HD;
			long long li = ((long long)b * NH + h) * T + r;
			float x = fom_dot(kv, q, qoff, HD, bf);
			float p = fom_exp(__fsub_rn(__fmul_rn(x, scale), lse[li]));
			float dp = fom_dot(vv, dout, qoff, HD, 0);
			float dsv = __fmul_rn(__fmul_rn(p, __fsub_rn(dp, D[li])), scale);
			for (int d = 0; d < HD; d++) {
				gv[d] = __fmaf_rn(p, dout[qoff + d], gv[d]);
				gk[d] = __fmaf_rn(dsv, fom_ld(q, qoff + d, bf), gk[d]);
			}
		}
	}
	for (int d = 0; d < HD; d++) {
		dk[koff + d] = gk[d];
		dv[koff + d] = gv[d];
	}
}

// fom_attn_dq: one thread per query row r of head h; dq = Σ_s dS·k over the
// keys of r's document up to r, in order.
FOM_KERNEL void fom_attn_dq(float *dq, const float *dout, const float *q, const float *k, const float *v,
                            const float *lse, const float *D, const int *ds, int B, int T, int NH, int KVH, int HD,
                            float scale, int bf) {
	int r = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
	if (r >= T) return;
	int g = h / (NH / KVH);
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	long long qoff = ((long long)b * T + r) * qs + (long long)h * HD;
	long long li = ((long long)b * NH + h) * T + r;
	float qv[FOM_HDMAX], dov[FOM_HDMAX], acc[FOM_HDMAX];
	for (int d = 0; d < HD; d++) {
		qv[d] = fom_ld(q, qoff + d, bf);
		dov[d] = dout[qoff + d];
		acc[d] = 0.0f;
	}
	float l = lse[li], dl = D[li];
	int lo = ds[b * T + r];
	int first = ds[b * T + blockIdx.x * blockDim.x]; // the block's walk starts at its first row's document
	if (first > lo) first = lo;
	long long kb = (long long)b * T * kvs + (long long)g * HD;
	for (int s = first; s <= r; s++) {
		if (s < lo) continue;
		long long ko = kb + (long long)s * kvs;
		float x = fom_dot(qv, k, ko, HD, bf);
		float p = fom_exp(__fsub_rn(__fmul_rn(x, scale), l));
		float dp = fom_dot(dov, v, ko, HD, bf);
		float dsv = __fmul_rn(__fmul_rn(p, __fsub_rn(dp, dl)), scale);
		for (int d = 0; d < HD; d++) acc[d] = __fmaf_rn(dsv, fom_ld(k, ko + d, bf), acc[d]);
	}
	for (int d = 0; d < HD; d++) dq[qoff + d] = acc[d];
}

// ---------------------------------------------------------------------------
// The bf16 path on tensor cores (WMMA), for head dimensions that are
// multiples of 16. q, k, v, dout and the probabilities go through bfloat16;
// scores, softmax statistics and every accumulator are float32. No T×T
// matrix: key and query tiles of 32 rows pass through shared memory, and the
// per-warp score tiles are 16×32.
//
// Forward, per block of 64 query rows (4 warps × 16): pass 1 walks the key
// tiles for each row's maximum and Σexp (online, float32) and writes the
// log-sum-exp; pass 2 walks them again and accumulates P·V in WMMA
// accumulators with P = exp(s·scale − lse) already normalised, so the output
// never needs rescaling (a WMMA fragment's layout is opaque, so rows of an
// accumulator cannot be rescaled in place). Backward is two kernels without
// atomics, so it is deterministic: dK and dV per key tile (walking query heads
// of the group and query tiles in order), dQ per query tile.

#define TC_LD (FOM_HDMAX + 8) // bf16 tile row: a multiple of 8, and 32-byte aligned every 16 rows

typedef __nv_bfloat16 fom_tile[TC_LD];

// tc_load copies rows r0..r0+n−1 (row stride `stride`, from base) of x into
// dst as bfloat16; rows outside [0, T) become zeros.
FOM_DEV void tc_load(fom_tile *dst, const float *x, long long base, long long stride, int r0, int n, int T, int HD,
                     int tid, int nthreads) {
	for (int e = tid; e < n * HD; e += nthreads) {
		int i = e / HD, d = e % HD, r = r0 + i;
		dst[i][d] = __float2bfloat16_rn(r < T ? x[base + (long long)r * stride + d] : 0.0f);
	}
}

// tc_abT: S[16][32] = A(16×HD) · B(32×HD)ᵀ for a warp, A and B tiles in
// shared memory, S row-major with leading dimension 32.
FOM_DEV void tc_abT(float *S, const fom_tile *A, const fom_tile *Bt, int HD) {
	using namespace nvcuda;
	wmma::fragment<wmma::accumulator, 16, 16, 16, float> c0, c1;
	wmma::fill_fragment(c0, 0.0f);
	wmma::fill_fragment(c1, 0.0f);
	for (int d = 0; d < HD; d += 16) {
		wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
		wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b0, b1;
		wmma::load_matrix_sync(a, &A[0][d], TC_LD);
		wmma::load_matrix_sync(b0, &Bt[0][d], TC_LD);
		wmma::load_matrix_sync(b1, &Bt[16][d], TC_LD);
		wmma::mma_sync(c0, a, b0, c0);
		wmma::mma_sync(c1, a, b1, c1);
	}
	wmma::store_matrix_sync(S, c0, 32, wmma::mem_row_major);
	wmma::store_matrix_sync(S + 16, c1, 32, wmma::mem_row_major);
}

// tc_accPB: acc[j] += P(16×32, bf16, leading dimension 40) · B(32×HD) for
// j < HD/16.
FOM_DEV void tc_accPB(nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> *acc,
                      const __nv_bfloat16 *P, const fom_tile *B, int HD) {
	using namespace nvcuda;
	for (int kk = 0; kk < 32; kk += 16) {
		wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
		wmma::load_matrix_sync(a, P + kk, 40);
		for (int j = 0; j < FOM_HDMAX / 16; j++) {
			if (j * 16 >= HD) break;
			wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> bm;
			wmma::load_matrix_sync(bm, &B[kk][j * 16], TC_LD);
			wmma::mma_sync(acc[j], a, bm, acc[j]);
		}
	}
}

// tc_store writes a warp's 16×HD accumulators to rows r0.. of dst (row stride
// `stride`, from base), skipping rows ≥ T, through the warp's 16×32 staging
// tile. Every thread of the block must call it (it synchronises the block).
FOM_DEV void tc_store(float *dst, long long base, long long stride, int r0, int T, int HD,
                      nvcuda::wmma::fragment<nvcuda::wmma::accumulator, 16, 16, 16, float> *acc, float *stage, int lane) {
	using namespace nvcuda;
	for (int j = 0; j < FOM_HDMAX / 16; j++) {
		if (j * 16 >= HD) break;
		wmma::store_matrix_sync(stage, acc[j], 32, wmma::mem_row_major);
		__syncthreads();
		for (int e = lane; e < 256; e += 32) {
			int rr = e / 16, cc = e % 16, r = r0 + rr;
			if (r < T) dst[base + (long long)r * stride + j * 16 + cc] = stage[rr * 32 + cc];
		}
		__syncthreads();
	}
}

FOM_KERNEL void fom_attn_fwd_tc(float *out, float *lse, const float *q, const float *k, const float *v, const int *ds,
                                int B, int T, int NH, int KVH, int HD, float scale) {
	using namespace nvcuda;
	__shared__ __align__(32) fom_tile Qs[64];
	__shared__ __align__(32) fom_tile Ks[32];
	__shared__ __align__(32) fom_tile Vs[32];
	__shared__ __align__(32) float Ss[4][16 * 32];
	__shared__ __align__(32) __nv_bfloat16 Ps[4][16 * 40];
	__shared__ float rowM[64], rowL[64];
	int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
	int q0 = blockIdx.x * 64, h = blockIdx.y, b = blockIdx.z, g = h / (NH / KVH);
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	long long qbase = (long long)b * T * qs + (long long)h * HD, kbase = (long long)b * T * kvs + (long long)g * HD;
	tc_load(Qs, q, qbase, qs, q0, 64, T, HD, tid, 128);
	int qlast = q0 + 63 < T ? q0 + 63 : T - 1;
	int kfirst = ds[b * T + q0];
	// Lanes 2i and 2i+1 of a warp own row i of its 16, columns 0–15 and 16–31 of a tile.
	int row = warp * 16 + lane / 2, half = lane % 2, r = q0 + row;
	int lo = r < T ? ds[b * T + r] : T;
	float *S = Ss[warp];
	float m = -INFINITY, l = 0.0f;
	for (int k0 = kfirst; k0 <= qlast; k0 += 32) {
		__syncthreads();
		tc_load(Ks, k, kbase, kvs, k0, 32, T, HD, tid, 128);
		__syncthreads();
		tc_abT(S, &Qs[warp * 16], Ks, HD);
		__syncthreads();
		float tm = -INFINITY;
		for (int c = 0; c < 16; c++) {
			int s = k0 + half * 16 + c;
			if (s >= lo && s <= r) tm = fmaxf(tm, S[(lane / 2) * 32 + half * 16 + c] * scale);
		}
		if (tm != -INFINITY) {
			float nm = fmaxf(m, tm), acc = 0.0f;
			for (int c = 0; c < 16; c++) {
				int s = k0 + half * 16 + c;
				if (s >= lo && s <= r) acc += __expf(S[(lane / 2) * 32 + half * 16 + c] * scale - nm);
			}
			l = (m == -INFINITY ? 0.0f : l * __expf(m - nm)) + acc;
			m = nm;
		}
	}
	__syncthreads();
	if (half == 1) {
		rowM[row] = m;
		rowL[row] = l;
	}
	__syncthreads();
	if (half == 0) {
		float m2 = rowM[row], l2 = rowL[row], nm = fmaxf(m, m2);
		float L = (m == -INFINITY ? 0.0f : l * __expf(m - nm)) + (m2 == -INFINITY ? 0.0f : l2 * __expf(m2 - nm));
		rowL[row] = nm + logf(L);
		if (r < T) lse[((long long)b * NH + h) * T + r] = rowL[row];
	}
	__syncthreads();
	float rl = rowL[row];
	wmma::fragment<wmma::accumulator, 16, 16, 16, float> o[FOM_HDMAX / 16];
	for (int j = 0; j < FOM_HDMAX / 16; j++) wmma::fill_fragment(o[j], 0.0f);
	__nv_bfloat16 *P = Ps[warp];
	for (int k0 = kfirst; k0 <= qlast; k0 += 32) {
		__syncthreads();
		tc_load(Ks, k, kbase, kvs, k0, 32, T, HD, tid, 128);
		tc_load(Vs, v, kbase, kvs, k0, 32, T, HD, tid, 128);
		__syncthreads();
		tc_abT(S, &Qs[warp * 16], Ks, HD);
		__syncthreads();
		for (int c = 0; c < 16; c++) {
			int s = k0 + half * 16 + c;
			float p = (s >= lo && s <= r) ? __expf(S[(lane / 2) * 32 + half * 16 + c] * scale - rl) : 0.0f;
			P[(lane / 2) * 40 + half * 16 + c] = __float2bfloat16_rn(p);
		}
		__syncthreads();
		tc_accPB(o, P, Vs, HD);
	}
	__syncthreads();
	tc_store(out, qbase, qs, q0 + warp * 16, T, HD, o, S, lane);
}

// fom_attn_dkdv_tc: per block 32 keys of kv head g (2 warps × 16). For each
// query head of the group and each 32-row query tile from the keys on:
// Pᵀ = exp(K·Qᵀ·scale − lse), dV += Pᵀ·dO, dSᵀ = Pᵀ∘(V·dOᵀ − D)·scale,
// dK += dSᵀ·Q.
FOM_KERNEL void fom_attn_dkdv_tc(float *dk, float *dv, const float *dout, const float *q, const float *k, const float *v,
                                 const float *lse, const float *D, const int *ds, int B, int T, int NH, int KVH, int HD,
                                 float scale) {
	using namespace nvcuda;
	__shared__ __align__(32) fom_tile Ks[32];
	__shared__ __align__(32) fom_tile Vs[32];
	__shared__ __align__(32) fom_tile Qt[32];
	__shared__ __align__(32) fom_tile Ot[32];
	__shared__ __align__(32) float Sb[2][16 * 32];
	__shared__ __align__(32) float Db[2][16 * 32];
	__shared__ __align__(32) __nv_bfloat16 Pb[2][16 * 40];
	__shared__ __align__(32) __nv_bfloat16 Gb[2][16 * 40];
	__shared__ float Lq[32], Dq[32];
	int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
	int k0 = blockIdx.x * 32, g = blockIdx.y, b = blockIdx.z, rep = NH / KVH;
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	long long kbase = (long long)b * T * kvs + (long long)g * HD;
	tc_load(Ks, k, kbase, kvs, k0, 32, T, HD, tid, 64);
	tc_load(Vs, v, kbase, kvs, k0, 32, T, HD, tid, 64);
	wmma::fragment<wmma::accumulator, 16, 16, 16, float> gk[FOM_HDMAX / 16], gv[FOM_HDMAX / 16];
	for (int j = 0; j < FOM_HDMAX / 16; j++) {
		wmma::fill_fragment(gk[j], 0.0f);
		wmma::fill_fragment(gv[j], 0.0f);
	}
	int i = lane / 2, half = lane % 2, s = k0 + warp * 16 + i; // this lane's key and query columns
	float *S = Sb[warp], *Dp = Db[warp];
	__nv_bfloat16 *P = Pb[warp], *G = Gb[warp];
	for (int h = g * rep; h < (g + 1) * rep; h++) {
		long long qbase = (long long)b * T * qs + (long long)h * HD, lbase = ((long long)b * NH + h) * T;
		for (int q0 = k0; q0 < T; q0 += 32) {
			if (ds[b * T + q0] > k0 + 31) break; // later rows start later documents
			__syncthreads();
			tc_load(Qt, q, qbase, qs, q0, 32, T, HD, tid, 64);
			tc_load(Ot, dout, qbase, qs, q0, 32, T, HD, tid, 64);
			if (tid < 32) {
				Lq[tid] = q0 + tid < T ? lse[lbase + q0 + tid] : 0.0f;
				Dq[tid] = q0 + tid < T ? D[lbase + q0 + tid] : 0.0f;
			}
			__syncthreads();
			tc_abT(S, &Ks[warp * 16], Qt, HD);  // Sᵀ: 16 keys × 32 queries
			tc_abT(Dp, &Vs[warp * 16], Ot, HD); // dPᵀ
			__syncthreads();
			for (int c = 0; c < 16; c++) {
				int jq = half * 16 + c, r = q0 + jq;
				bool ok = s < T && r < T && s <= r && ds[b * T + (r < T ? r : 0)] <= s;
				float p = ok ? __expf(S[i * 32 + jq] * scale - Lq[jq]) : 0.0f;
				P[i * 40 + jq] = __float2bfloat16_rn(p);
				G[i * 40 + jq] = __float2bfloat16_rn(p * (Dp[i * 32 + jq] - Dq[jq]) * scale);
			}
			__syncthreads();
			tc_accPB(gv, P, Ot, HD);
			tc_accPB(gk, G, Qt, HD);
		}
	}
	__syncthreads();
	tc_store(dk, kbase, kvs, k0 + warp * 16, T, HD, gk, S, lane);
	tc_store(dv, kbase, kvs, k0 + warp * 16, T, HD, gv, S, lane);
}

// fom_attn_dq_tc: per block 32 query rows of head h (2 warps × 16), over the
// key tiles of their documents: dS = P∘(dO·Vᵀ − D)·scale, dQ += dS·K.
FOM_KERNEL void fom_attn_dq_tc(float *dq, const float *dout, const float *q, const float *k, const float *v,
                               const float *lse, const float *D, const int *ds, int B, int T, int NH, int KVH, int HD,
                               float scale) {
	using namespace nvcuda;
	__shared__ __align__(32) fom_tile Qt[32];
	__shared__ __align__(32) fom_tile Ot[32];
	__shared__ __align__(32) fom_tile Ks[32];
	__shared__ __align__(32) fom_tile Vs[32];
	__shared__ __align__(32) float Sb[2][16 * 32];
	__shared__ __align__(32) float Db[2][16 * 32];
	__shared__ __align__(32) __nv_bfloat16 Gb[2][16 * 40];
	int tid = threadIdx.x, warp = tid / 32, lane = tid % 32;
	int q0 = blockIdx.x * 32, h = blockIdx.y, b = blockIdx.z, g = h / (NH / KVH);
	long long qs = (long long)NH * HD, kvs = (long long)KVH * HD;
	long long qbase = (long long)b * T * qs + (long long)h * HD, kbase = (long long)b * T * kvs + (long long)g * HD;
	long long lbase = ((long long)b * NH + h) * T;
	tc_load(Qt, q, qbase, qs, q0, 32, T, HD, tid, 64);
	tc_load(Ot, dout, qbase, qs, q0, 32, T, HD, tid, 64);
	int i = lane / 2, half = lane % 2, r = q0 + warp * 16 + i;
	int lo = r < T ? ds[b * T + r] : T;
	float L = r < T ? lse[lbase + r] : 0.0f, Dr = r < T ? D[lbase + r] : 0.0f;
	wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[FOM_HDMAX / 16];
	for (int j = 0; j < FOM_HDMAX / 16; j++) wmma::fill_fragment(acc[j], 0.0f);
	float *S = Sb[warp], *Dp = Db[warp];
	__nv_bfloat16 *G = Gb[warp];
	int qlast = q0 + 31 < T ? q0 + 31 : T - 1;
	for (int k0 = ds[b * T + q0]; k0 <= qlast; k0 += 32) {
		__syncthreads();
		tc_load(Ks, k, kbase, kvs, k0, 32, T, HD, tid, 64);
		tc_load(Vs, v, kbase, kvs, k0, 32, T, HD, tid, 64);
		__syncthreads();
		tc_abT(S, &Qt[warp * 16], Ks, HD);
		tc_abT(Dp, &Ot[warp * 16], Vs, HD);
		__syncthreads();
		for (int c = 0; c < 16; c++) {
			int jk = half * 16 + c, s = k0 + jk;
			float p = (s >= lo && s <= r) ? __expf(S[i * 32 + jk] * scale - L) : 0.0f;
			G[i * 40 + jk] = __float2bfloat16_rn(p * (Dp[i * 32 + jk] - Dr) * scale);
		}
		__syncthreads();
		tc_accPB(acc, G, Ks, HD);
	}
	__syncthreads();
	tc_store(dq, qbase, qs, q0 + warp * 16, T, HD, acc, S, lane);
}
