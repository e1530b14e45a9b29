// ops.cu — row and column kernels: embedding, RMSNorm, RoPE, softmax
// cross-entropy (kernels/cpu/ops.go is their definition).
#include "common.cuh"

// fom_embed_fwd: out[n, :] = table[tok[n], :]; thread (n, j) over blockIdx.y = n.
// tbf: the table is the bfloat16 copy of weights kept in host memory.
FOM_KERNEL void fom_embed_fwd(float *out, const void *table, const int *tok, long long n, long long c, int tbf) {
	long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long i = blockIdx.y + (long long)gridDim.y * blockIdx.z;
	if (j >= c || i >= n) return;
	out[i * c + j] = fom_gld(table, (long long)tok[i] * c + j, tbf);
}

// fom_embed_bwd adds dout's rows into dtable, one block row per distinct token
// u: positions pos[start[u] .. start[u+1]) hold token ids[u], in increasing
// order, so each column of each table row is summed in position order as the
// CPU backend sums it. gbf: dtable holds bfloat16 (fom_gld).
FOM_KERNEL void fom_embed_bwd(void *dtable, const float *dout, const int *ids, const int *start, const int *pos, int nu,
                              long long c, int gbf) {
	long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	int u = blockIdx.y + gridDim.y * blockIdx.z;
	if (j >= c || u >= nu) return;
	long long d = (long long)ids[u] * c + j;
	float acc = fom_gld(dtable, d, gbf);
	for (int p = start[u]; p < start[u + 1]; p++) acc = __fadd_rn(acc, dout[(long long)pos[p] * c + j]);
	fom_gst(dtable, d, gbf, acc);
}

// fom_rms_fwd: one thread per row; ss = Σ x² in float64, in order;
// r = 1/√(ss/C + eps); out = (x·r)·w.
FOM_KERNEL void fom_rms_fwd(float *out, float *rstd, const float *inp, const float *w, long long n, long long c, float eps) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	const float *x = inp + i * c;
	double ss = 0;
	for (long long j = 0; j < c; j++) ss = __dadd_rn(ss, __dmul_rn((double)x[j], (double)x[j]));
	float r = (float)__ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(__ddiv_rn(ss, (double)c), (double)eps)));
	rstd[i] = r;
	float *o = out + i * c;
	for (long long j = 0; j < c; j++) o[j] = __fmul_rn(__fmul_rn(x[j], r), w[j]);
}

// fom_rms_bwd_rows: dx += (r·dy)·w − x·k with k = dot·r³/C and
// dot = Σ (dy·w)·x in float64, in order; one thread per row.
FOM_KERNEL void fom_rms_bwd_rows(float *dinp, const float *dout, const float *inp, const float *w,
                                 const float *rstd, long long n, long long c) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	const float *x = inp + i * c, *dy = dout + i * c;
	float *dx = dinp + i * c;
	float r = rstd[i];
	double dot = 0;
	for (long long j = 0; j < c; j++)
		dot = __dadd_rn(dot, __dmul_rn(__dmul_rn((double)dy[j], (double)w[j]), (double)x[j]));
	double rd = (double)r;
	float k = (float)__ddiv_rn(__dmul_rn(__dmul_rn(__dmul_rn(dot, rd), rd), rd), (double)c);
	for (long long j = 0; j < c; j++) {
		float a = __fmul_rn(__fmul_rn(r, dy[j]), w[j]);
		float b = __fmul_rn(x[j], k);
		dx[j] = __fadd_rn(dx[j], __fsub_rn(a, b));
	}
}

// fom_rms_bwd_weight: dw[j] += (dy·x)·r over rows in order; one thread per
// column. gbf: dw holds bfloat16.
FOM_KERNEL void fom_rms_bwd_weight(void *dw, const float *dout, const float *inp, const float *rstd, long long n,
                                   long long c, int gbf) {
	long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= c) return;
	float acc = fom_gld(dw, j, gbf);
	for (long long i = 0; i < n; i++)
		acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(dout[i * c + j], inp[i * c + j]), rstd[i]));
	fom_gst(dw, j, gbf, acc);
}

