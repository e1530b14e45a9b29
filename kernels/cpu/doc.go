// Package cpu is fomnet's default compute backend: pure Go plus Go assembly
// for the hot loops, selected at run time from what the processor offers.
//
//	be := cpu.New(cpu.Options{Threads: 2})
//	defer be.Close()
//	be.Matmul(c, a, b, m, n, k, false, true, false)
//
// Code paths: "avx2" (AVX2 + FMA3 micro-kernels in matmul_amd64.s) and
// "generic" (portable Go). Both compute every output element with the same
// chain of fused multiply-adds in the same order (math.FMA in Go, VFMADD in
// assembly), so they agree bit for bit; the tests check that.
// An AVX-512 path is not written yet: the machines this project builds and
// tests on have no AVX-512 unit, and untested assembly is not shipped.
//
// Builds: with GOAMD64=v3 the Go compiler fuses a*b+c into one FMA, which
// would change results between builds. Every Go definition therefore rounds
// its products explicitly (float32(a*b) + c), and .ci/run checks that v1 and
// v3 builds train byte-identical checkpoints.
//
// Threads: a Backend owns a fixed pool of worker goroutines started by New and
// stopped by Close. Work is split into items whose results never depend on
// which worker computed them; every reduction runs over a fixed partition in
// a fixed order. Results are therefore bit-identical for any thread count.
//
// Why hand-written: gonum's pure-Go sgemm reaches about a tenth of what
// a packed, register-blocked FMA kernel does on the same core, and cgo BLAS
// would make the static volunteer binary depend on a system library and give
// thread-count-dependent rounding. The fused attention, RMSNorm, RoPE, SwiGLU
// and cross-entropy kernels have no Go library at all.
//
// What this package does not do: it does not allocate inside the training
// step once its per-worker scratch has grown to the largest shape seen, and
// it does not check numerical health; callers inspect losses and norms.
package cpu
