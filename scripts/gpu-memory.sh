#!/usr/bin/env bash
# gpu-memory.sh — issue 28's checks on a real GPU: KORMo-10B's inner steps on
# one H200 with 8-bit AdamW moments and recomputation, and the 8-bit AdamW
# kernel against the CPU backend. Same two halves as gpu-check.sh (whose
# build makes the binaries this uses):
#
#   scripts/gpu-check.sh build     (here)
#   scripts/gpu-memory.sh run      (on the GPU machine; carry [".gpu"])
#
# Steps, each with its own time limit (9 minutes at most in all), writing
# under ${OUT:-.gpu/out}:
#   memory.txt   nvidia-smi; TestAdamW8MatchesCPU (emulator and GPU against
#                the CPU backend, bit for bit) and TestBF16Gradients (each
#                gradient op with bf16 gradients = the bf16 rounding of its
#                fp32 result, bit for bit), TestBF16Activations and
#                TestBF16ActivationsSameBits (activations only products read
#                held in bf16: the same bits), TestOffloadedMomentsSameBits
#                (AdamW on moments in mapped host memory: the CPU's bits)
#                and TestMasterWeights (weights in host memory read as
#                their bf16 copy, kept through every write); `fomnet model plan` for the
#                run below; then `fomnet bench train --device cuda --preset
#                kormo-10b --batch 1 --seq 4096 --steps 20 --recompute
#                --optimizer adamw8` in bf16 (2 warm-up steps, 20 timed: the
#                loss of each, MFU, per-op breakdown, the plan's bytes and
#                the process's peak resident memory), with the device's
#                memory in use sampled every 200 ms (its peak is the figure
#                to hold the plan's device bytes to)
#                then, while the script has 90 s to spare, the same with
#                --grads bf16 --offload moments (what fits an 80 GB H100)
#                for 3 steps, and with --offload master,moments as well
#                (fp32 master weights in host memory, a bf16 copy on the
#                device: 47.5 GiB planned) for 2: plan, peak device memory
#                and step time of each
#   gpumem.csv   those samples (gpumem-h100.csv, gpumem-master.csv: the
#                later runs')
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
	(cd kernels/cuda && step storage 90 "$T" -test.v -test.count=1 -test.run '^(TestAdamW8MatchesCPU|TestBF16Gradients|TestBF16Activations|TestBF16ActivationsSameBits|TestOffloadedMomentsSameBits|TestMasterWeights)$')
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
	# configuration that fits an 80 GB H100 — bf16 gradients, the moments
	# in host memory (68.3 GiB planned on the device) — for 3 steps; then
	# the master weights in host memory too (47.5 GiB) for 2.
	extra() {
		local name=$1 steps=$2
		shift 2
		local left=$((500 - SECONDS))
		if [ "$left" -lt 90 ]; then
			echo "no time left for the $name configuration's run ($left s)" >>"$log"
			return
		fi
		step "plan-$name" 30 "$F" model plan "$@"
		nvidia-smi --query-gpu=timestamp,memory.used,memory.total --format=csv -lms 200 >"$out/gpumem-$name.csv" 2>&1 &
		smi=$!
		step "kormo-$name" $((left - 40)) /usr/bin/time -v "$F" bench train "$@" --steps "$steps" --json
		kill "$smi" 2>/dev/null
		wait "$smi" 2>/dev/null
		echo "peak device memory used in the $name configuration: $(peakmem "$out/gpumem-$name.csv")" >>"$log"
	}
	extra h100 3 "${kormo[@]}" --grads bf16 --offload moments
	extra master 2 "${kormo[@]}" --grads bf16 --offload master,moments
	echo done >>"$log"
	;;
*)
	echo "usage: gpu-memory.sh run   (after scripts/gpu-check.sh build)" >&2
	exit 2
	;;
esac
