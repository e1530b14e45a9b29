// AVX2+FMA vector versions of the elementwise kernels in vec.go. Each
// computes exactly the arithmetic of its Go twin (same operations, same
// order, FMA where the Go code calls fma32), so both paths agree bit for bit.

//go:build amd64

#include "textflag.h"

DATA vc_log2e<>+0(SB)/4, $0x3fb8aa3b
DATA vc_log2e<>+4(SB)/4, $0x3fb8aa3b
DATA vc_log2e<>+8(SB)/4, $0x3fb8aa3b
DATA vc_log2e<>+12(SB)/4, $0x3fb8aa3b
DATA vc_log2e<>+16(SB)/4, $0x3fb8aa3b
DATA vc_log2e<>+20(SB)/4, $0x3fb8aa3b
DATA vc_log2e<>+24(SB)/4, $0x3fb8aa3b
DATA vc_log2e<>+28(SB)/4, $0x3fb8aa3b
GLOBL vc_log2e<>(SB), RODATA|NOPTR, $32

DATA vc_ln2hi<>+0(SB)/4, $0x3f318000
DATA vc_ln2hi<>+4(SB)/4, $0x3f318000
DATA vc_ln2hi<>+8(SB)/4, $0x3f318000
DATA vc_ln2hi<>+12(SB)/4, $0x3f318000
DATA vc_ln2hi<>+16(SB)/4, $0x3f318000
DATA vc_ln2hi<>+20(SB)/4, $0x3f318000
DATA vc_ln2hi<>+24(SB)/4, $0x3f318000
DATA vc_ln2hi<>+28(SB)/4, $0x3f318000
GLOBL vc_ln2hi<>(SB), RODATA|NOPTR, $32

DATA vc_ln2lo<>+0(SB)/4, $0xb95e8083
DATA vc_ln2lo<>+4(SB)/4, $0xb95e8083
DATA vc_ln2lo<>+8(SB)/4, $0xb95e8083
DATA vc_ln2lo<>+12(SB)/4, $0xb95e8083
DATA vc_ln2lo<>+16(SB)/4, $0xb95e8083
DATA vc_ln2lo<>+20(SB)/4, $0xb95e8083
DATA vc_ln2lo<>+24(SB)/4, $0xb95e8083
DATA vc_ln2lo<>+28(SB)/4, $0xb95e8083
GLOBL vc_ln2lo<>(SB), RODATA|NOPTR, $32

DATA vc_c6<>+0(SB)/4, $0x3ab60b61
DATA vc_c6<>+4(SB)/4, $0x3ab60b61
DATA vc_c6<>+8(SB)/4, $0x3ab60b61
DATA vc_c6<>+12(SB)/4, $0x3ab60b61
DATA vc_c6<>+16(SB)/4, $0x3ab60b61
DATA vc_c6<>+20(SB)/4, $0x3ab60b61
DATA vc_c6<>+24(SB)/4, $0x3ab60b61
DATA vc_c6<>+28(SB)/4, $0x3ab60b61
GLOBL vc_c6<>(SB), RODATA|NOPTR, $32

DATA vc_c5<>+0(SB)/4, $0x3c088889
DATA vc_c5<>+4(SB)/4, $0x3c088889
DATA vc_c5<>+8(SB)/4, $0x3c088889
DATA vc_c5<>+12(SB)/4, $0x3c088889
DATA vc_c5<>+16(SB)/4, $0x3c088889
DATA vc_c5<>+20(SB)/4, $0x3c088889
DATA vc_c5<>+24(SB)/4, $0x3c088889
DATA vc_c5<>+28(SB)/4, $0x3c088889
GLOBL vc_c5<>(SB), RODATA|NOPTR, $32

