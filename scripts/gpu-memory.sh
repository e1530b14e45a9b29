#!/usr/bin/env bash
# gpu-memory.sh — issue 28's checks on a real GPU: KORMo-10B's inner steps on
# one H200 with 8-bit AdamW moments and recomputation, and the 8-bit AdamW
# kernel against the CPU backend. Same two halves as gpu-check.sh (whose
# build makes the binaries this uses):
#
#   scripts/gpu-check.sh build     (here)
#   scripts/gpu-memory.sh run      (on the GPU machine; carry [".gpu"])
#
# Steps, each with its own time limit (about 8 minutes at most), writing
# under ${OUT:-.gpu/out}:
#   memory.txt   nvidia-smi; TestAdamW8MatchesCPU (emulator and GPU against
#                the CPU backend, bit for bit) and TestBF16Gradients (each
#                gradient op with bf16 gradients = the bf16 rounding of its
#                fp32 result, bit for bit); `fomnet model plan` for the
#                run below; then `fomnet bench train --device cuda --preset
#                kormo-10b --batch 1 --seq 4096 --steps 20 --recompute
#                --optimizer adamw8` in bf16 (2 warm-up steps, 20 timed: the
#                loss of each, MFU, per-op breakdown, the plan's bytes and
#                the process's peak resident memory), with the device's
#                memory in use sampled every 200 ms (its peak is the figure
#                to hold the plan's device bytes to)
#                then, if the script has 90 s to spare, the same with
#                --grads bf16 for 3 steps (its plan and peak device memory)
#   gpumem.csv   those samples (gpumem-bf16-grads.csv: the second run's)
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
case "${1:-}" in
run)
	out=${OUT:-$root/.gpu/out}
	mkdir -p "$out"
	log=$out/memory.txt
	T=$root/.gpu/cuda.test
	F=$root/.gpu/fomnet
	nvidia-smi >"$log" 2>&1
	step() {
		local name=$1 limit=$2
		shift 2
		echo "== $name: $*" >>"$log"
		local t0=$SECONDS
		timeout -k 10 "$limit" "$@" >>"$log" 2>&1
		echo "step $name: exit $? after $((SECONDS - t0)) s" >>"$log"
	}
	(cd kernels/cuda && step adamw8 60 "$T" -test.v -test.count=1 -test.run '^(TestAdamW8MatchesCPU|TestBF16Gradients)$')
	kormo=(--device cuda --precision bf16 --preset kormo-10b --batch 1 --seq 4096 --recompute --optimizer adamw8 --memory 141GiB)
	step plan 30 "$F" model plan "${kormo[@]}"
	nvidia-smi --query-gpu=timestamp,memory.used,memory.total --format=csv -lms 200 >"$out/gpumem.csv" 2>&1 &
	smi=$!
	step kormo-bf16 420 /usr/bin/time -v "$F" bench train "${kormo[@]}" --steps 20 --json
	kill "$smi" 2>/dev/null
	wait "$smi" 2>/dev/null
	peakmem() { awk -F', ' 'NR > 1 { v = $2 + 0; if (v > m) m = v } END { print m " MiB" }' "$1"; }
	echo "peak device memory used: $(peakmem "$out/gpumem.csv")" >>"$log"
	# With the time left (the whole script stays under 8.5 minutes): the
	# same run with bf16 gradients, 3 steps, for its plan (20 GiB less).
	left=$((500 - SECONDS))
	if [ "$left" -ge 90 ]; then
		step plan-bf16-grads 30 "$F" model plan "${kormo[@]}" --grads bf16
		nvidia-smi --query-gpu=timestamp,memory.used,memory.total --format=csv -lms 200 >"$out/gpumem-bf16-grads.csv" 2>&1 &
		smi=$!
		step kormo-bf16-grads $((left - 40)) /usr/bin/time -v "$F" bench train "${kormo[@]}" --grads bf16 --steps 3 --json
		kill "$smi" 2>/dev/null
		wait "$smi" 2>/dev/null
		echo "peak device memory used with bf16 gradients: $(peakmem "$out/gpumem-bf16-grads.csv")" >>"$log"
	else
		echo "no time left for the bf16-gradient run ($left s)" >>"$log"
	fi
	echo done >>"$log"
	;;
*)
	echo "usage: gpu-memory.sh run   (after scripts/gpu-check.sh build)" >&2
	exit 2
	;;
esac
