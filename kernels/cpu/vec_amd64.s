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
	VMOVUPS vc_lo<>(SB), Y1
	VMAXPS Y0, Y1, Y0                   // t = max(lo, t); a NaN t is kept
	VMOVUPS vc_hi<>(SB), Y1
	VMINPS Y0, Y1, Y0                   // t = min(hi, t)
	VMULPS vc_log2e<>(SB), Y0, Y1       // k = roundeven(t*log2e)
	VROUNDPS $0, Y1, Y1
	VMOVAPS Y0, Y2                      // r = t - k*ln2hi (exact product)
	VFNMADD231PS vc_ln2hi<>(SB), Y1, Y2
	VFNMADD231PS vc_ln2lo<>(SB), Y1, Y2 // r = r - k*ln2lo, one rounding
	VMOVUPS vc_c6<>(SB), Y3             // p = Horner with FMA
	VFMADD213PS vc_c5<>(SB), Y2, Y3
	VFMADD213PS vc_c4<>(SB), Y2, Y3
	VFMADD213PS vc_c3<>(SB), Y2, Y3
	VFMADD213PS vc_c2<>(SB), Y2, Y3
	VFMADD213PS vc_one<>(SB), Y2, Y3
	VFMADD213PS vc_one<>(SB), Y2, Y3
	VCVTPS2DQ Y1, Y1                    // k as int32
	VPSRAD $1, Y1, Y4                   // k1 = k>>1, k2 = k-k1
	VPSUBD Y4, Y1, Y1
	VPADDD vc_bias<>(SB), Y4, Y4
	VPSLLD $23, Y4, Y4                  // 2^k1
	VPADDD vc_bias<>(SB), Y1, Y1
	VPSLLD $23, Y1, Y1                  // 2^k2
	VMULPS Y4, Y3, Y3
	VMULPS Y1, Y3, Y0                   // p*2^k1*2^k2
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
	VXORPS Y0, Y0, Y0
	VSUBPS Y5, Y0, Y0                   // t = 0 - g (exact negation)
	VMOVUPS vc_lo<>(SB), Y1
	VMAXPS Y0, Y1, Y0                   // t = max(lo, t); a NaN t is kept
	VMOVUPS vc_hi<>(SB), Y1
	VMINPS Y0, Y1, Y0                   // t = min(hi, t)
	VMULPS vc_log2e<>(SB), Y0, Y1       // k = roundeven(t*log2e)
	VROUNDPS $0, Y1, Y1
	VMOVAPS Y0, Y2                      // r = t - k*ln2hi (exact product)
	VFNMADD231PS vc_ln2hi<>(SB), Y1, Y2
	VFNMADD231PS vc_ln2lo<>(SB), Y1, Y2 // r = r - k*ln2lo, one rounding
	VMOVUPS vc_c6<>(SB), Y3             // p = Horner with FMA
	VFMADD213PS vc_c5<>(SB), Y2, Y3
	VFMADD213PS vc_c4<>(SB), Y2, Y3
	VFMADD213PS vc_c3<>(SB), Y2, Y3
	VFMADD213PS vc_c2<>(SB), Y2, Y3
	VFMADD213PS vc_one<>(SB), Y2, Y3
	VFMADD213PS vc_one<>(SB), Y2, Y3
	VCVTPS2DQ Y1, Y1                    // k as int32
	VPSRAD $1, Y1, Y4                   // k1 = k>>1, k2 = k-k1
	VPSUBD Y4, Y1, Y1
	VPADDD vc_bias<>(SB), Y4, Y4
	VPSLLD $23, Y4, Y4                  // 2^k1
	VPADDD vc_bias<>(SB), Y1, Y1
	VPSLLD $23, Y1, Y1                  // 2^k2
	VMULPS Y4, Y3, Y3
	VMULPS Y1, Y3, Y0                   // p*2^k1*2^k2
	VADDPS vc_one<>(SB), Y0, Y0         // 1 + e
	VMOVUPS vc_one<>(SB), Y6
	VDIVPS Y0, Y6, Y6                   // sg = 1/(1+e)
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
	VXORPS Y0, Y0, Y0
	VSUBPS Y5, Y0, Y0                   // t = 0 - g (exact negation)
	VMOVUPS vc_lo<>(SB), Y1
	VMAXPS Y0, Y1, Y0                   // t = max(lo, t); a NaN t is kept
	VMOVUPS vc_hi<>(SB), Y1
	VMINPS Y0, Y1, Y0                   // t = min(hi, t)
	VMULPS vc_log2e<>(SB), Y0, Y1       // k = roundeven(t*log2e)
	VROUNDPS $0, Y1, Y1
	VMOVAPS Y0, Y2                      // r = t - k*ln2hi (exact product)
	VFNMADD231PS vc_ln2hi<>(SB), Y1, Y2
	VFNMADD231PS vc_ln2lo<>(SB), Y1, Y2 // r = r - k*ln2lo, one rounding
	VMOVUPS vc_c6<>(SB), Y3             // p = Horner with FMA
	VFMADD213PS vc_c5<>(SB), Y2, Y3
	VFMADD213PS vc_c4<>(SB), Y2, Y3
	VFMADD213PS vc_c3<>(SB), Y2, Y3
	VFMADD213PS vc_c2<>(SB), Y2, Y3
	VFMADD213PS vc_one<>(SB), Y2, Y3
	VFMADD213PS vc_one<>(SB), Y2, Y3
	VCVTPS2DQ Y1, Y1                    // k as int32
	VPSRAD $1, Y1, Y4                   // k1 = k>>1, k2 = k-k1
	VPSUBD Y4, Y1, Y1
	VPADDD vc_bias<>(SB), Y4, Y4
	VPSLLD $23, Y4, Y4                  // 2^k1
	VPADDD vc_bias<>(SB), Y1, Y1
	VPSLLD $23, Y1, Y1                  // 2^k2
	VMULPS Y4, Y3, Y3
	VMULPS Y1, Y3, Y0                   // p*2^k1*2^k2
	VADDPS vc_one<>(SB), Y0, Y0         // 1 + e
	VMOVUPS vc_one<>(SB), Y6
	VDIVPS Y0, Y6, Y6                   // sg = 1/(1+e)
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