DATA vc_c4<>+0(SB)/4, $0x3d2aaaab
DATA vc_c4<>+4(SB)/4, $0x3d2aaaab
DATA vc_c4<>+8(SB)/4, $0x3d2aaaab
DATA vc_c4<>+12(SB)/4, $0x3d2aaaab
DATA vc_c4<>+16(SB)/4, $0x3d2aaaab
DATA vc_c4<>+20(SB)/4, $0x3d2aaaab
DATA vc_c4<>+24(SB)/4, $0x3d2aaaab
DATA vc_c4<>+28(SB)/4, $0x3d2aaaab
GLOBL vc_c4<>(SB), RODATA|NOPTR, $32

DATA vc_c3<>+0(SB)/4, $0x3e2aaaab
DATA vc_c3<>+4(SB)/4, $0x3e2aaaab
DATA vc_c3<>+8(SB)/4, $0x3e2aaaab
DATA vc_c3<>+12(SB)/4, $0x3e2aaaab
DATA vc_c3<>+16(SB)/4, $0x3e2aaaab
DATA vc_c3<>+20(SB)/4, $0x3e2aaaab
DATA vc_c3<>+24(SB)/4, $0x3e2aaaab
DATA vc_c3<>+28(SB)/4, $0x3e2aaaab
GLOBL vc_c3<>(SB), RODATA|NOPTR, $32

DATA vc_c2<>+0(SB)/4, $0x3f000000
DATA vc_c2<>+4(SB)/4, $0x3f000000
DATA vc_c2<>+8(SB)/4, $0x3f000000
DATA vc_c2<>+12(SB)/4, $0x3f000000
DATA vc_c2<>+16(SB)/4, $0x3f000000
DATA vc_c2<>+20(SB)/4, $0x3f000000
DATA vc_c2<>+24(SB)/4, $0x3f000000
DATA vc_c2<>+28(SB)/4, $0x3f000000
GLOBL vc_c2<>(SB), RODATA|NOPTR, $32

DATA vc_one<>+0(SB)/4, $0x3f800000
DATA vc_one<>+4(SB)/4, $0x3f800000
DATA vc_one<>+8(SB)/4, $0x3f800000
DATA vc_one<>+12(SB)/4, $0x3f800000
DATA vc_one<>+16(SB)/4, $0x3f800000
DATA vc_one<>+20(SB)/4, $0x3f800000
DATA vc_one<>+24(SB)/4, $0x3f800000
DATA vc_one<>+28(SB)/4, $0x3f800000
GLOBL vc_one<>(SB), RODATA|NOPTR, $32

DATA vc_lo<>+0(SB)/4, $0xc2aeac4f
DATA vc_lo<>+4(SB)/4, $0xc2aeac4f
DATA vc_lo<>+8(SB)/4, $0xc2aeac4f
DATA vc_lo<>+12(SB)/4, $0xc2aeac4f
DATA vc_lo<>+16(SB)/4, $0xc2aeac4f
DATA vc_lo<>+20(SB)/4, $0xc2aeac4f
DATA vc_lo<>+24(SB)/4, $0xc2aeac4f
DATA vc_lo<>+28(SB)/4, $0xc2aeac4f
GLOBL vc_lo<>(SB), RODATA|NOPTR, $32

DATA vc_hi<>+0(SB)/4, $0x42b17217
DATA vc_hi<>+4(SB)/4, $0x42b17217
DATA vc_hi<>+8(SB)/4, $0x42b17217
DATA vc_hi<>+12(SB)/4, $0x42b17217
DATA vc_hi<>+16(SB)/4, $0x42b17217
DATA vc_hi<>+20(SB)/4, $0x42b17217
DATA vc_hi<>+24(SB)/4, $0x42b17217
DATA vc_hi<>+28(SB)/4, $0x42b17217
GLOBL vc_hi<>(SB), RODATA|NOPTR, $32

DATA vc_bias<>+0(SB)/4, $127
DATA vc_bias<>+4(SB)/4, $127
DATA vc_bias<>+8(SB)/4, $127
DATA vc_bias<>+12(SB)/4, $127
DATA vc_bias<>+16(SB)/4, $127
DATA vc_bias<>+20(SB)/4, $127
DATA vc_bias<>+24(SB)/4, $127
DATA vc_bias<>+28(SB)/4, $127
GLOBL vc_bias<>(SB), RODATA|NOPTR, $32

