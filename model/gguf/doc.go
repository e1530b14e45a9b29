// Package gguf writes and reads GGUF v3 files, the single-file model format
// of llama.cpp and the ggml libraries, and converts float32 tensors to its
// element types F32, F16, BF16 and Q8_0.
//
// The layout (all little-endian):
//
//	"GGUF" | version u32 (3) | tensor count u64 | metadata count u64
//	metadata: key string | value type u32 | value
//	tensor infos: name string | n_dims u32 | dims u64… | ggml type u32 | offset u64
//	padding to the alignment (general.alignment, default 32)
//	tensor data, each tensor at its offset (a multiple of the alignment)
//
// A string is its byte length (u64) and bytes; an array is the element type
// (u32), the count (u64) and the elements. Dims list the fastest-varying
// dimension first: a row-major [rows, cols] matrix has dims [cols, rows].
//
// Written here against the format's public description: no Go library of
// the field writes GGUF, and the writer is small. Read exists to check what
// Write produced (tests, `fomnet checkpoint verify`) and is fuzzed.
package gguf
