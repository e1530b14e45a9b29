#!/usr/bin/env bash
# gpu-check.sh — the CUDA backend's checks and benchmarks on a real GPU, in
# two halves:
#
#   scripts/gpu-check.sh build    (here: needs Go and scripts/cuda-apt.sh headers)
#       builds .gpu/cuda.test (kernels/cuda's tests and benchmarks, -tags cuda)
#       and .gpu/fomnet (the CLI, -tags cuda), stripped
#   scripts/gpu-check.sh run      (on the GPU machine: needs only the driver;
#                                  uses its nvcc, ptxas, PyTorch and
#                                  compute-sanitizer where it has them)
#
# run, in order, each step with its own time limit (4 to 5 minutes on an
# H200 in pass 5; the three train steps added since, --weight-copy and the
# demo preset's queued and waited launches, about one more), writing under
# ${OUT:-.gpu/out} (at most 9
# files, as the device tool returns). STEPS="name …" runs only the steps
# named (default: all), TESTS=REGEX only those tests in the tests step
# (default ^TestGPU: the emulator's tests run in CI, and all of them together
# outlast the step's limit there).
#   summary.txt     nvidia-smi, each step's exit status and time
#   ptxas.txt       the GPU machine's ptxas on the committed PTX (registers,
#                   spills; sm_90a for *_sm90a.ptx) and its nvcc's own sm_90a
#                   PTX of gemm_sm90a.cu
#   tests.txt       TestGPUHopperGEMM alone first (if it fails the rest runs
#                   with FOMNET_CUDA_SM90A=0), the TMA kernel's M/N-major
#                   tests, then every TestGPU* test (GPU beside emulator and
#                   CPU)
#   bench.txt       BenchmarkGPUGEMMKernels (each kernel, bf16 in and out;
#                   NT, then NN and TN)
#                   and `fomnet bench kernels --device cuda` (what Matmul and
#                   attention cost through the backend, conversions included)
#   yardsticks.txt  cuBLAS and FlashAttention through PyTorch at the same
#                   shapes (scripts/gpu-yardsticks.py)
#   generate.txt    batched generation with the weights on the GPU: the same
#                   tokens as the CPU (TestTinyModelGeneratesAsOnCPU) and
#                   tokens/s for gpt2-small-like (BenchmarkGPUGenerate)
#   train.txt       `fomnet bench train --device cuda` gpt2-small-like 16×1024
#                   in bf16 (as chosen, and without the sm_90a kernels) and
#                   fp32 (MFU, per-op breakdown)
#   sanitizer.txt   compute-sanitizer memcheck and racecheck on the
#                   tensor-core kernels' tests
#   ncu.txt         Nsight Compute's speed-of-light, memory and warp-state
#                   sections for the 8192³ NT GEMMs and the flash kernels
#
# With the device tool: build here, then run `bash scripts/gpu-check.sh run`
# there with carry [".gpu"].
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
build)
	set -e
	hdr=${CUDA_HEADERS:-$root/.ci/cuda}
	bash scripts/cuda-apt.sh headers "$hdr"
	export CGO_CFLAGS="-I$hdr/usr/include" CGO_LDFLAGS="-L$hdr/usr/lib/x86_64-linux-gnu/stubs"
	mkdir -p .gpu
	go test -tags cuda -c -ldflags='-s -w' -o .gpu/cuda.test ./kernels/cuda
	go build -tags cuda -ldflags='-s -w' -o .gpu/fomnet ./cmd/fomnet
	ls -la .gpu
	;;
