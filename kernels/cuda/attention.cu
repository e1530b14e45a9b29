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
// bf rounds q, k and v to bfloat16 as they are read: the bf16 path for head
// dimensions that are not multiples of 16 (flash.cu has the bf16 path's
// tensor-core kernels for the others).
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

// fom_attn_delta: D[b,h,r] = float32(Σ_d out·dout in float64, in order),
// dout read as fom_ld reads it (dbf: on the bf16 path as the kernels after
// it read it, in bfloat16).
FOM_KERNEL void fom_attn_delta(float *D, const float *out, const float *dout, int dbf, int B, int T, int NH, int HD) {
	int r = blockIdx.x * blockDim.x + threadIdx.x, h = blockIdx.y, b = blockIdx.z;
	if (r >= T) return;
	long long off = ((long long)b * T + r) * NH * HD + (long long)h * HD;
	double s = 0;
	for (int d = 0; d < HD; d++)
		s = __dadd_rn(s, __dmul_rn((double)out[off + d], (double)fom_ld(dout, off + d, dbf)));
	D[((long long)b * NH + h) * T + r] = (float)s;
}

// fom_attn_dkdv: one thread per key row s of kv head g; for each query head of
// the group in order, and each query row r ≥ s of s's document in order:
// P = exp(q·k·scale − lse), dS = P·(dO·v − D)·scale, dv += P·dO, dk += dS·q.
FOM_KERNEL void fom_attn_dkdv(float *dk, void *dv, int dvbf, const float *dout, int dbf, const float *q, const float *k, const float *v,
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
			float dp = fom_dot(vv, dout, qoff, HD, dbf);
			float dsv = __fmul_rn(__fmul_rn(p, __fsub_rn(dp, D[li])), scale);
			for (int d = 0; d < HD; d++) {
				gv[d] = __fmaf_rn(p, fom_ld(dout, qoff + d, dbf), gv[d]);
				gk[d] = __fmaf_rn(dsv, fom_ld(q, qoff + d, bf), gk[d]);
			}
		}
	}
	for (int d = 0; d < HD; d++) {
		dk[koff + d] = gk[d];
		fom_gst(dv, koff + d, dvbf, gv[d]);
	}
}

// fom_attn_dq: one thread per query row r of head h; dq = Σ_s dS·k over the
// keys of r's document up to r, in order.
FOM_KERNEL void fom_attn_dq(float *dq, const float *dout, int dbf, const float *q, const float *k, const float *v,
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
		dov[d] = fom_ld(dout, qoff + d, dbf);
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
