// vec.cu — elementwise kernels and the chunked sum of squares
// (kernels/cpu/vec.go and cpu.go are their definitions).
#include "common.cuh"

// fom_scale: x[i] *= s.
FOM_KERNEL void fom_scale(float *x, long long n, float s) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) x[i] = __fmul_rn(x[i], s);
}

// fom_sumsq_lanes: chunk c (4096 elements) has 16 lanes; lane l adds x[i]²
// for i ≡ l (mod 16) with one float64 FMA each, in order. Thread c·16+l writes
// its lane to lanes[c·16+l]. gbf: x holds bfloat16.
FOM_KERNEL void fom_sumsq_lanes(double *lanes, const void *x, long long n, int gbf) {
	long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long c = t / 16, l = t % 16;
	long long lo = c * 4096;
	if (lo >= n) return;
	long long hi = lo + 4096 < n ? lo + 4096 : n;
	double acc = 0;
	for (long long i = lo + l; i < hi; i += 16) {
		double v = (double)fom_gld(x, i, gbf);
		acc = __fma_rn(v, v, acc);
	}
	lanes[t] = acc;
}

// fom_sum_lanes: sums[c] = Σ lanes[c·16+l] for l = 0..15, in lane order.
FOM_KERNEL void fom_sum_lanes(double *sums, const double *lanes, long long nc) {
	long long c = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (c >= nc) return;
	double s = 0;
	for (int l = 0; l < 16; l++) s = __dadd_rn(s, lanes[c * 16 + l]);
	sums[c] = s;
}

// fom_adamw is adamwGo:
//   g' = g·gs; m = β1·m + (1−β1)·g'; v = β2·v + (1−β2)·g'·g'
//   p -= lr·((m·ibc1)/(√(v·ibc2) + ε) + wd·p)
// gbf: g holds bfloat16. pb, if not null, is p's bfloat16 copy (weights
// kept in host memory: kernels.MasterBackend), rounded from the new p.
FOM_KERNEL void fom_adamw(float *p, const void *g, float *m, float *v, long long n, float gs, float b1, float omb1,
                          float b2, float omb2, float ibc1, float ibc2, float eps, float wd, float lr, int gbf,
                          void *pb) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float gi = __fmul_rn(fom_gld(g, i, gbf), gs);
	float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(omb1, gi));
	float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(omb2, gi), gi));
	m[i] = mi;
	v[i] = vi;
	float den = __fadd_rn(__fsqrt_rn(__fmul_rn(vi, ibc2)), eps);
	float upd = __fadd_rn(__fdiv_rn(__fmul_rn(mi, ibc1), den), __fmul_rn(wd, p[i]));
	float pn = __fsub_rn(p[i], __fmul_rn(lr, upd));
	p[i] = pn;
	if (pb) fom_gst(pb, i, 1, pn);
}

// fom_f2bf: dst[i] = bf16(src[i]) (a master's bfloat16 copy, refreshed
// after a write other than AdamW's; Copy into a bfloat16 buffer).
FOM_KERNEL void fom_f2bf(void *dst, const float *src, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) fom_gst(dst, i, 1, src[i]);
}

// fom_swiglu_fwd: h = (g·σ(g))·u. hbf: h holds bfloat16.
FOM_KERNEL void fom_swiglu_fwd(void *h, const float *g, const float *u, long long n, int hbf) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float gv = g[i];
	fom_gst(h, i, hbf, __fmul_rn(__fmul_rn(gv, fom_sigmoid(gv)), u[i]));
}

// fom_swiglu_bwd: du = dh·(g·σ); dg = ((dh·u)·σ)·(1 + g·(1−σ)). gbf, ubf:
// dg, du hold bfloat16 (gradients only matrix products read).
FOM_KERNEL void fom_swiglu_bwd(void *dg, void *du, const float *dh, const float *g, const float *u, long long n, int gbf,
                               int ubf) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float gv = g[i];
	float sg = fom_sigmoid(gv);
	float dhv = dh[i];
	fom_gst(du, i, ubf, __fmul_rn(dhv, __fmul_rn(gv, sg)));
	float d = __fmul_rn(__fmul_rn(dhv, u[i]), sg);
	fom_gst(dg, i, gbf, __fmul_rn(d, __fadd_rn(1.0f, __fmul_rn(gv, __fsub_rn(1.0f, sg)))));
}

// 8-bit AdamW (kernels/adam8.go: AdamW8Block is the definition). One block
// of 256 threads a block of kernels.Adam8Block parameters; the block's
// largest w = √v and |m/w| are found by a reduction (max is exact in any
// order), and the codes are rounded on the float32 bits with the same
// random bits as in Go (a hash of the parameter's index in its tensor and
// the step).
#define FOM_A8_BLOCK 256

