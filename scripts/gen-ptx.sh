#!/usr/bin/env bash
# gen-ptx.sh — compile kernels/cuda/*.cu to PTX for sm_80 (newer GPUs JIT it)
# into kernels/cuda/ptx/, which is committed and embedded in -tags cuda builds.
# Run by `go generate ./kernels/cuda`; needs nvcc ≥ 11.8 (scripts/cuda-apt.sh
# nvcc installs Debian's 11.8).
#
#   scripts/gen-ptx.sh [OUTDIR]     default OUTDIR: kernels/cuda/ptx
#
# Each PTX file starts with the line "// fomnet-sources: <sha256>", the hash
# of its .cu file and every .cuh header (ptxSourcesHash in
# kernels/cuda/ptx_test.go computes the same; the test fails when a source
# changed and its PTX was not regenerated).
#
# -fmad=false: nvcc must not fuse a multiply and an add that a kernel rounds
# separately (the fp32 path reproduces the CPU backend bit for bit). The
# tensor-core files of the bf16 path (gemm.cu, flash.cu) promise no such
# thing and are compiled with fusion allowed.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/kernels/cuda/ptx}
command -v nvcc >/dev/null || { echo "gen-ptx: nvcc not found (install it with scripts/cuda-apt.sh nvcc)" >&2; exit 1; }
mkdir -p "$out"
cd "$root/kernels/cuda"
for cu in *.cu; do
	case $cu in
	gemm.cu | flash.cu) fmad=true ;;
	*) fmad=false ;;
	esac
	sum=$({
		printf '%s\0' "$cu"
		cat "$cu"
		for h in *.cuh; do
			printf '%s\0' "$h"
			cat "$h"
		done
	} | sha256sum | cut -d' ' -f1)
	tmp=$(mktemp)
	nvcc -ptx -arch=compute_80 -fmad=$fmad -O3 -std=c++17 -o "$tmp" "$cu"
	{
		echo "// fomnet-sources: $sum"
		cat "$tmp"
	} >"$out/${cu%.cu}.ptx"
	rm -f "$tmp"
done
