#!/usr/bin/env bash
# join-memory.sh: a swarm participant's memory, measured against its plan.
# One node creates a run of PRESET (8-bit moments, 1×256 tokens a step,
# ROUNDS rounds of 2 inner steps) on the built-in corpus and joins it alone
# with recomputation; prints the plan (`fomnet model plan --swarm`, without
# spot checks: nobody else contributes; --lean among the join flags plans
# a lean participant) and the join's peak RSS and time.
#
#   scripts/join-memory.sh PRESET [OUT] [join flags...]   (env: ROUNDS)
set -euo pipefail
preset=${1:?usage: join-memory.sh PRESET [OUT] [join flags...]}
out=${2:-/tmp/join-memory-$preset}
shift $(($# < 2 ? $# : 2))
root=$(cd "$(dirname "$0")/.." && pwd)
rm -rf "$out" && mkdir -p "$out"
bin=$out/fomnet
(cd "$root" && go build -o "$bin" ./cmd/fomnet)
home=$out/home
trap 'rm -rf "$home" "$out/ds"' EXIT # checkpoints and store: gigabytes at these presets, even when the join fails
"$bin" init --home "$home" >/dev/null 2>&1
"$bin" data prepare --builtin --vocab 320 --seq 256 --out "$out/ds" >/dev/null 2>&1
run=$("$bin" run create --home "$home" --data "$out/ds" --preset "$preset" --rounds "${ROUNDS:-2}" --h 2 \
	--batch 1 --seq 256 --warmup 1 --optimizer adamw8 --deadline 10m 2>/dev/null)
plan=()
for a in "$@"; do [[ $a == --lean ]] && plan+=(--lean); done
"$bin" model plan --preset "$preset" --batch 1 --seq 256 --optimizer adamw8 --recompute --swarm --spot-checks=false \
	--memory 1TiB "${plan[@]}" | sed -n '1p;/total/p'
/usr/bin/time -v "$bin" join "$run" --home "$home" --expect 1 --recompute --linger 0 "$@" >"$out/ck" 2>"$out/log"
grep -E "Maximum resident|Elapsed" "$out/log" | sed 's/^\s*/  /'
grep -E "took|contributed" "$out/log" | sed 's/^[^ ]* INFO  /  /; s/ round=.*//'
