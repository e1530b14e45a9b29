// AVX2 versions of 8-bit AdamW's phases (kernels.Adam8Decode, Adam8Roots,
// Adam8EncodeV, Adam8EncodeM) for n values, n a multiple of 8: the same
// float32 operations and the same integer arithmetic on the bits, so both
// paths agree bit for bit on finite moments. A code's value is built from
// its bits, not looked up: no gathers (slow on processors with the
// Gather Data Sampling mitigation, and slower than the arithmetic here). k points to adam8Consts
// (adam8.go): 32-byte rows of broadcast constants at these offsets.

//go:build amd64

#include "textflag.h"

#define K_LANES 0
#define K_EIGHT 32
#define K_H1 64
#define K_H2 96
#define K_H3 128
#define K_LOW23 160
#define K_LOW19 192
#define K_ABS 224
#define K_ONEF 256
#define K_ONE 288
#define K_SIGN8 320
#define K_V 352
#define K_M 448
#define K_FIFTEEN 544
#define K_LOW7 576
#define K_VSTEP 608
#define K_MSTEP 640

// HASH turns Y0 = 2·i + odd, i the lanes' indices, into kernels.adamBits
// of i with the step's term in Y13; Y1 is clobbered.
#define HASH \
	VPMULLD K_H1(R9), Y0, Y0; \
	VPXOR Y13, Y0, Y0; \
	VPSRLD $16, Y0, Y1; \
	VPXOR Y1, Y0, Y0; \
	VPMULLD K_H2(R9), Y0, Y0; \
	VPSRLD $15, Y0, Y1; \
	VPXOR Y1, Y0, Y0; \
	VPMULLD K_H3(R9), Y0, Y0; \
	VPSRLD $16, Y0, Y1; \
	VPXOR Y1, Y0, Y0

// FLOATCODE leaves in Y4 kernels.floatCode of r ∈ [0, 1] in Y3 with the
// random bits Y0, for the format whose three rows (threshold, rebias,
// scale) start at C; Y5 and Y6 are clobbered.
#define FLOATCODE(C) \
	VPAND K_LOW23(R9), Y0, Y5; \
	VMULPS C+64(R9), Y3, Y6; \
	VCVTTPS2DQ Y6, Y6; \
	VPADDD Y5, Y6, Y6; \
	VPSRLD $23, Y6, Y6; \
	VPAND K_LOW19(R9), Y0, Y5; \
	VPSUBD C+32(R9), Y3, Y4; \
	VPADDD Y5, Y4, Y4; \
	VPSRLD $19, Y4, Y4; \
	VMOVDQU C(R9), Y5; \
	VPCMPGTD Y3, Y5, Y5; \
	VBLENDVPS Y5, Y6, Y4, Y4

// VALUE leaves in OUT the value at scale 1 of the codes' exponent and
// mantissa in IN (below 128), the float they stand for built from their
// bits (kernels.DecodeV's and DecodeM's tables without a lookup): for
// exponent e ≥ 1 the bits move into the float's exponent and mantissa,
// rebiased by row C+32 (C: K_V or K_M); e = 0 is the code times STEP
// (2^-18 or 2^-10, exact). Y5 and Y6 are clobbered.
#define VALUE(IN, OUT, C, STEP) \
	VPSLLD $19, IN, OUT; \
	VPADDD C+32(R9), OUT, OUT; \
	VCVTDQ2PS IN, Y6; \
	VMULPS STEP(R9), Y6, Y6; \
	VMOVDQU K_FIFTEEN(R9), Y5; \
	VPCMPGTD Y5, IN, Y5; \
	VBLENDVPS Y5, OUT, Y6, OUT

// VALUEV leaves in Y7 the value of v's codes in Y4.
#define VALUEV VALUE(Y4, Y7, K_V, K_VSTEP)

// VALUEM leaves in Y8 the value of m's codes in Y0 (sign, exponent,
// mantissa): VALUE of the low 7 bits, the sign or'd in; Y9 is clobbered
// too.
#define VALUEM \
	VPAND K_LOW7(R9), Y0, Y9; \
	VALUE(Y9, Y8, K_M, K_MSTEP); \
	VPAND K_SIGN8(R9), Y0, Y9; \
	VPSLLD $24, Y9, Y9; \
	VPOR Y9, Y8, Y8

// STORECODES writes the 8 dwords of Y4 (each < 256) as bytes at (DX);
// Y5 is clobbered.
#define STORECODES \
	VEXTRACTI128 $1, Y4, X5; \
	VPACKUSDW X5, X4, X5; \
	VPACKUSWB X5, X5, X5; \
	VMOVQ X5, (DX)

// func adam8DecodeAVX(m, v *float32, mq, vq *uint8, n int, ms, vs float32, k *adam8Consts)
TEXT ·adam8DecodeAVX(SB), NOSPLIT, $0-56
	MOVQ m+0(FP), DI
	MOVQ v+8(FP), SI
	MOVQ mq+16(FP), R10
	MOVQ vq+24(FP), R11
	MOVQ n+32(FP), CX
	VBROADCASTSS ms+40(FP), Y14
	VBROADCASTSS vs+44(FP), Y15
	MOVQ k+48(FP), R9
	SHRQ $3, CX
