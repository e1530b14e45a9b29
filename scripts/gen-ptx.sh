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
# Files named *_sm90a.cu hold Hopper-only instructions (wgmma) and become
# PTX for sm_90a, which the backend loads only on a compute-capability-9.0
# GPU. nvcc 11.8 has no sm_90a target but passes inline PTX through: there
# the file is compiled for compute_90 and its header raised to PTX 8.0 for
# sm_90a (what the instructions need); nvcc ≥ 12 targets compute_90a itself.
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
release=$(nvcc --version | sed -n 's/.*release \([0-9]*\)\..*/\1/p')
for cu in *.cu; do
	case $cu in
	gemm.cu | gemm_sm90a.cu | flash.cu) fmad=true ;;
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
	case $cu in
	*_sm90a.cu)
		if [ "$release" -ge 12 ]; then
			nvcc -ptx -arch=compute_90a -fmad=$fmad -O3 -std=c++17 -o "$tmp" "$cu"
		else
			nvcc -ptx -arch=compute_90 -fmad=$fmad -O3 -std=c++17 -o "$tmp" "$cu"
			sed -i 's/^\.version .*/.version 8.0/; s/^\.target sm_90$/.target sm_90a/' "$tmp"
		fi
		;;
	*) nvcc -ptx -arch=compute_80 -fmad=$fmad -O3 -std=c++17 -o "$tmp" "$cu" ;;
	esac
	{
		echo "// fomnet-sources: $sum"
		cat "$tmp"
	} >"$out/${cu%.cu}.ptx"
	rm -f "$tmp"
done