// EXPCORE: Y0 = expCore(Y0) for 8 lanes (see expCore in vec.go for the
// steps: clamp to [lo, hi] keeping NaN, k = roundeven(t·log2e), r = t − k·ln2
// in two FMA steps, degree-6 Horner with FMA, scale by 2^(k>>1)·2^(k−k>>1)).
// Clobbers Y1–Y4.
#define EXPCORE \
	VMOVUPS vc_lo<>(SB), Y1; \
	VMAXPS Y0, Y1, Y0; \
	VMOVUPS vc_hi<>(SB), Y1; \
	VMINPS Y0, Y1, Y0; \
	VMULPS vc_log2e<>(SB), Y0, Y1; \
	VROUNDPS $0, Y1, Y1; \
	VMOVAPS Y0, Y2; \
	VFNMADD231PS vc_ln2hi<>(SB), Y1, Y2; \
	VFNMADD231PS vc_ln2lo<>(SB), Y1, Y2; \
	VMOVUPS vc_c6<>(SB), Y3; \
	VFMADD213PS vc_c5<>(SB), Y2, Y3; \
	VFMADD213PS vc_c4<>(SB), Y2, Y3; \
	VFMADD213PS vc_c3<>(SB), Y2, Y3; \
	VFMADD213PS vc_c2<>(SB), Y2, Y3; \
	VFMADD213PS vc_one<>(SB), Y2, Y3; \
	VFMADD213PS vc_one<>(SB), Y2, Y3; \
	VCVTPS2DQ Y1, Y1; \
	VPSRAD $1, Y1, Y4; \
	VPSUBD Y4, Y1, Y1; \
	VPADDD vc_bias<>(SB), Y4, Y4; \
	VPSLLD $23, Y4, Y4; \
	VPADDD vc_bias<>(SB), Y1, Y1; \
	VPSLLD $23, Y1, Y1; \
	VMULPS Y4, Y3, Y3; \
	VMULPS Y1, Y3, Y0

// SIGMOID: Y6 = 1/(1+exp(0−Y5)), as sigmoid in vec.go. Clobbers Y0–Y4.
#define SIGMOID \
	VXORPS Y0, Y0, Y0; \
	VSUBPS Y5, Y0, Y0; \
	EXPCORE; \
	VADDPS vc_one<>(SB), Y0, Y0; \
	VMOVUPS vc_one<>(SB), Y6; \
	VDIVPS Y0, Y6, Y6

// func expShiftAVX(x *float32, n int, scale, shift float32)
// x[i] = exp(x[i]*scale - shift), n a multiple of 8.
TEXT ·expShiftAVX(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), DI
	MOVQ n+8(FP), CX
	VBROADCASTSS scale+16(FP), Y8
	VBROADCASTSS shift+20(FP), Y9
	SHRQ $3, CX
expshift_loop:
	TESTQ CX, CX
	JZ expshift_done
	VMOVUPS (DI), Y0
	VMULPS Y8, Y0, Y0
	VSUBPS Y9, Y0, Y0
	EXPCORE
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	DECQ CX
	JMP expshift_loop
expshift_done:
	VZEROUPPER
	RET

// func swigluFwdAVX(h, g, u *float32, n int)
// h = g*sigmoid(g)*u, n a multiple of 8.
TEXT ·swigluFwdAVX(SB), NOSPLIT, $0-32
	MOVQ h+0(FP), DI
	MOVQ gate+8(FP), SI
	MOVQ u+16(FP), DX
	MOVQ n+24(FP), CX
	SHRQ $3, CX
swf_loop:
	TESTQ CX, CX
	JZ swf_done
	VMOVUPS (SI), Y5
	SIGMOID
	VMULPS Y6, Y5, Y7                   // g*sg
	VMULPS (DX), Y7, Y7                 // *u
	VMOVUPS Y7, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, DX
	DECQ CX
	JMP swf_loop
