// mma.cuh — the warp-level tensor-core and copy primitives of gemm.cu and
// flash.cu (sm_80 and newer): mma.sync m16n8k16 in bfloat16 with float32
// accumulators, ldmatrix, cp.async with commit and wait groups, and warp
// shuffles. On the GPU each is one PTX instruction; under the emulator
// (emu/cuda_emu.h) each is modelled with PTX's fragment layouts, so that the
// kernels' use of them is checked in CI without a GPU.
//
// Fragments (g = lane/4, t = lane%4; "bf16x2" is a 32-bit register holding
// two bfloat16, the lower index in the low half):
//   A 16×16: a[0] = A(g, 2t..2t+1), a[1] = A(g+8, 2t..), a[2] = A(g, 2t+8..), a[3] = A(g+8, 2t+8..)
//   B 16×8:  b[0] = B(2t..2t+1, g), b[1] = B(2t+8..2t+9, g)
//   C 16×8:  c[0] = C(g, 2t), c[1] = C(g, 2t+1), c[2] = C(g+8, 2t), c[3] = C(g+8, 2t+1)
#pragma once
#include "common.cuh"

#define FOM_MEM __device__ __forceinline__ // member functions

#ifdef __CUDACC__

FOM_DEV uint32_t fom_smem(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

// fom_cp16 copies 16 bytes from global to shared memory asynchronously;
// only the first src_bytes (0 or 16) are read, the rest is zero-filled.
FOM_DEV void fom_cp16(void *dst, const void *src, int src_bytes) {
	asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(fom_smem(dst)), "l"(src), "r"(src_bytes));
}
FOM_DEV void fom_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> FOM_DEV void fom_cp_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(N)); }

FOM_DEV void fom_ldsm4(uint32_t *r, const void *p) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(fom_smem(p)));
}
FOM_DEV void fom_ldsm4t(uint32_t *r, const void *p) {
	asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
	             : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
	             : "r"(fom_smem(p)));
}

// fom_mma: d += A·B on one 16×8×16 tile.
FOM_DEV void fom_mma(float *d, const uint32_t *a, const uint32_t *b) {
	asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
	             "{%0,%1,%2,%3};\n"
	             : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
	             : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// fom_pack packs two floats, rounded to bfloat16, into one register.
FOM_DEV uint32_t fom_pack(float lo, float hi) {
	__nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
	return *(uint32_t *)&h;
}

#else // the emulator

FOM_DEV void fom_cp16(void *dst, const void *src, int src_bytes) { emu_cp_async(dst, src, src_bytes); }
FOM_DEV void fom_cp_commit() { emu_cp_commit(); }
template <int N> FOM_DEV void fom_cp_wait() { emu_cp_wait(N); }
FOM_DEV void fom_ldsm4(uint32_t *r, const void *p) { emu_ldmatrix(r, 4, false, p); }
FOM_DEV void fom_ldsm4t(uint32_t *r, const void *p) { emu_ldmatrix(r, 4, true, p); }
FOM_DEV void fom_mma(float *d, const uint32_t *a, const uint32_t *b) { emu_mma_bf16(d, a, b); }
FOM_DEV uint32_t fom_pack(float lo, float hi) {
	return (uint32_t)__float2bfloat16_rn(lo).x | (uint32_t)__float2bfloat16_rn(hi).x << 16;
}

#endif

// fom_bf16_bits rounds x to bfloat16 and returns its bits.
FOM_DEV fom_bf16_t fom_bf16_bits(float x) { return (fom_bf16_t)(fom_pack(x, 0.0f) & 0xffff); }

// fom_pairs: a GEMM epilogue may store pairs of outputs at once — N is even
// (so m·N + n is even for even n) and C lies on an 8-byte boundary.
FOM_DEV bool fom_pairs(const void *C, long long N) { return N % 2 == 0 && ((size_t)C & 7) == 0; }

// fom_store2 writes the outputs v0, v1 of a GEMM epilogue to elements o and
// o+1 of C (the second only when both is set: it lies inside the row): as
// bfloat16 with cbf, else float32, added to C's values with acc (in
// float32, then rounded). pairs: the two are aligned for one 8-byte (4-byte)
// store.
FOM_DEV void fom_store2(void *C, long long o, bool pairs, bool both, int acc, int cbf, float v0, float v1) {
	if (cbf) {
		fom_bf16_t *p = (fom_bf16_t *)C + o;
		if (acc) { // read as bfloat16, added in float32, rounded once
			v0 = __fadd_rn(fom_gld(p, 0, 1), v0);
			if (both) v1 = __fadd_rn(fom_gld(p, 1, 1), v1);
		}
		if (pairs) {
			*(uint32_t *)p = fom_pack(v0, v1);
			return;
		}
		p[0] = fom_bf16_bits(v0);
		if (both) p[1] = fom_bf16_bits(v1);
		return;
	}
	float *p = (float *)C + o;
	if (pairs) {
		float2 w = acc ? *(float2 *)p : make_float2(0.0f, 0.0f);
		*(float2 *)p = make_float2(__fadd_rn(w.x, v0), __fadd_rn(w.y, v1));
		return;
	}
	p[0] = acc ? __fadd_rn(p[0], v0) : v0;
	if (both) p[1] = acc ? __fadd_rn(p[1], v1) : v1;
}

// FOM_DYN_SMEM declares the block's dynamic shared memory as a T *name
// (16-byte aligned; its size is the launch's).
#ifdef __CUDACC__
#define FOM_DYN_SMEM(T, name)                                                                                  \
	extern __shared__ __align__(16) unsigned char fom_dyn_smem_[];                                          \
	T *name = (T *)fom_dyn_smem_
#else
#define FOM_DYN_SMEM(T, name) T *name = (T *)emu_dyn_smem()
#endif