// fom_a8_bits is adamBits: the random bits rounding parameter i's moments
// at a step (odd: m, even: v).
FOM_DEV unsigned fom_a8_bits(unsigned i, unsigned step, unsigned odd) {
	unsigned x = (2u * i + odd) * 0x9e3779b1u ^ step * 0x85ebca77u;
	x ^= x >> 16;
	x *= 0x7feb352du;
	x ^= x >> 15;
	x *= 0x846ca68bu;
	return x ^ (x >> 16);
}

// fom_a8_code is floatCode: r ∈ [0, 1] rounded stochastically with rnd to
// a code of 4 mantissa bits and an exponent of the given bias (15 or 7).
FOM_DEV unsigned fom_a8_code(float r, unsigned bias, unsigned rnd) {
	unsigned b = __float_as_uint(r);
	if (b < (128u - bias) << 23) {
		unsigned fx = (unsigned)__fmul_rn(r, __int_as_float((int)((127u + bias + 3u + 23u) << 23)));
		return (fx + (rnd & ((1u << 23) - 1u))) >> 23;
	}
	return (b - ((127u - bias) << 23) + (rnd & ((1u << 19) - 1u))) >> 19;
}

// fom_a8_v and fom_a8_m are vTable and mTable.
FOM_DEV float fom_a8_v(unsigned c) {
	unsigned e = c >> 4, f = c & 15u;
	return e == 0 ? __fmul_rn((float)f, 0x1p-18f) : __int_as_float((int)(((e + 112u) << 23) | (f << 19)));
}
FOM_DEV float fom_a8_m(unsigned c) {
	unsigned e = (c >> 4) & 7u, f = c & 15u;
	float x = e == 0 ? __fmul_rn((float)f, 0x1p-10f) : __int_as_float((int)(((e + 120u) << 23) | (f << 19)));
	return (c & 128u) ? -x : x;
}

// fom_a8_max returns the largest of every thread's x (all 256 call it).
FOM_DEV float fom_a8_max(float x, float *red) {
	int t = threadIdx.x;
	red[t] = x;
	__syncthreads();
	for (int s = FOM_A8_BLOCK / 2; s > 0; s >>= 1) {
		if (t < s) red[t] = fmaxf(red[t], red[t + s]);
		__syncthreads();
	}
	float r = red[0];
	__syncthreads();
	return r;
}

FOM_KERNEL void fom_adamw8(float *p, const void *g, unsigned char *mq, unsigned char *vq, float *ms, float *vs,
                           long long n, float gs, float b1, float omb1, float b2, float omb2, float ibc1, float ibc2,
                           float eps, float wd, float lr, int step, int gbf, void *pb) {
	__shared__ float red[FOM_A8_BLOCK];
	long long k = blockIdx.x, i = k * FOM_A8_BLOCK + threadIdx.x;
	bool in = i < n;
	float mi = 0, w = 0;
	if (in) {
		float gi = __fmul_rn(fom_gld(g, i, gbf), gs);
		float wo = __fmul_rn(vs[k], fom_a8_v(vq[i]));
		float mo = __fmul_rn(__fmul_rn(ms[k], fom_a8_m(mq[i])), wo);
		mi = __fadd_rn(__fmul_rn(b1, mo), __fmul_rn(omb1, gi));
		float vi = __fadd_rn(__fmul_rn(b2, __fmul_rn(wo, wo)), __fmul_rn(__fmul_rn(omb2, gi), gi));
		w = __fsqrt_rn(vi);
		float den = __fadd_rn(__fsqrt_rn(__fmul_rn(vi, ibc2)), eps);
		float upd = __fadd_rn(__fdiv_rn(__fmul_rn(mi, ibc1), den), __fmul_rn(wd, p[i]));
		float pn = __fsub_rn(p[i], __fmul_rn(lr, upd));
		p[i] = pn;
		if (pb) fom_gst(pb, i, 1, pn);
	}
	float wmax = fom_a8_max(w, red);
	float x = 0;
	unsigned vc = 0;
	if (in && w > 0 && wmax > 0) {
		vc = fom_a8_code(fminf(__fdiv_rn(w, wmax), 1.0f), 15u, fom_a8_bits((unsigned)i, (unsigned)step, 0));
		if (vc == 0) vc = 1;
		float wq = __fmul_rn(wmax, fom_a8_v(vc));
		x = wq > 0 ? __fdiv_rn(mi, wq) : 0;
	}
	float mmax = fom_a8_max(fabsf(x), red);
	if (!in) return;
	unsigned mc = 0;
	if (mmax > 0 && x != 0) {
		mc = fom_a8_code(fminf(__fdiv_rn(fabsf(x), mmax), 1.0f), 7u, fom_a8_bits((unsigned)i, (unsigned)step, 1));
		if (x < 0 && mc != 0) mc |= 128u;
	}
	mq[i] = (unsigned char)mc;
	vq[i] = (unsigned char)vc;
	if (threadIdx.x == 0) {
		ms[k] = mmax;
		vs[k] = wmax;
	}
}
