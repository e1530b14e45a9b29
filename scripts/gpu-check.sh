#!/usr/bin/env bash
# gpu-check.sh — the CUDA backend's checks on a real GPU, in two halves:
#
#   scripts/gpu-check.sh build    (here: needs Go and scripts/cuda-apt.sh headers)
#       builds .gpu/cuda.test (kernels/cuda's tests and benchmarks, -tags cuda)
#       and .gpu/fomnet (the CLI, -tags cuda)
#   scripts/gpu-check.sh run      (on the GPU machine: needs only the driver)
#       every op against the CPU backend (fp32 bit for bit, bf16 within 1e-2),
#       the tiny model's 200-step loss curve, GEMM TFLOP/s, a gpt2-small-like
#       training step's MFU, and `fomnet bench train --device cuda` in both
#       precisions, and cuBLAS (through PyTorch, where the machine has it)
#       at the same GEMM sizes for comparison; output under ${OUT:-.gpu/out}
#
# With the device tool: build here, then run `bash scripts/gpu-check.sh run`
# there with carry [".gpu"].
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
build)
	hdr=${CUDA_HEADERS:-$root/.ci/cuda}
	bash scripts/cuda-apt.sh headers "$hdr"
	export CGO_CFLAGS="-I$hdr/usr/include" CGO_LDFLAGS="-L$hdr/usr/lib/x86_64-linux-gnu/stubs"
	mkdir -p .gpu
	go test -tags cuda -c -o .gpu/cuda.test ./kernels/cuda
	go build -tags cuda -o .gpu/fomnet ./cmd/fomnet
	ls -la .gpu
	;;
run)
	out=${OUT:-$root/.gpu/out}
	mkdir -p "$out"
	nvidia-smi >"$out/nvidia-smi.txt" 2>&1 || true
	(cd kernels/cuda && ../../.gpu/cuda.test -test.v -test.count=1 -test.timeout=8m) 2>&1 | tee "$out/tests.txt"
	(cd kernels/cuda && ../../.gpu/cuda.test -test.run='^$' -test.bench=GPU -test.benchtime=20x) 2>&1 | tee "$out/bench.txt"
	# cuBLAS on the same GPU, through the machine's PyTorch where it has one:
	# the yardstick for BenchmarkGPUGEMM.
	python3 - <<'PY' 2>&1 | tee "$out/cublas.txt" || true
import time, torch
for dt, name in ((torch.bfloat16, "bf16"), (torch.float32, "fp32 (no TF32)")):
    torch.backends.cuda.matmul.allow_tf32 = False
    for n in (4096, 8192):
        a = torch.randn(n, n, device="cuda", dtype=dt); b = torch.randn(n, n, device="cuda", dtype=dt)
        for _ in range(3): a @ b.T
        torch.cuda.synchronize(); t = time.time()
        for _ in range(10): a @ b.T
        torch.cuda.synchronize()
        print(f"cuBLAS {name} {n}^3: {2*n**3*10/(time.time()-t)/1e12:.1f} TFLOP/s")
PY
	for p in bf16 fp32; do
		.gpu/fomnet bench train --device cuda --precision $p --preset gpt2-small-like --batch 16 --seq 1024 --steps 5 --json \
			>"$out/bench-train-$p.json" 2>"$out/bench-train-$p.log" || true
		cat "$out/bench-train-$p.json"
	done
	;;
*)
	echo "usage: gpu-check.sh build | run" >&2
	exit 2
	;;
esac
