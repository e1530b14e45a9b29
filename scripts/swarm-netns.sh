#!/usr/bin/env bash
# A swarm on rate-limited links, for real, in network namespaces (needs root,
# ip and tc): N `fomnet join` processes, each in its own namespace, joined by
# veth pairs to a bridge, every link shaped by a token bucket (tc tbf) in
# both directions — the node's uplink on its side of the pair, its downlink
# on the bridge's. A seeder in the bridge's namespace serves the run's spec
# and dataset (unshaped; it takes no part in the rounds).
#
#   hub  11.78.0.1      bridge br0, the seeder (bootstrap, dataset, run)
#   nI   11.78.0.(10+I) joiner I, its link shaped to --rate each way
#
# Latency is not modelled (netem is not available on these machines): the
# links add none beyond the bucket's queueing. The namespaces have no link
# to any other network; everything in them is removed on exit, failure
# included.
#
# It prints, per joiner and in all, the seconds each round phase took (from
# the joiners' JSON logs) and the inner-step utilisation: the seconds the
# joiner's inner steps held the compute backend during rounds 2..R−1 over
# the wall time of those rounds (with --overlap, a round's steps run while
# the round before closes, so the phases no longer say it), and the download
# rate each joiner measured (its "link" log lines: bitswap's bytes over the
# time they took to arrive). Round 1 is left
# out: it includes the dataset fetch and the swarm forming; so is the last:
# no round comes after it to overlap its close with. --json prints the
# summary as JSON on stdout. Every joiner must end on the same checkpoint CID.
#
# Usage: bash scripts/swarm-netns.sh [flags] [FOMNET-BINARY]   (default: go build)
#   --nodes N      joiners (default 3)
#   --rate R       each link's rate each way, as tc writes it (default 50mbit)
#   --rates R1,R2… joiner I's link at RI instead (as many as --nodes); UP/DOWN
#                  (e.g. 50mbit/5mbit) shapes its two directions apart
#   --preset P     model preset (default demo)
#   --rounds R     rounds (default 4)      --h H        inner steps (default 20)
#   --batch B      sequences a step (4)    --seq S      tokens a sequence (128)
#   --codec C      pseudo-gradient codec (int4)
#   --threads T    compute threads per joiner (1)
#   --spot-check Q share of contributions re-executed (default: the run's)
#   --overlap O    the run's overlapped rounds: "" (default) or local
#   --close-core C close rounds by rule once this share is in (run create)
#   --deadline D   the run's round deadline (default 2m)
#   --short        CI's variant: tiny preset, 3 joiners, 3 rounds of 3 steps
#   --json         the summary as JSON on stdout
#   --keep         keep the logs (printed directory)
set -euo pipefail
cd "$(dirname "$0")/.."

nodes=3 rate=50mbit rates= deadline=2m preset=demo rounds=4 h=20 batch=4 seq=128 codec=int4 threads=1 json= keep= bin= spot=() overlap= close=()
while [ $# -gt 0 ]; do
  case $1 in
  --nodes) nodes=$2; shift ;;
  --rate) rate=$2; shift ;;
  --rates) rates=$2; shift ;;
  --preset) preset=$2; shift ;;
  --rounds) rounds=$2; shift ;;
  --h) h=$2; shift ;;
  --batch) batch=$2; shift ;;
  --seq) seq=$2; shift ;;
  --codec) codec=$2; shift ;;
  --threads) threads=$2; shift ;;
  --spot-check) spot=(--spot-check "$2"); shift ;;
  --overlap) overlap=$2; shift ;;
  --close-core) close=(--close-core "$2"); shift ;;
  --deadline) deadline=$2; shift ;;
  --short) nodes=3 preset=tiny rounds=3 h=3 batch=2 seq=32 ;;
  --json) json=1 ;;
  --keep) keep=1 ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) echo "swarm-netns: unknown flag $1 (--help)" >&2; exit 2 ;;
  *) bin=$1 ;;
  esac
  shift
done
case $nodes in '' | *[!0-9]*) echo "swarm-netns: --nodes $nodes: want a number from 2 to 50" >&2; exit 2 ;; esac
[ "$nodes" -ge 2 ] && [ "$nodes" -le 50 ] || { echo "swarm-netns: --nodes $nodes: want a number from 2 to 50" >&2; exit 2; }
link=()
for i in $(seq "$nodes"); do link+=("$rate"); done
if [ -n "$rates" ]; then
  IFS=, read -r -a link <<<"$rates"
  [ "${#link[@]}" = "$nodes" ] || { echo "swarm-netns: --rates $rates: want $nodes rates" >&2; exit 2; }