swf_done:
	VZEROUPPER
	RET

// func swigluBwdAVX(dg, du, dh, g, u *float32, n int)
// du = dh*(g*sg); dg = ((dh*u)*sg)*(1 + g*(1-sg)), n a multiple of 8.
TEXT ·swigluBwdAVX(SB), NOSPLIT, $0-48
	MOVQ dg+0(FP), DI
	MOVQ du+8(FP), R8
	MOVQ dh+16(FP), R9
	MOVQ gate+24(FP), SI
	MOVQ u+32(FP), DX
	MOVQ n+40(FP), CX
	SHRQ $3, CX
swb_loop:
	TESTQ CX, CX
	JZ swb_done
	VMOVUPS (SI), Y5
	SIGMOID
	VMOVUPS (R9), Y10                   // dh
	VMULPS Y6, Y5, Y7                   // silu = g*sg
	VMULPS Y7, Y10, Y7                  // du = dh*silu
	VMOVUPS Y7, (R8)
	VMOVUPS vc_one<>(SB), Y11
	VSUBPS Y6, Y11, Y12                 // 1 - sg
	VMULPS Y12, Y5, Y12                 // g*(1-sg)
	VADDPS Y11, Y12, Y12                // 1 + g*(1-sg)
	VMULPS (DX), Y10, Y13               // dh*u
	VMULPS Y6, Y13, Y13                 // *sg
	VMULPS Y12, Y13, Y13                // *(1 + g*(1-sg))
	VMOVUPS Y13, (DI)
	ADDQ $32, DI
	ADDQ $32, R8
	ADDQ $32, R9
	ADDQ $32, SI
	ADDQ $32, DX
	DECQ CX
	JMP swb_loop
swb_done:
	VZEROUPPER
	RET

// func adamwAVX(p, g, m, v *float32, n int, c *adamConst)
// The AdamW update of adamwGo for n (a multiple of 8) elements. c holds, in
// order: gs, b1, omb1, b2, omb2, ibc1, ibc2, eps, wd, lr.
TEXT ·adamwAVX(SB), NOSPLIT, $0-48
	MOVQ p+0(FP), DI
	MOVQ grad+8(FP), SI
	MOVQ m+16(FP), R8
	MOVQ v+24(FP), R9
	MOVQ n+32(FP), CX
	MOVQ c+40(FP), AX
	VBROADCASTSS 0(AX), Y6
	VBROADCASTSS 4(AX), Y7
	VBROADCASTSS 8(AX), Y8
	VBROADCASTSS 12(AX), Y9
	VBROADCASTSS 16(AX), Y10
	VBROADCASTSS 20(AX), Y11
	VBROADCASTSS 24(AX), Y12
	VBROADCASTSS 28(AX), Y13
	VBROADCASTSS 32(AX), Y14
	VBROADCASTSS 36(AX), Y15
	SHRQ $3, CX
adamw_loop:
	TESTQ CX, CX
	JZ adamw_done
	VMULPS (SI), Y6, Y0                 // g' = g*gs
	VMULPS (R8), Y7, Y1                 // b1*m
	VMULPS Y0, Y8, Y2                   // (1-b1)*g'
	VADDPS Y2, Y1, Y1                   // m
	VMOVUPS Y1, (R8)
	VMULPS (R9), Y9, Y2                 // b2*v
	VMULPS Y0, Y10, Y3                  // (1-b2)*g'
	VMULPS Y0, Y3, Y3                   // *g'
	VADDPS Y3, Y2, Y2                   // v
	VMOVUPS Y2, (R9)
	VMULPS Y12, Y2, Y3                  // v/bc2
	VSQRTPS Y3, Y3
	VADDPS Y13, Y3, Y3                  // sqrt(vhat)+eps
	VMULPS Y11, Y1, Y4                  // m/bc1
	VDIVPS Y3, Y4, Y4                   // mhat/den
	VMOVUPS (DI), Y5
	VMULPS Y5, Y14, Y0                  // wd*p
	VADDPS Y0, Y4, Y4
	VMULPS Y4, Y15, Y4                  // lr*upd
	VSUBPS Y4, Y5, Y5
	VMOVUPS Y5, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, R8
	ADDQ $32, R9
	DECQ CX
	JMP adamw_loop