dec_loop:
	TESTQ CX, CX
	JZ dec_done
	VPMOVZXBD (R11), Y4
	VALUEV
	VMULPS Y7, Y15, Y3                  // w = vs·(v's code's value)
	VPMOVZXBD (R10), Y0
	VALUEM
	VMULPS Y8, Y14, Y8                  // ms·(m's code's value)
	VMULPS Y3, Y8, Y8                   // m = (m/w)·w
	VMOVUPS Y8, (DI)
	VMULPS Y3, Y3, Y5                   // v = w·w
	VMOVUPS Y5, (SI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $8, R10
	ADDQ $8, R11
	DECQ CX
	JMP dec_loop
dec_done:
	VZEROUPPER
	RET

// func adam8RootsAVX(v *float32, n int) float32
TEXT ·adam8RootsAVX(SB), NOSPLIT, $0-20
	MOVQ v+0(FP), SI
	MOVQ n+8(FP), CX
	VXORPS Y7, Y7, Y7
	SHRQ $3, CX
roots_loop:
	TESTQ CX, CX
	JZ roots_done
	VSQRTPS (SI), Y0
	VMOVUPS Y0, (SI)
	VMAXPS Y7, Y0, Y7                   // w > max ? w : max
	ADDQ $32, SI
	DECQ CX
	JMP roots_loop
roots_done:
	VEXTRACTF128 $1, Y7, X1
	VMAXPS X1, X7, X7
	VPERMILPS $0x4e, X7, X1
	VMAXPS X1, X7, X7
	VPERMILPS $0xb1, X7, X1
	VMAXPS X1, X7, X7
	VMOVSS X7, ret+16(FP)
	VZEROUPPER
	RET

// func adam8EncodeVAVX(w, m *float32, vq *uint8, n int, s float32, base, stepMix uint32, k *adam8Consts) float32
TEXT ·adam8EncodeVAVX(SB), NOSPLIT, $0-60
	MOVQ w+0(FP), DI
	MOVQ m+8(FP), SI
	MOVQ vq+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS s+32(FP), Y15
	VBROADCASTSS base+36(FP), Y14
	VBROADCASTSS stepMix+40(FP), Y13
	MOVQ k+48(FP), R9
	VPADDD K_LANES(R9), Y14, Y14        // the lanes' indices
	VXORPS Y12, Y12, Y12                // largest |m/w|
	VXORPS Y11, Y11, Y11
	SHRQ $3, CX
encv_loop:
	TESTQ CX, CX
	JZ encv_done
	VPADDD Y14, Y14, Y0
	HASH
	VMOVUPS (DI), Y2                    // w
	VDIVPS Y15, Y2, Y3
	VMINPS K_ONEF(R9), Y3, Y3           // r = min(w/s, 1)
	FLOATCODE(K_V)
	VPMAXSD K_ONE(R9), Y4, Y4           // never 0 for w > 0
	VCMPPS $0x1e, Y11, Y2, Y5           // w > 0
	VPAND Y5, Y4, Y4
	STORECODES
	VALUEV
	VMULPS Y7, Y15, Y7                  // w as decoded
	VMOVUPS (SI), Y8
	VDIVPS Y7, Y8, Y8
	VCMPPS $0x1e, Y11, Y7, Y9
	VANDPS Y9, Y8, Y8                   // m/w, or 0 where w decodes to 0
	VMOVUPS Y8, (SI)
	VANDPS K_ABS(R9), Y8, Y8
	VMAXPS Y12, Y8, Y12
	VPADDD K_EIGHT(R9), Y14, Y14
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $8, DX
	DECQ CX
	JMP encv_loop
encv_done:
	VEXTRACTF128 $1, Y12, X1
	VMAXPS X1, X12, X12
	VPERMILPS $0x4e, X12, X1
	VMAXPS X1, X12, X12
	VPERMILPS $0xb1, X12, X1
	VMAXPS X1, X12, X12
	VMOVSS X12, ret+56(FP)
	VZEROUPPER
	RET

// func adam8EncodeMAVX(m *float32, mq *uint8, n int, s float32, base, stepMix uint32, k *adam8Consts)
TEXT ·adam8EncodeMAVX(SB), NOSPLIT, $0-48
	MOVQ m+0(FP), DI
	MOVQ mq+8(FP), DX
	MOVQ n+16(FP), CX
	VBROADCASTSS s+24(FP), Y15
	VBROADCASTSS base+28(FP), Y14
	VBROADCASTSS stepMix+32(FP), Y13
	MOVQ k+40(FP), R9
	VPADDD K_LANES(R9), Y14, Y14
	VPXOR Y11, Y11, Y11
	SHRQ $3, CX
encm_loop:
	TESTQ CX, CX
	JZ encm_done
	VPADDD Y14, Y14, Y0
	VPADDD K_ONE(R9), Y0, Y0            // m's bits are the odd ones
	HASH
	VMOVUPS (DI), Y2                    // x = m/w
	VANDPS K_ABS(R9), Y2, Y3
	VDIVPS Y15, Y3, Y3
	VMINPS K_ONEF(R9), Y3, Y3           // r = min(|x|/s, 1)
	FLOATCODE(K_M)
	VPSRLD $24, Y2, Y5
	VPAND K_SIGN8(R9), Y5, Y5
	VPCMPEQD Y11, Y4, Y6
	VPANDN Y5, Y6, Y5                   // the sign where the code is not 0
	VPOR Y5, Y4, Y4
	VPSLLD $1, Y2, Y6
	VPCMPEQD Y11, Y6, Y6
	VPANDN Y4, Y6, Y4                   // 0 for x = ±0
	STORECODES
	VPADDD K_EIGHT(R9), Y14, Y14
	ADDQ $32, DI
	ADDQ $8, DX
	DECQ CX
	JMP encm_loop
encm_done:
	VZEROUPPER
	RET
