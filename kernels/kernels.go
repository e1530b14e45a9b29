package kernels

import (
	"errors"
	"math"
)

// IgnoreIndex marks a target position that contributes neither loss nor
// gradient (prompt tokens during SFT, padding). It matches PyTorch's default.
const IgnoreIndex int32 = -100

// Errors returned by backends and helpers.
var (
	// ErrShape reports buffers whose lengths do not match the shapes given.
	ErrShape = errors.New("kernels: buffer length does not match shape")
	// ErrUnsupported reports an operation or option a backend cannot run here.
	ErrUnsupported = errors.New("kernels: unsupported on this backend")
)

// Buffer is an opaque handle to float32 storage owned by one Backend. Only that
// Backend may read or write it; the host sees its contents through Download.
type Buffer interface {
	// Len is the number of float32 elements.
	Len() int
}

// IntBuffer is an opaque handle to int32 storage owned by one Backend
// (token ids, targets, positions, document starts).
type IntBuffer interface {
	// Len is the number of int32 elements.
	Len() int
}

// AttnShape describes a batch for causal grouped-query attention.
// Tensors are row-major: q and out are [B, T, NH, HD]; k and v are
// [B, T, KVH, HD]; the per-row log-sum-exp saved for backward is [B, NH, T].
// Query head h reads key/value head h / (NH/KVH).
type AttnShape struct {
	B, T    int // batch, sequence length
	NH, KVH int // query heads, key/value heads (NH % KVH == 0)
	HD      int // head dimension
}

// AdamWStep holds the hyper-parameters of one AdamW update. Step counts from 1
// and drives bias correction. Weight decay is decoupled and scaled by LR, as in
// Loshchilov & Hutter (and torch.optim.AdamW).
type AdamWStep struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	Step                               int
	// GradScale multiplies the gradients before use; global-norm clipping
	// folds in here so the gradients need no separate pass. 0 means 1.
	GradScale float32
}

// Backend executes fomnet's operations on one device.
//
// Concurrency: a Backend is a single stream of work, like a CUDA stream. Its
// methods must be called from one goroutine at a time; the backend may use
// many threads inside one call. Calls are synchronous as far as the caller can
// observe: Download returns data that reflects every earlier call.
//
// Ownership: buffers belong to the backend that made them and stay valid until
// Close. Passing a buffer from another backend, or shapes that do not match
// buffer lengths, is a programmer error and panics with ErrShape.
//
// Arithmetic contract, shared by every backend so that results can be checked
// across machines: every dot product, matrix product and sum is computed in a
// fixed order that does not depend on the number of threads. Matmul computes
// each output element as one chain of fused multiply-adds over k = 0..K-1,
// starting from 0 (or from the existing output when accumulating).
type Backend interface {
	// Name identifies the backend and its code path, e.g. "cpu/avx2".
	Name() string
	// Threads is the number of threads the backend computes with.
	Threads() int
	// Close releases the backend's threads and memory; it is idempotent.
	Close() error

	// Alloc returns a zeroed buffer of n float32s.
	Alloc(n int) Buffer
	// AllocInt returns a zeroed buffer of n int32s.
	AllocInt(n int) IntBuffer
	// View returns a buffer aliasing b[off : off+n].
	View(b Buffer, off, n int) Buffer
	// Upload copies src into dst; len(src) must equal dst.Len().
	Upload(dst Buffer, src []float32)
	// UploadInt copies src into dst; len(src) must equal dst.Len().
	UploadInt(dst IntBuffer, src []int32)
	// Download copies src into dst; len(dst) must equal src.Len().
	Download(dst []float32, src Buffer)

	// Zero sets every element of b to 0.
	Zero(b Buffer)
	// Copy copies src into dst (equal lengths).
	Copy(dst, src Buffer)
	// Scale multiplies every element of b by s.
	Scale(b Buffer, s float32)
	// SumSquares returns the sum of squares of b, accumulated in float64 over
	// fixed chunks of 4096 elements that are then added in order (within a
	// chunk, 16 interleaved lanes of float64 FMAs added in lane order).
	SumSquares(b Buffer) float64

	// Matmul computes C = (acc ? C : 0) + op(A)·op(B) with C row-major [M,N].
	// op(A) is [M,K]: A is stored [M,K], or [K,M] when transA. op(B) is [K,N]:
	// B is stored [K,N], or [N,K] when transB.
	Matmul(c, a, b Buffer, m, n, k int, transA, transB, acc bool)

	// EmbeddingForward: out[N,C] = table[tokens[n], :].
	EmbeddingForward(out, table Buffer, tokens IntBuffer, n, c int)
	// EmbeddingBackward: dtable[tokens[n], :] += dout[n, :], in order of n.
	EmbeddingBackward(dtable, dout Buffer, tokens IntBuffer, n, c int)

	// RMSNormForward: rstd[n] = 1/sqrt(mean(inp[n,:]²) + eps);
	// out[n,c] = inp[n,c] * rstd[n] * weight[c].
	RMSNormForward(out, rstd, inp, weight Buffer, n, c int, eps float32)
	// RMSNormBackward accumulates: dinp += ∂L/∂inp, dweight += ∂L/∂weight.
	RMSNormBackward(dinp, dweight, dout, inp, weight, rstd Buffer, n, c int)

	// RoPEForward rotates x[N, heads, hd] by angle pos[n]·θ^(-2i/hd) on the
	// pairs (i, i+hd/2) (the Hugging Face Llama "rotate_half" layout) into
	// dst: x itself, or another buffer of its size (on the GPU's bf16 path a
	// bfloat16 one, rounded once).
	RoPEForward(dst, x Buffer, pos IntBuffer, n, heads, hd int, theta float64)
	// RoPEBackward applies the inverse rotation to the gradient dx, into
	// dst as RoPEForward does.
	RoPEBackward(dst, dx Buffer, pos IntBuffer, n, heads, hd int, theta float64)

	// AttentionForward computes causal softmax(q·kᵀ/√HD)·v where query t of a
	// sequence sees keys s with docStart[b·T+t] <= s <= t only (documents
	// packed in one sequence never see each other). It writes out and the
	// per-row log-sum-exp lse used by backward. On the GPU's bf16 path q,
	// k and v may be bfloat16 buffers.
	AttentionForward(out, lse, q, k, v Buffer, docStart IntBuffer, s AttnShape)
	// AttentionBackward overwrites dq, dk and dv (on the GPU's bf16 path
	// dv, which only linear products read, and dout may be bfloat16
	// buffers).
	AttentionBackward(dq, dk, dv, dout, q, k, v, out, lse Buffer, docStart IntBuffer, s AttnShape)

	// SwiGLUForward: h = silu(g) * u, elementwise over n values.
	SwiGLUForward(h, g, u Buffer, n int)
	// SwiGLUBackward overwrites dg and du from dh.
	SwiGLUBackward(dg, du, dh, g, u Buffer, n int)

	// SoftmaxCrossEntropy computes, for each of n rows of logits[n,v],
	// losses[i] = logsumexp(logits[i]) - logits[i, targets[i]], or 0 where
	// targets[i] == IgnoreIndex. Given dlogits (nil: no gradient), it
	// writes dscale·(softmax(logits[i]) - onehot(targets[i])) there (zero on
	// ignored rows): into logits itself, or into another buffer of n·v
	// values (on the GPU's bf16 path a bfloat16 one, which linear products
	// read as it is). Targets must lie in [0, v) or equal IgnoreIndex.
	SoftmaxCrossEntropy(losses, logits, dlogits Buffer, targets IntBuffer, n, v int, dscale float32)

	// AdamW updates params in place from grads, with first and second moment
	// buffers m and v of the same length.
	AdamW(params, grads, m, v Buffer, h AdamWStep)
}