fi
for l in "${link[@]}"; do
  for r in "${l%/*}" "${l#*/}"; do
    case $r in [0-9]*kbit | [0-9]*mbit | [0-9]*gbit) ;; *) echo "swarm-netns: rate $r: want a number and kbit, mbit or gbit" >&2; exit 2 ;; esac
  done
done

. scripts/netns-lib.sh
netns_require swarm-netns ip tc

tmp=$(mktemp -d)
if [ -z "$bin" ]; then
  bin=$tmp/fomnet
  go build -o "$bin" ./cmd/fomnet
fi
P=fs$$
spaces=(hub)
for i in $(seq "$nodes"); do spaces+=("n$i"); done
pids=()
# Whatever still runs in the namespaces is this script's: end it, or the
# joiners would outlive their network.
cleanup() {
  netns_end "$P" "${spaces[@]}"
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$keep" ]; then echo "swarm-netns: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
ns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
fom() { local n=$1; shift; ns "$n" env FOMNET_HOME= "$bin" "$@"; }
fail() {
  echo "swarm-netns: FAILED: $*" >&2
  for f in "$tmp"/*.log; do echo "--- $f (last 20 lines)" >&2; tail -n 20 "$f" >&2; done
  exit 1
}
# shape DEV NS RATE: a token bucket of RATE on DEV's egress in namespace NS
# (burst: 10 ms at the rate, at least 32 KiB; packets queue up to 1 s).
shape() {
  local bits=${3//[!0-9]/} unit=${3//[0-9]/} mult=1
  case $unit in kbit) mult=1000 ;; mbit) mult=1000000 ;; gbit) mult=1000000000 ;; esac
  local burst=$((bits * mult / 800))
  [ "$burst" -ge 32768 ] || burst=32768
  ns "$2" tc qdisc add dev "$1" root tbf rate "$3" burst "$burst" latency 1s
}

for n in "${spaces[@]}"; do
  ip netns add "$P-$n"
  ns "$n" ip link set lo up
done
ns hub ip link add br0 type bridge
ns hub ip addr add 11.78.0.1/24 dev br0
ns hub ip link set br0 up
for i in $(seq "$nodes"); do
  netns_port "$P" hub "n$i" "$P-e$i" "$P-p$i" "11.78.0.$((10 + i))/24"
  l=${link[$((i - 1))]}
  shape "$P-e$i" "n$i" "${l%/*}" # uplink
  shape "$P-p$i" hub "${l#*/}"   # downlink
done
echo "swarm-netns: $nodes namespaces on a bridge, links ${link[*]} (up/down, or each way)" >&2

# The seeder: bootstrap and DHT server, the dataset and the run.
fom hub init --home "$tmp/hub" --listen /ip4/11.78.0.1/tcp/4101 --dht-mode server >/dev/null
ns hub env FOMNET_HOME= "$bin" daemon --home "$tmp/hub" >"$tmp/hub.out" 2>"$tmp/hub.log" &
pids+=($!)
for _ in $(seq 100); do grep -q ready "$tmp/hub.log" && break; sleep 0.2; done
boot=$(grep '/ip4/11.78.0.1/tcp/4101/p2p/' "$tmp/hub.out" | head -1)
[ -n "$boot" ] || fail "the seeder printed no address"
vocab=()
[ "$preset" = tiny ] && vocab=(--vocab 320)
fom hub data prepare --builtin --synthetic 300 "${vocab[@]}" --seq "$seq" --out "$tmp/ds" >/dev/null 2>>"$tmp/hub.log" || fail "data prepare"
run=$(fom hub run create --home "$tmp/hub" --data "$tmp/ds" --preset "$preset" --rounds "$rounds" --h "$h" --batch "$batch" \
  --seq "$seq" --codec "$codec" --deadline "$deadline" --overlap "$overlap" "${spot[@]}" "${close[@]}" 2>>"$tmp/hub.log") || fail "run create"
echo "swarm-netns: run $run ($preset, $rounds rounds of $h steps of $batch×$seq, $codec, overlap '${overlap}')" >&2

joiners=()
start=$(date +%s.%N)
for i in $(seq "$nodes"); do
  j=$tmp/j$i
  fom "n$i" init --home "$j" --listen "/ip4/11.78.0.$((10 + i))/tcp/4111" --bootstrap "$boot" >/dev/null
  ns "n$i" env FOMNET_HOME= "$bin" --log-format json join "$run" --home "$j" --expect "$nodes" --threads "$threads" --linger 10s \
    >"$tmp/j$i.out" 2>"$tmp/j$i.log" &
  pids+=($!)
  joiners+=($!)
done
for i in $(seq "$nodes"); do
  wait "${joiners[$((i - 1))]}" || fail "joiner $i failed"
done
wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
first=$(cat "$tmp/j1.out")
for i in $(seq "$nodes"); do
  [ -n "$first" ] && [ "$(cat "$tmp/j$i.out")" = "$first" ] || fail "joiner $i ended on '$(cat "$tmp/j$i.out")', joiner 1 on '$first'"
done

# Phase seconds per joiner, rounds 2..R−1 (JSON log lines carry round,
# phase and seconds), the seconds its inner steps ran in each round
# (round, steps_seconds) and what it downloaded, timed (round, down_bytes,
# down_seconds; every round).
summary() {
  awk -v nodes="$nodes" -v last="$rounds" -v links="${link[*]}" '
    BEGIN { split(links, link, " ") }
    {
      node = FILENAME; sub(/.*\/j/, "", node); sub(/\.log$/, "", node)
      if ($0 ~ /adopted the swarm.s checkpoint/) adopted[node]++
      if ($0 ~ /deadline passed waiting/) deadlines[node]++
      if (match($0, /"round":[0-9]+,"reduced":[0-9]+/)) {
        split(substr($0, RSTART, RLENGTH), f, /[:,]/)
        reduced[node] += f[4]
        next
      }
      if (match($0, /"round":[0-9]+,"down_bytes":[0-9]+,"down_seconds":[0-9.e+-]+/)) {
        split(substr($0, RSTART, RLENGTH), f, /[:,]/)
        dbytes[node] += f[4]; dsecs[node] += f[6]; dall += f[4]; dsall += f[6]
        next
      }
      if (match($0, /"round":[0-9]+,"steps_seconds":[0-9.e+-]+/)) {
        split(substr($0, RSTART, RLENGTH), f, /[:,]/)
        if (f[2] >= 2 && f[2] < last) steps[node] += f[4]
        next
      }
      if (!match($0, /"round":[0-9]+,"phase":"[a-z_]+","seconds":[0-9.e+-]+/)) next
      split(substr($0, RSTART, RLENGTH), f, /[:,]/)
      r = f[2]; ph = f[4]; gsub(/"/, "", ph); s = f[6] + 0
      if (r < 2 || r >= last) next
      t[node, ph] += s; tot[node] += s; phases[ph] = 1; all[ph] += s; sum += s
      if (r > maxr) maxr = r
    }
    END {
      n = 0; util = 0
      for (i = 1; i <= nodes; i++) if (tot[i] > 0) { n++; util += steps[i] / tot[i] }
      printf "{\"joiners\":%d,\"rounds_measured\":%d,\"utilization\":%.4f,\"round_seconds\":%.3f,\"down_mbps\":%.2f,\"phase_seconds\":{", nodes, maxr - 1, (n ? util / n : 0), (n ? sum / n / (maxr - 1) : 0), (dsall ? dall * 8 / dsall / 1e6 : 0)
      sep = ""
      for (ph in phases) { printf "%s\"%s\":%.3f", sep, ph, all[ph] / n / (maxr - 1); sep = "," }
      printf "},\"per_joiner\":["
      for (i = 1; i <= nodes; i++) printf "%s{\"joiner\":%d,\"link\":\"%s\",\"utilization\":%.4f,\"steps_seconds\":%.3f,\"train_seconds\":%.3f,\"round_seconds\":%.3f,\"down_mbps\":%.2f,\"down_mib\":%.2f,\"deadlines\":%d,\"adopted\":%d,\"reduced\":%d}", (i > 1 ? "," : ""), i, link[i], (tot[i] ? steps[i] / tot[i] : 0), steps[i], t[i, "train"], tot[i] / (maxr - 1), (dsecs[i] ? dbytes[i] * 8 / dsecs[i] / 1e6 : 0), dbytes[i] / 1048576, deadlines[i], adopted[i], reduced[i]
      printf "]}\n"
    }' "$tmp"/j*.log
}
s=$(summary)
case $s in *'"rounds_measured":0'* | *'"rounds_measured":-'*) fail "no round after the first was timed (rounds $rounds)" ;; esac
if [ -n "$json" ]; then
  echo "$s" | sed "s|^{|{\"rate\":\"${rates:-$rate}\",\"overlap\":\"$overlap\",\"preset\":\"$preset\",\"h\":$h,\"batch\":$batch,\"seq\":$seq,\"codec\":\"$codec\",\"wall_seconds\":$wall,\"checkpoint\":\"$first\",|"
else
  echo "swarm-netns: all $nodes joiners ended on $first after ${wall%.*} s"
  echo "swarm-netns: per round (mean over joiners, rounds 2..$((rounds - 1))): $s"
fi