run)
	out=${OUT:-$root/.gpu/out}
	mkdir -p "$out"
	sum=$out/summary.txt
	nvidia-smi >"$sum" 2>&1
	all="ptxas hopper hopper-mn tests generate gemm-kernels gemm-kernels-mn bench-kernels yardsticks train-bf16 train-bf16-sm80 train-bf16-copy train-fp32 train-small train-small-wait memcheck racecheck ncu-gemm ncu-flash"
	steps=" ${STEPS:-$all} "
	# step NAME LIMIT FILE CMD...: run CMD with a time limit (when STEPS
	# names it), appending its output to FILE and its status and time to
	# the summary.
	step() {
		local name=$1 limit=$2 file=$3
		shift 3
		[[ $steps == *" $name "* ]] || return 0
		echo "== $name" >>"$file"
		local t0=$SECONDS
		timeout -k 10 "$limit" "$@" >>"$file" 2>&1
		local rc=$?
		echo "step $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$sum"
		return $rc
	}
	T=$root/.gpu/cuda.test
	F=$root/.gpu/fomnet
	train=(bench train --device cuda --preset gpt2-small-like --batch 16 --seq 1024 --steps 5)
	cd kernels/cuda
	step ptxas 60 "$out/ptxas.txt" bash -c '
		for f in ptx/*.ptx; do
			case $f in *_sm90a.ptx) a=sm_90a ;; *) a=sm_90 ;; esac
			echo "-- $f ($a)"; ptxas -arch=$a -v -o /dev/null "$f" 2>&1 | grep -E "error|warn|Compiling|registers|spill" | paste - - -
		done
		echo "-- nvcc $(nvcc --version | tail -1): gemm_sm90a.cu for compute_90a"
		nvcc -ptx -gencode=arch=compute_90a,code=compute_90a -O3 -std=c++17 -o /tmp/g90.ptx gemm_sm90a.cu &&
			ptxas -arch=sm_90a -v -o /dev/null /tmp/g90.ptx 2>&1 | grep -E "error|warn|registers|spill"'
	if ! step hopper 90 "$out/tests.txt" "$T" -test.v -test.run '^TestGPUHopperGEMM$' -test.count=1; then
		export FOMNET_CUDA_SM90A=0
		echo "the sm_90a kernels failed: the rest runs with FOMNET_CUDA_SM90A=0" | tee -a "$sum"
	fi
	step hopper-mn 90 "$out/tests.txt" "$T" -test.v -test.run '^TestGPUHopper(Transposed|MNStrides)$' -test.count=1
	step tests 200 "$out/tests.txt" "$T" -test.v -test.count=1 -test.timeout=190s -test.run "${TESTS:-^TestGPU}"
	step generate 90 "$out/generate.txt" "$T" -test.v -test.count=1 -test.run '^TestTinyModelGeneratesAsOnCPU$' -test.bench '^BenchmarkGPUGenerate$' -test.benchtime 1x
	# NT first, apart: a fault in an M/N-major kernel ends its process.
	step gemm-kernels 150 "$out/bench.txt" "$T" -test.run '^$' -test.bench '^BenchmarkGPUGEMMKernels$/./NT/' -test.benchtime 20x
	step gemm-kernels-mn 150 "$out/bench.txt" "$T" -test.run '^$' -test.bench '^BenchmarkGPUGEMMKernels$/./(NN|TN)/' -test.benchtime 20x
	cd "$root"
	step bench-kernels 120 "$out/bench.txt" "$F" bench kernels --device cuda --precision bf16 --min-time 100ms --json
	step yardsticks 150 "$out/yardsticks.txt" env PYTHONUNBUFFERED=1 python3 scripts/gpu-yardsticks.py
	step train-bf16 120 "$out/train.txt" "$F" "${train[@]}" --precision bf16
	step train-bf16-sm80 120 "$out/train.txt" env FOMNET_CUDA_SM90A=0 "$F" "${train[@]}" --precision bf16
	step train-bf16-copy 120 "$out/train.txt" "$F" "${train[@]}" --precision bf16 --weight-copy
	step train-fp32 120 "$out/train.txt" "$F" "${train[@]}" --precision fp32
	# A launch-bound step (the demo preset): launches queued to the device's
	# thread, then each waited for as every launch was before (FOMNET_CUDA_WAIT=1).
	small=(bench train --device cuda --precision bf16 --preset demo --batch 4 --seq 64 --steps 20)
	step train-small 60 "$out/train.txt" "$F" "${small[@]}"
	step train-small-wait 60 "$out/train.txt" env FOMNET_CUDA_WAIT=1 "$F" "${small[@]}"
	cd kernels/cuda
	step memcheck 90 "$out/sanitizer.txt" compute-sanitizer --tool memcheck "$T" -test.run 'TestGEMMBF16Configs|TestFlashAttentionRows|TestGPUHopperGEMM' -test.count=1
	step racecheck 90 "$out/sanitizer.txt" compute-sanitizer --tool racecheck "$T" -test.run 'TestFlashAttentionRows|TestGPUHopperGEMM' -test.count=1
	sections=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats --section Occupancy)
	step ncu-gemm 90 "$out/ncu.txt" ncu --clock-control none -k 'regex:fom_gemm' -c 4 "${sections[@]}" \
		"$T" -test.run '^$' -test.bench 'GPUGEMMKernels/fom_gemm(_128x128|90tma_128x256)/NT/8192x8192x8192' -test.benchtime 1x
	cd "$root"
	step ncu-flash 90 "$out/ncu.txt" ncu --clock-control none -k 'regex:fom_flash' -c 3 "${sections[@]}" \
		"$F" bench kernels --device cuda --precision bf16 --quick --min-time 1ms
	echo "done" >>"$sum"
	;;
*)
	echo "usage: gpu-check.sh build | run" >&2
	exit 2
	;;
esac