// WorkspaceBytes bounds the scratch be grows for matrix products whose
// op(A) has at most rows rows and attention over seq tokens (0 where the
// backend does not say).
func WorkspaceBytes(be Backend, rows, seq int) int64 {
	if w, ok := be.(interface{ WorkspaceBound(rows, seq int) int64 }); ok {
		return w.WorkspaceBound(rows, seq)
	}
	if t, ok := be.(*Timed); ok {
		return WorkspaceBytes(t.Backend, rows, seq)
	}
	return 0
}

// ClipScale returns the factor that brings a gradient of L2 norm `norm` down
// to at most maxNorm (1 when no clipping is needed or maxNorm <= 0).
func ClipScale(norm, maxNorm float64) float32 {
	if maxNorm > 0 && norm > maxNorm && !math.IsInf(norm, 0) && !math.IsNaN(norm) {
		return float32(maxNorm / norm)
	}
	return 1
}

// ClipGlobalNorm scales grads so that their L2 norm is at most maxNorm and
// returns the norm before clipping. maxNorm <= 0 disables clipping. A
// non-finite norm is returned unchanged and grads are left as they are, so the
// caller can skip the step.
func ClipGlobalNorm(be Backend, grads Buffer, maxNorm float64) float64 {
	norm := math.Sqrt(be.SumSquares(grads))
	if s := ClipScale(norm, maxNorm); s != 1 {
		be.Scale(grads, s)
	}
	return norm
}

// Err returns the first device error a backend recorded, or nil. Backends
// whose devices can fail at run time (a GPU running out of memory, a failed
// kernel launch) record the error instead of panicking and skip later work;
// callers check Err after a step. The CPU backend never fails this way.
func Err(be Backend) error {
	if e, ok := be.(interface{ Err() error }); ok {
		return e.Err()
	}
	return nil
}

// RoPETable returns the rotary embedding's cos/sin rows for positions
// [0, rows): row p holds cos(p·f_j) for j < hd/2, then sin(p·f_j), with
// f_j = θ^(−2j/hd), computed in float64 and rounded to float32. Every
// backend rotates with this table, so their RoPE agrees bit for bit.
func RoPETable(hd int, theta float64, rows int) []float32 {
	tab := make([]float32, rows*hd)
	half := hd / 2
	for p := 0; p < rows; p++ {
		for j := 0; j < half; j++ {
			f := math.Pow(theta, -2*float64(j)/float64(hd))
			s, c := math.Sincos(float64(p) * f)
			tab[p*hd+j] = float32(c)
			tab[p*hd+half+j] = float32(s)
		}
	}
	return tab
}
