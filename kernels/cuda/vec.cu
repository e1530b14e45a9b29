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
// its lane to lanes[c·16+l].
FOM_KERNEL void fom_sumsq_lanes(double *lanes, const float *x, long long n) {
	long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	long long c = t / 16, l = t % 16;
	long long lo = c * 4096;
	if (lo >= n) return;
	long long hi = lo + 4096 < n ? lo + 4096 : n;
	double acc = 0;
	for (long long i = lo + l; i < hi; i += 16) {
		double v = (double)x[i];
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
FOM_KERNEL void fom_adamw(float *p, const float *g, float *m, float *v, long long n,
                          float gs, float b1, float omb1, float b2, float omb2,
                          float ibc1, float ibc2, float eps, float wd, float lr) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float gi = __fmul_rn(g[i], gs);
	float mi = __fadd_rn(__fmul_rn(b1, m[i]), __fmul_rn(omb1, gi));
	float vi = __fadd_rn(__fmul_rn(b2, v[i]), __fmul_rn(__fmul_rn(omb2, gi), gi));
	m[i] = mi;
	v[i] = vi;
	float den = __fadd_rn(__fsqrt_rn(__fmul_rn(vi, ibc2)), eps);
	float upd = __fadd_rn(__fdiv_rn(__fmul_rn(mi, ibc1), den), __fmul_rn(wd, p[i]));
	p[i] = __fsub_rn(p[i], __fmul_rn(lr, upd));
}

// fom_swiglu_fwd: h = (g·σ(g))·u.
FOM_KERNEL void fom_swiglu_fwd(float *h, const float *g, const float *u, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float gv = g[i];
	h[i] = __fmul_rn(__fmul_rn(gv, fom_sigmoid(gv)), u[i]);
}

// fom_swiglu_bwd: du = dh·(g·σ); dg = ((dh·u)·σ)·(1 + g·(1−σ)).
FOM_KERNEL void fom_swiglu_bwd(float *dg, float *du, const float *dh, const float *g, const float *u, long long n) {
	long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	float gv = g[i];
	float sg = fom_sigmoid(gv);
	float dhv = dh[i];
	du[i] = __fmul_rn(dhv, __fmul_rn(gv, sg));
	float d = __fmul_rn(__fmul_rn(dhv, u[i]), sg);
	dg[i] = __fmul_rn(d, __fadd_rn(1.0f, __fmul_rn(gv, __fsub_rn(1.0f, sg))));
}