// The bf16 path's RMSNorm rows: a warp per row (4 rows per 128-thread
// block), lanes striding over the columns so that loads are coalesced, each
// lane's float64 partial added in lane order through shared memory.
// Deterministic; not the CPU's single chain per row.
FOM_DEV double fom_row_sum(double v, double *lanes, int w, int lane) {
	lanes[w * 32 + lane] = v;
	__syncthreads();
	double s = 0;
	for (int l = 0; l < 32; l++) s = __dadd_rn(s, lanes[w * 32 + l]);
	__syncthreads();
	return s;
}

// obf: out holds bfloat16 (an activation only matrix products read); wbf:
// the gain is the bfloat16 copy of weights kept in host memory.
FOM_KERNEL void fom_rms_fwd_warp(void *out, float *rstd, const float *inp, const void *w, long long n, long long c,
                                 float eps, int obf, int wbf) {
	__shared__ double lanes[128];
	int wi = threadIdx.x / 32, lane = threadIdx.x % 32;
	long long i = (long long)blockIdx.x * 4 + wi;
	bool live = i < n;
	const float *x = inp + (live ? i : 0) * c;
	double ss = 0;
	if (live)
		for (long long j = lane; j < c; j += 32) ss = __dadd_rn(ss, __dmul_rn((double)x[j], (double)x[j]));
	ss = fom_row_sum(ss, lanes, wi, lane);
	if (!live) return;
	float r = (float)__ddiv_rn(1.0, __dsqrt_rn(__dadd_rn(__ddiv_rn(ss, (double)c), (double)eps)));
	if (lane == 0) rstd[i] = r;
	for (long long j = lane; j < c; j += 32) fom_gst(out, i * c + j, obf, __fmul_rn(__fmul_rn(x[j], r), fom_gld(w, j, wbf)));
}

FOM_KERNEL void fom_rms_bwd_rows_warp(float *dinp, const float *dout, const float *inp, const void *w,
                                      const float *rstd, long long n, long long c, int wbf) {
	__shared__ double lanes[128];
	int wi = threadIdx.x / 32, lane = threadIdx.x % 32;
	long long i = (long long)blockIdx.x * 4 + wi;
	bool live = i < n;
	long long off = (live ? i : 0) * c;
	const float *x = inp + off, *dy = dout + off;
	double dot = 0;
	if (live)
		for (long long j = lane; j < c; j += 32)
			dot = __dadd_rn(dot, __dmul_rn(__dmul_rn((double)dy[j], (double)fom_gld(w, j, wbf)), (double)x[j]));
	dot = fom_row_sum(dot, lanes, wi, lane);
	if (!live) return;
	float r = rstd[i];
	double rd = (double)r;
	float k = (float)__ddiv_rn(__dmul_rn(__dmul_rn(__dmul_rn(dot, rd), rd), rd), (double)c);
	float *dx = dinp + off;
	for (long long j = lane; j < c; j += 32)
		dx[j] = __fadd_rn(dx[j], __fsub_rn(__fmul_rn(__fmul_rn(r, dy[j]), fom_gld(w, j, wbf)), __fmul_rn(x[j], k)));
}

// fom_rms_bwd_weight_part is the bf16 path's first stage of the weight
// gradient: part[chunk, j] = Σ (dy·x)·r over the chunk's rows, in order, for
// chunks of `rows` rows (blockIdx.y is the chunk). fom_colsum_add then adds
// the chunks in order. Deterministic, and parallel over rows as well as
// columns, but not the CPU's single chain per column.
FOM_KERNEL void fom_rms_bwd_weight_part(float *part, const float *dout, const float *inp, const float *rstd, long long n,
                                        long long c, int rows) {
	long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long i0 = (long long)blockIdx.y * rows;
	if (j >= c) return;
	long long i1 = i0 + rows < n ? i0 + rows : n;
	float acc = 0.0f;
	for (long long i = i0; i < i1; i++)
		acc = __fadd_rn(acc, __fmul_rn(__fmul_rn(dout[i * c + j], inp[i * c + j]), rstd[i]));
	part[(long long)blockIdx.y * c + j] = acc;
}

