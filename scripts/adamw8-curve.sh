#!/usr/bin/env bash
# adamw8-curve.sh: 8-bit AdamW against fp32 AdamW, validation loss along
# training on natural text (../shared/data's monolingual files: English
# then Korean, so the held-out tail is the end of Opticks and the Korean
# story), for the presets and seeds given.
#
#   scripts/adamw8-curve.sh [OUT]   (env: PRESETS, SEEDS, STEPS, EVERY, LR)
#
# Prints a markdown table (per preset and seed: validation loss at each
# evaluation, fp32 and 8-bit, and the gap) and the mean gap per step; the
# raw logs stay under OUT (default /tmp/adamw8-curve).
set -euo pipefail
out=${1:-/tmp/adamw8-curve}
presets=${PRESETS:-tiny demo}
seeds=${SEEDS:-1 2 3}
steps=${STEPS:-1000}
every=${EVERY:-200}
lr=${LR:-1e-3}
root=$(cd "$(dirname "$0")/.." && pwd)
data=${DATA:-$root/../shared/data/bilingual/mono}
files=("$data/en/kjv.txt" "$data/en/opticks.txt" "$data/ko/unsu-joh-eun-nal.txt")
mkdir -p "$out"
bin=$out/fomnet
(cd "$root" && go build -o "$bin" ./cmd/fomnet)

# val LOG: "step val" for each evaluation step (every EVERY steps).
val() {
	sed -n 's/.*step *\([0-9]*\)\/[0-9]*  loss [0-9.]*  val \([0-9.]*\).*/\1 \2/p' "$1" |
		awk -v e="$every" '$1 % e == 0'
}

# pair P S: "step fp32 8-bit" for each evaluation of preset P, seed S.
pair() { paste -d' ' "$out/$1-$2-adamw.log.done" "$out/$1-$2-adamw8.log.done" | awk '{print $1, $2, $4}'; }

for p in $presets; do
	for s in $seeds; do
		for o in adamw adamw8; do
			log=$out/$p-$s-$o.log
			[ -s "$log.done" ] && continue
			rm -rf "$out/ck-$p-$s-$o"
			"$bin" train --preset "$p" --seed "$s" --optimizer "$o" --steps "$steps" \
				--lr "$lr" --min-lr "$(awk -v l="$lr" 'BEGIN{print l/10}')" --warmup 50 \
				--eval-every "$every" --out "$out/ck-$p-$s-$o" "${files[@]}" 2>"$log" >/dev/null
			val "$log" >"$log.done"
			rm -rf "$out/ck-$p-$s-$o"
		done
	done
done

echo "| preset | seed | step | fp32 | 8-bit | 8-bit vs fp32 |"
echo "|---|---|---|---|---|---|"
for p in $presets; do
	for s in $seeds; do
		pair "$p" "$s" |
			awk -v p="$p" -v s="$s" '{printf "| %s | %s | %d | %.4f | %.4f | %+.2f%% |\n", p, s, $1, $2, $3, 100*($3-$2)/$2}'
	done
	for s in $seeds; do pair "$p" "$s"; done |
		awk -v p="$p" '{f[$1]+=$2; e[$1]+=$3; n[$1]++} END {for (k in n) printf "| %s | mean | %d | %.4f | %.4f | %+.2f%% |\n", p, k, f[k]/n[k], e[k]/n[k], 100*(e[k]-f[k])/f[k]}' | sort -t'|' -k4 -n
done
