#!/usr/bin/env bash
# gpu-sync.sh — issue 5's DiLoCo sweeps on the demo preset, on a GPU.
#
# On one core of the 2-core CI-class machine a 9000-step DiLoCo run of the
# demo preset takes about 50 minutes; in fp32 the CUDA backend computes the
# CPU's bytes, so the same runs on a GPU give the same numbers. Measured on an
# H200 (2026-11-26): ~47 ms a 4-worker step, ~7 minutes for 9000 steps alone,
# so one lease of 15 device minutes holds one such run, not a sweep; the
# script starts as many as its pace check says fit.
#
#   scripts/gpu-check.sh build        (here: builds .gpu/fomnet with -tags cuda)
#   scripts/gpu-sync.sh [SECONDS]     (on the GPU machine, carry [".gpu"])
#
# First a check: a short DDP and DiLoCo run on the CPU and on the GPU, whose
# JSON rows must agree bit for bit (val_loss and bytes). Then the sweep: each
# experiment is its own process (its own CUDA context), all at once, each
# stopped SECONDS (default 420) after the script started. Rows are logged as
# each method finishes; everything goes to ${OUT:-.gpu/out}/log.txt, the
# JSON rows to results.txt.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
budget=${1:-420}
start=$SECONDS
out=${OUT:-$root/.gpu/out}
mkdir -p "$out"
log=$out/log.txt
B=.gpu/fomnet
tmp=$(mktemp -d)
nvidia-smi -L >>"$log" 2>&1

common=(bench sync --preset demo --seq 64 --json)

echo "== check: 60 steps, CPU vs GPU (fp32)" >>"$log"
m=ddp,diloco:30:int4,diloco:30:int2
timeout 150 $B "${common[@]}" --batch 2 --steps 60 --methods $m --threads 12 >"$tmp/check-cpu.json" 2>>"$log" &
t0=$SECONDS
timeout 150 $B "${common[@]}" --batch 2 --steps 60 --methods $m --device cuda >"$tmp/check-gpu.json" 2>>"$log"
echo "gpu check: $((SECONDS - t0)) s wall" >>"$log"
wait
python3 - "$tmp/check-cpu.json" "$tmp/check-gpu.json" >>"$log" 2>&1 <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for x, y in zip(a, b):
    same = x["val_loss"] == y["val_loss"] and x["bytes_per_worker"] == y["bytes_per_worker"]
    print(f'check {x["method"]:>7} H={x["H"]} {x["codec"]:5} cpu {x["val_loss"]!r} ({x["seconds"]:.1f}s) gpu {y["val_loss"]!r} ({y["seconds"]:.1f}s) {"IDENTICAL" if same else "DIFFERENT"}')
print("check rows:", len(a), len(b))
PY

# name | flags: 9000 steps of 2×64 tokens per worker unless the flags say
# otherwise; in order of priority.
experiments=(
	"lr0.5-m0.5|--methods diloco:300:int4 --outer-lr 0.5"
	"b4-4500|--methods ddp,diloco:300:int4 --batch 4 --steps 4500"
	"lr1.0-m0|--methods diloco:300:int4 --outer-lr 1.0 --momentum 0"
	"lr0.6-m0.5|--methods diloco:300:int4 --outer-lr 0.6"
	"int2-h140|--methods diloco:140:int2"
	"lr0.7-m0.3|--methods diloco:300:int4 --momentum 0.3"
	"base-lr0.7-m0.5|--methods diloco:300:int4"
	"ddp-9000|--methods ddp"
)
# How many fit: one DiLoCo run's pace alone on the GPU (20 and 80 steps,
# the difference), scaled to 9000 steps, assuming (pessimistically) that
# contexts share the GPU in turn.
for n in 20 80; do
	timeout 60 $B "${common[@]}" --batch 2 --steps $n --methods diloco:20:int4 --device cuda >"$tmp/pace$n.json" 2>>"$log"
done
per=$(python3 -c 'import json,sys; a,b=(json.load(open(p))[0]["seconds"] for p in sys.argv[1:]); print(int((b-a)/60*9000*1.05)+1)' "$tmp/pace20.json" "$tmp/pace80.json" 2>>"$log" || echo 0)
left=$((budget - (SECONDS - start) - 10))
n=${#experiments[@]}
if [ "${per:-0}" -gt 0 ]; then
	n=$((left / per))
	n=$((n < 1 ? 1 : n > ${#experiments[@]} ? ${#experiments[@]} : n))
fi
experiments=("${experiments[@]:0:n}")
echo "== sweep: one 9000-step DiLoCo run alone ≈ ${per} s; ${#experiments[@]} experiments, stopped after $left s" >>"$log"
for e in "${experiments[@]}"; do
	name=${e%%|*}
	read -r -a flags <<<"${e#*|}"
	(
		timeout "$left" $B "${common[@]}" --batch 2 --steps 9000 "${flags[@]}" --device cuda \
			>"$tmp/$name.json" 2> >(sed -u "s/^/[$name] /" >>"$log")
		echo "[$name] exit $?" >>"$log"
	) &
done
wait
for e in "${experiments[@]}"; do
	name=${e%%|*}
	echo "## $name: ${e#*|}" >>"$out/results.txt"
	cat "$tmp/$name.json" >>"$out/results.txt"
done
# Time left over goes to the CUDA backend's own tests (issue 8's checks).
rem=$((budget - (SECONDS - start) - 5))
if [ $rem -gt 40 ] && [ -x .gpu/cuda.test ]; then
	(cd kernels/cuda && timeout $rem ../../.gpu/cuda.test -test.v -test.count=1) >"$out/cuda-tests.txt" 2>&1
	echo "cuda tests: exit $?" >>"$log"
fi
echo "total $((SECONDS - start)) s" >>"$log"
rm -rf "$tmp"