// fom_colsum_add: dst[j] += Σ_k part[k, j] for k = 0..chunks−1, in order.
// gbf: dst holds bfloat16.
FOM_KERNEL void fom_colsum_add(void *dst, const float *part, int chunks, long long c, int gbf) {
	long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (j >= c) return;
	float acc = fom_gld(dst, j, gbf);
	for (int k = 0; k < chunks; k++) acc = __fadd_rn(acc, part[(long long)k * c + j]);
	fom_gst(dst, j, gbf, acc);
}

// fom_rope rotates the pairs (j, j+hd/2) of x[n, heads, hd] by the angle whose
// cos and sin are row pos[n] of tab (cos[hd/2] then sin[hd/2], computed on the
// host in float64 exactly as the CPU backend does) into dst (x itself, or a
// buffer in bfloat16 where dbf is set); sign −1 rotates back.
FOM_KERNEL void fom_rope(void *dst, int dbf, const float *x, const int *pos, const float *tab, long long n, int heads, int hd,
                         float sign) {
	long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	int half = hd / 2;
	long long per = (long long)heads * half;
	if (t >= n * per) return;
	long long i = t / per;
	int h = (int)(t % per) / half, j = (int)(t % per) % half;
	const float *row = tab + (long long)pos[i] * hd;
	float cs = row[j], sn = __fmul_rn(sign, row[half + j]);
	long long o = (i * heads + h) * hd;
	float a = x[o + j], b = x[o + j + half];
	fom_gst(dst, o + j, dbf, __fsub_rn(__fmul_rn(a, cs), __fmul_rn(b, sn)));
	fom_gst(dst, o + j + half, dbf, __fadd_rn(__fmul_rn(b, cs), __fmul_rn(a, sn)));
}

// fom_xent: softmax cross-entropy, 8 rows per 128-thread block, 16 lanes per
// row as the CPU's vector code has: lane l handles the columns ≡ l (mod 16),
// accumulates exp(x − max) in float64 in column order, and the lanes are added
// in lane order. loss = float32((max + ln Σ) − x[target]); given dlogits
// (null: no gradient; it may be logits) its row becomes dscale·e/Σ, minus
// dscale at the target, in bfloat16 where dbf is set.
FOM_KERNEL void fom_xent(float *losses, const float *logits, const int *targets, long long n, long long v, void *dlogits,
                         int dbf, float dscale) {
	__shared__ float smax[128];
	__shared__ double ssum[128];
	int lane = threadIdx.x % 16, rr = threadIdx.x / 16;
	long long i = (long long)blockIdx.x * 8 + rr;
	bool live = i < n;
	const float *row = logits + (live ? i : 0) * v;
	long long base = (live ? i : 0) * v; // the row's first gradient
	int tgt = live ? targets[i] : -100;
	float xt = (live && tgt != -100) ? row[tgt] : 0.0f; // read before any lane writes the row
	float mx = -INFINITY;
	if (live && tgt != -100)
		for (long long j = lane; j < v; j += 16) {
			float x = row[j];
			mx = x > mx ? x : mx;
		}
	smax[threadIdx.x] = mx;
	__syncthreads();
	mx = smax[rr * 16];
	for (int l = 1; l < 16; l++) {
		float o = smax[rr * 16 + l];
		mx = o > mx ? o : mx;
	}
	double acc = 0;
	if (live && tgt != -100)
		for (long long j = lane; j < v; j += 16) acc = __dadd_rn(acc, (double)fom_exp(__fsub_rn(row[j], mx)));
	ssum[threadIdx.x] = acc;
	__syncthreads();
	double sum = 0;
	for (int l = 0; l < 16; l++) sum = __dadd_rn(sum, ssum[rr * 16 + l]);
	if (!live) return;
	if (tgt == -100) {
		if (lane == 0) losses[i] = 0;
		if (dlogits)
			for (long long j = lane; j < v; j += 16) fom_gst(dlogits, base + j, dbf, 0.0f);
		return;
	}
	if (lane == 0) losses[i] = (float)__dsub_rn(__dadd_rn((double)mx, log(sum)), (double)xt);
	if (!dlogits) return;
	float s = (float)__ddiv_rn((double)dscale, sum);
	for (long long j = lane; j < v; j += 16) {
		float e = __fmul_rn(fom_exp(__fsub_rn(row[j], mx)), s);
		if (j == tgt) e = __fsub_rn(e, dscale);
		fom_gst(dlogits, base + j, dbf, e);
	}
}
