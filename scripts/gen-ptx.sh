#!/usr/bin/env bash
# gen-ptx.sh — compile kernels/cuda/*.cu to PTX for sm_80 (newer GPUs JIT it)
# into kernels/cuda/ptx/, which is committed and embedded in -tags cuda builds.
# Run by `go generate ./kernels/cuda`; needs nvcc (scripts/cuda-apt.sh nvcc).
#
#   scripts/gen-ptx.sh [OUTDIR]     default OUTDIR: kernels/cuda/ptx
#
# -fmad=false: nvcc must not fuse a multiply and an add that a kernel rounds
# separately (the fp32 path reproduces the CPU backend bit for bit).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root/kernels/cuda/ptx}
command -v nvcc >/dev/null || { echo "gen-ptx: nvcc not found (install it with scripts/cuda-apt.sh nvcc)" >&2; exit 1; }
mkdir -p "$out"
cd "$root/kernels/cuda"
for cu in *.cu; do
	nvcc -ptx -arch=compute_80 -fmad=false -O3 -std=c++17 -o "$out/${cu%.cu}.ptx" "$cu"
done