adamw_done:
	VZEROUPPER
	RET

// func sumsqAVX(x *float32, n int, acc *[16]float64)
// acc[i%16] = fma(x[i], x[i], acc[i%16]) in float64, n a multiple of 16.
TEXT ·sumsqAVX(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ acc+16(FP), AX
	VMOVUPD 0(AX), Y0
	VMOVUPD 32(AX), Y1
	VMOVUPD 64(AX), Y2
	VMOVUPD 96(AX), Y3
	SHRQ $4, CX
sumsq_loop:
	TESTQ CX, CX
	JZ sumsq_done
	VCVTPS2PD 0(SI), Y4
	VCVTPS2PD 16(SI), Y5
	VCVTPS2PD 32(SI), Y6
	VCVTPS2PD 48(SI), Y7
	VFMADD231PD Y4, Y4, Y0
	VFMADD231PD Y5, Y5, Y1
	VFMADD231PD Y6, Y6, Y2
	VFMADD231PD Y7, Y7, Y3
	ADDQ $64, SI
	DECQ CX
	JMP sumsq_loop
sumsq_done:
	VMOVUPD Y0, 0(AX)
	VMOVUPD Y1, 32(AX)
	VMOVUPD Y2, 64(AX)
	VMOVUPD Y3, 96(AX)
	VZEROUPPER
	RET

// func sumAVX(x *float32, n int, acc *[16]float64)
// acc[i%16] += float64(x[i]), n a multiple of 16.
TEXT ·sumAVX(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	MOVQ acc+16(FP), AX
	VMOVUPD 0(AX), Y0
	VMOVUPD 32(AX), Y1
	VMOVUPD 64(AX), Y2
	VMOVUPD 96(AX), Y3
	SHRQ $4, CX
sum_loop:
	TESTQ CX, CX
	JZ sum_done
	VCVTPS2PD 0(SI), Y4
	VCVTPS2PD 16(SI), Y5
	VCVTPS2PD 32(SI), Y6
	VCVTPS2PD 48(SI), Y7
	VADDPD Y4, Y0, Y0
	VADDPD Y5, Y1, Y1
	VADDPD Y6, Y2, Y2
	VADDPD Y7, Y3, Y3
	ADDQ $64, SI
	DECQ CX
	JMP sum_loop
sum_done:
	VMOVUPD Y0, 0(AX)
	VMOVUPD Y1, 32(AX)
	VMOVUPD Y2, 64(AX)
	VMOVUPD Y3, 96(AX)
	VZEROUPPER
	RET

// func scaleAVX(x *float32, n int, s float32)
// x[i] *= s, n a multiple of 8.
TEXT ·scaleAVX(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS s+16(FP), Y1
	SHRQ $3, CX
scale_loop:
	TESTQ CX, CX
	JZ scale_done
	VMULPS (SI), Y1, Y0
	VMOVUPS Y0, (SI)
	ADDQ $32, SI
	DECQ CX
	JMP scale_loop
scale_done:
	VZEROUPPER
	RET

// func maxAVX(x *float32, n int) float32
// The largest of n (a multiple of 8, > 0) values; NaNs are not expected.
TEXT ·maxAVX(SB), NOSPLIT, $0-20
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VMOVUPS (SI), Y0
	ADDQ $32, SI
	SHRQ $3, CX
	DECQ CX
max_loop:
	TESTQ CX, CX
	JZ max_done
	VMAXPS (SI), Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JMP max_loop
max_done:
	VEXTRACTF128 $1, Y0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0x4e, X0, X1
	VMAXPS X1, X0, X0
	VPERMILPS $0xb1, X0, X1
	VMAXPS X1, X0, X0
	VMOVSS X0, ret+16(FP)
	VZEROUPPER
	RET
