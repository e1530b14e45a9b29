#!/usr/bin/env bash
# Checks the round simulator (fomnet bench swarm, node/swarmsim) against
# real swarms: for each swarm size and link rate it runs
# scripts/swarm-netns.sh (N joiners in network namespaces, links shaped by
# tc tbf), then simulates the same swarm — today's protocol ("all"),
# sequential rounds — with the compute the real run measured as input (the
# inner-step time, and the checkpoint, reduce and settle phases as fixed
# overhead), and prints the measured and predicted round times: what the
# simulator predicts is the exchange on the shaped links. Spot checks are
# off in both (which contributions a real run re-executes is drawn from
# their CIDs, the simulator's from its seed). Recomputing the aggregates
# costs 16 ns per element and contribution (BenchmarkAggregate,
# trimmed-mean) times the joiners per core, as they share this machine's
# cores (their inner steps show the same slowdown). --out FILE keeps each
# real run's summary (JSON lines); --from FILE predicts again from such a
# file without running swarms.
#
# Needs root, ip, tc and jq. A person runs it; it takes minutes per swarm.
#
# Usage: bash scripts/swarm-validate.sh [--nodes "3 5 8"] [--rates "50mbit 10mbit"]
#        [--preset demo] [--rounds 4] [--h 20] [--latency 0.02] [--out FILE | --from FILE] [FOMNET-BINARY]
set -euo pipefail
cd "$(dirname "$0")/.."

nodes="3 5 8" rates="50mbit" preset=demo rounds=4 h=20 latency=0.02 bin= out= from=
while [ $# -gt 0 ]; do
  case $1 in
  --nodes) nodes=$2; shift ;;
  --rates) rates=$2; shift ;;
  --preset) preset=$2; shift ;;
  --rounds) rounds=$2; shift ;;
  --h) h=$2; shift ;;
  --latency) latency=$2; shift ;;
  --out) out=$2; shift ;;
  --from) from=$2; shift ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  -*) echo "swarm-validate: unknown flag $1 (--help)" >&2; exit 2 ;;
  *) bin=$1 ;;
  esac
  shift
done
command -v jq >/dev/null || { echo "swarm-validate: needs jq" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -z "$bin" ]; then
  bin=$tmp/fomnet
  go build -o "$bin" ./cmd/fomnet
fi

cores=$(nproc)
# predict REAL-JSON: the simulator's round time for the swarm REAL measured.
predict() {
  local real=$1 n mbps step over ns params
  params=$("$bin" model info --preset "$(echo "$real" | jq -r .preset)" --json | jq .params)
  n=$(echo "$real" | jq .joiners)
  mbps=$(echo "$real" | jq -r .rate | sed 's/mbit$//')
  step=$(echo "$real" | jq ".phase_seconds.train / .h")
  over=$(echo "$real" | jq '.phase_seconds | (.checkpoint + .settle + .reduce + .spot_check)')
  ns=$(jq -n "16 * ([1, $n / $cores] | max)")
  "$bin" bench swarm --peers "$n" --protocols all --modes sequential --params "$params" --codec "$(echo "$real" | jq -r .codec)" \
    --h "$(echo "$real" | jq .h)" --step "$step" --step-spread 0 --jitter 0 --up "$mbps" --down "$mbps" --link-spread 0 --min-mbps 1 \
    --latency "$latency" --churn 0 --spot-share 0 --overhead "$over" --aggregate-ns "$ns" --rounds 6 --json 2>/dev/null | jq '.[0].round_seconds'
}
report() {
  local real=$1 m p
  m=$(echo "$real" | jq .round_seconds)
  p=$(predict "$real")
  printf '%-6s %-8s %-10.2f %-10.2f %-10.3f %-8.3f\n' "$(echo "$real" | jq .joiners)" "$(echo "$real" | jq -r .rate)" "$m" "$p" \
    "$(jq -n "$p / $m")" "$(echo "$real" | jq .utilization)"
}

printf '%-6s %-8s %-10s %-10s %-10s %-8s\n' nodes rate measured predicted ratio util
if [ -n "$from" ]; then
  while read -r real; do report "$real"; done <"$from"
  exit 0
fi
for rate in $rates; do
  for n in $nodes; do
    real=$(bash scripts/swarm-netns.sh --nodes "$n" --rate "$rate" --preset "$preset" --rounds "$rounds" --h "$h" --spot-check 0 --json "$bin" 2>"$tmp/netns.log") ||
      { tail -n 40 "$tmp/netns.log" >&2; exit 1; }
    [ -z "$out" ] || echo "$real" >>"$out"
    report "$real"
  done
done
