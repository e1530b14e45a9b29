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
# First a check (CHECK=0 skips it): a short DDP and DiLoCo run on the CPU
# and on the GPU, whose JSON rows must agree bit for bit (val_loss and
# bytes). Then a pace probe (one process alone, four at once) says how many
# experiments fit; each is its own process (its own CUDA context), all at
# once, each stopped SECONDS (default 420) after the script started. Rows
# are logged as each method finishes; everything goes to
# ${OUT:-.gpu/out}/log.txt, the JSON rows to results.txt.
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

if [ "${CHECK:-1}" = 1 ]; then
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
fi

# name | flags: 9000 steps of 2×64 tokens per worker unless the flags say
# otherwise; in order of priority. EXPERIMENTS (a file of such lines;
# blank lines and lines starting with # are skipped) replaces the list.
# (Next, after docs/BENCHMARKS.md's 2026-12-05 per-source rows on tiny:
# the K = 4 demo result per held-out source — natural text, generated
# documents — for DDP, DiLoCo, and the overlapped and streaming variants.
# Only the built-in natural text is held out here: ../shared is not on the
# GPU machine.)
experiments=(
	"k4-ddp|--methods ddp --lr 5e-4 --beta1 0.95 --beta2 0.99"
	"k4-diloco|--methods diloco:300:int4 --lr 5e-4 --beta1 0.95 --beta2 0.99"
	"k4-local|--methods diloco:300:int4:overlap=local --lr 5e-4 --beta1 0.95 --beta2 0.99"
	"k4-eager-f4|--methods diloco:300:int4:overlap=eager:fragments=4 --lr 5e-4 --beta1 0.95 --beta2 0.99"
)
if [ -n "${EXPERIMENTS:-}" ]; then
	mapfile -t experiments < <(grep -v -e '^[[:space:]]*$' -e '^#' "$EXPERIMENTS")
fi
# How many fit: the pace of one DiLoCo process alone and of four at once
# (150 steps each; the JSON's seconds include the final evaluation, so the
# pace is a little pessimistic). With n processes a step takes about
# max(alone, n × four-at-once / 4), as if the GPU's share were the limit;
# the fit assumes 9000 steps at the probe's cost, so an experiment that
# syncs far more often, or sets other --steps or --batch, may not finish.
pace() { # pace N: seconds a step with N processes at once
	local i
	for ((i = 0; i < $1; i++)); do
		timeout 90 $B "${common[@]}" --batch 2 --steps 150 --methods diloco:50:int4 --device cuda >"$tmp/pace$1-$i.json" 2>>"$log" &
	done
	wait
	python3 -c 'import json,sys; print(max(json.load(open(p))[0]["seconds"] for p in sys.argv[1:])/150)' "$tmp"/pace$1-*.json 2>>"$log" || echo 0
}
p1=$(pace 1)
p4=$(pace 4)
left=$((budget - (SECONDS - start) - 15))
n=$(python3 -c '
import sys
p1, p4, left, most = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
n = 1
for k in range(1, most + 1):
    if p1 > 0 and p4 > 0 and 9000 * max(p1, k * p4 / 4) * 1.05 <= left:
        n = k
print(n)' "$p1" "$p4" "$left" "${#experiments[@]}")
experiments=("${experiments[@]:0:n}")
echo "== sweep: a step alone ${p1} s, four at once ${p4} s; ${#experiments[@]} experiments, stopped after $left s" >>"$log"
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
