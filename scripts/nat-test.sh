#!/usr/bin/env bash
# NAT traversal for real, in network namespaces (needs root, ip and nft):
#
#   pub  11.77.0.1-4  a bootstrap node that is also a circuit relay, and three
#                     more public nodes (bridge br0)
#   r1   11.77.0.11   a home router: masquerades 192.168.1.0/24 (nft) and
#                     drops unsolicited inbound packets, as home routers do
#   h1   192.168.1.2  a home node behind r1
#   r2   11.77.0.12   the same for 192.168.2.0/24
#   h2   192.168.2.2  a home node behind r2
#
# The "public" network uses 11.77.0.0/24: libp2p treats documentation and
# private ranges as unroutable (no AutoNAT dial-back, no hole punching to
# them). Four public nodes observe the homes' addresses and answer AutoNAT.
# The namespaces have no link to any other network: nothing leaves them.
#
# It shows that AutoNAT reports both home daemons private, that they reserve
# a slot on the relay, that h1 reaches h2 through the relay and that the
# connection becomes direct by hole punching (DCUtR), and that two joiners,
# one in each home, train a run together (each merges the other's
# contribution every round) and end on one checkpoint CID.
#
# Where hole punching cannot work: Linux masquerading keeps a connection's
# source port, so the address the public nodes observe is the one the other
# home must dial (an endpoint-independent mapping). Behind a NAT that picks
# a new port for every destination (nft "masquerade random", a symmetric
# NAT) no observed address is right and only the relay connects, which
# libp2p marks limited: gossip and bitswap do not use it, so such a node
# needs a forwarded port (nat_port_map = true asks the router by UPnP).
# A router that answers unsolicited packets with a TCP reset instead of
# dropping them breaks the punch too: the first SYN arrives before the other
# side's has opened the mapping, and the reset ends the dial ("connection
# refused"); that is why r1 and r2 drop them.
#
# Everything lives in namespaces it creates (names fn<pid>-…), removed on
# exit, failure included; only addresses inside them are used. NAT_TEST_KEEP=1
# keeps the logs; GOLOG_LOG_LEVEL=error,p2p-holepunch=debug shows the punch.
#
# Usage: bash scripts/nat-test.sh [FOMNET-BINARY]   (default: go build)
set -euo pipefail
cd "$(dirname "$0")/.."

. scripts/netns-lib.sh
netns_require nat-test ip nft

tmp=$(mktemp -d)
bin=${1:-}
if [ -z "$bin" ]; then
  bin=$tmp/fomnet
  go build -o "$bin" ./cmd/fomnet
fi
P=fn$$
pids=()
declare -a joiners
cleanup() {
  # Whatever still runs in the namespaces is this test's: end it, or the
  # daemons would outlive their network.
  netns_end "$P" pub r1 h1 r2 h2
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "${NAT_TEST_KEEP:-}" ]; then echo "nat-test: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
trap cleanup EXIT
ns() { local n=$1; shift; ip netns exec "$P-$n" "$@"; }
# bg NS OUT LOG ARGS... starts fomnet ARGS in NS in the background, as a
# child of this shell (ip and env exec it: $! is fomnet's own PID).
bg() {
  local n=$1 out=$2 log=$3
  shift 3
  ip netns exec "$P-$n" env FOMNET_HOME= "$bin" "$@" >"$out" 2>"$log" &
  pids+=($!)
}
fail() {
  echo "nat-test: FAILED: $*" >&2
  for f in "$tmp"/*.log; do echo "--- $f (last 30 lines)" >&2; tail -n 30 "$f" >&2; done
  exit 1
}

# The network.
for n in pub r1 h1 r2 h2; do
  ip netns add "$P-$n"
  ns "$n" ip link set lo up
done
ns pub ip link add br0 type bridge
for k in 1 2 3 4; do ns pub ip addr add "11.77.0.$k/24" dev br0; done
ns pub ip link set br0 up
for i in 1 2; do
  netns_port "$P" pub "r$i" "$P-w$i" "$P-p$i" "11.77.0.1$i/24"
  ip link add "$P-l$i" type veth peer name "$P-e$i"
  ip link set "$P-l$i" netns "$P-r$i"
  ip link set "$P-e$i" netns "$P-h$i"
  ns "r$i" ip addr add "192.168.$i.1/24" dev "$P-l$i"
  ns "r$i" ip link set "$P-l$i" up
  ns "h$i" ip addr add "192.168.$i.2/24" dev "$P-e$i"
  ns "h$i" ip link set "$P-e$i" up
  ns "h$i" ip route add default via "192.168.$i.1"
  ns "r$i" sysctl -qw net.ipv4.ip_forward=1
  ns "r$i" nft -f - <<EOF
table ip nat {
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "$P-w$i" masquerade
  }
}
table inet filter {
  chain input {
    type filter hook input priority filter;
    iifname "$P-w$i" ct state established,related accept
    iifname "$P-w$i" drop
  }
  chain forward {
    type filter hook forward priority filter;
    iifname "$P-w$i" ct state established,related accept
    iifname "$P-w$i" drop
  }
}
EOF
done
ns h1 ip route get 11.77.0.1 >/dev/null || fail "h1 has no route to the public network"
if ns pub ip route get 192.168.1.2 >/dev/null 2>&1; then fail "the public network has a route to h1: no NAT"; fi
echo "nat-test: network up (two homes behind masquerading NATs, one public relay)"

fom() { local n=$1; shift; ns "$n" env FOMNET_HOME= "$bin" "$@"; }
# setcfg HOME KEY VALUE rewrites one key of a home's config.toml.
setcfg() { sed -i "s|^$2 = .*|$2 = $3|" "$1/config.toml"; }

# The public node: bootstrap, DHT server, relay, dataset and run seeder.
fom pub init --home "$tmp/pub" --listen /ip4/11.77.0.1/tcp/4101 --listen /ip4/11.77.0.1/udp/4101/quic-v1 --dht-mode server >/dev/null
setcfg "$tmp/pub" relay_service true
setcfg "$tmp/pub" reachability '"public"'
bg pub "$tmp/pub.out" "$tmp/pub.log" daemon --home "$tmp/pub"
for _ in $(seq 100); do grep -q ready "$tmp/pub.log" && break; sleep 0.2; done
pub=$(grep '/ip4/11.77.0.1/tcp/4101/p2p/' "$tmp/pub.out" | head -1)
[ -n "$pub" ] || fail "the public node printed no address"
echo "nat-test: public node $pub"
boots=("$pub")
for k in 2 3 4; do
  fom pub init --home "$tmp/pub$k" --listen "/ip4/11.77.0.$k/tcp/4101" --listen "/ip4/11.77.0.$k/udp/4101/quic-v1" --dht-mode server --bootstrap "$pub" >/dev/null
  setcfg "$tmp/pub$k" reachability '"public"'
  bg pub "$tmp/pub$k.out" "$tmp/pub$k.log" daemon --home "$tmp/pub$k"
  for _ in $(seq 100); do grep -q ready "$tmp/pub$k.log" && break; sleep 0.2; done
  boots+=("$(grep "/ip4/11.77.0.$k/tcp/4101/p2p/" "$tmp/pub$k.out" | head -1)")
done
# Home nodes bootstrap from all four, which tell them their public address.
bootflags=()
# Both transports of each, as a user copies them from the printed addresses:
# libp2p then prefers QUIC, whose hole punch is the robust one (UDP keeps no
# half-open state for a stale attempt to collide with).
for b in "${boots[@]}"; do bootflags+=(--bootstrap "$b" --bootstrap "${b/tcp\/4101/udp\/4101\/quic-v1}"); done

# The home daemons: AutoNAT finds out for itself; the relay is static.
for i in 1 2; do
  h=$tmp/h$i
  fom "h$i" init --home "$h" "${bootflags[@]}" >/dev/null
  setcfg "$h" static_relays "[\"$pub\"]"
  bg "h$i" "$tmp/h$i.out" "$tmp/h$i.log" daemon --home "$h"
  for _ in $(seq 100); do grep -q ready "$tmp/h$i.log" && break; sleep 0.2; done
  grep -q ready "$tmp/h$i.log" || fail "the daemon of h$i did not start"
done
private() { fom "h$1" id --home "$tmp/h$1" --json 2>/dev/null | grep -q '"reachability": "private"'; }
relayed() { fom "h$1" id --home "$tmp/h$1" --json 2>/dev/null | grep -q 'p2p-circuit'; }
for i in 1 2; do
  for _ in $(seq 180); do private "$i" && relayed "$i" && break; sleep 0.5; done
  private "$i" || fail "AutoNAT did not report h$i private within 90 s: $(fom "h$i" id --home "$tmp/h$i" --json 2>&1)"
  relayed "$i" || fail "h$i holds no relay reservation within 90 s"
done
echo "nat-test: AutoNAT reports both homes private; both reserved a slot on the relay"

# Hole punching needs each home to know its public address, which the
# four public nodes observe for it (identify) once it is connected to all.
for i in 1 2; do
  for _ in $(seq 60); do
    n=$(fom "h$i" peers --home "$tmp/h$i" --json 2>/dev/null | grep -c '"/ip4/11.77.0.[1-4]/' || true)
    [ "$n" -ge 4 ] && break
    sleep 0.5
  done
  [ "$n" -ge 4 ] || fail "h$i is connected to $n of the 4 public nodes"
done
sleep 2
h2id=$(fom h2 id --home "$tmp/h2" --json | sed -n 's/.*"peer_id": "\(.*\)".*/\1/p')
fom h1 connect --home "$tmp/h1" "$pub/p2p-circuit/p2p/$h2id" >/dev/null || fail "h1 could not reach h2 through the relay"
echo "nat-test: h1 reached h2 through the relay"
# A direct connection to h2 is one to its router's public address.
conns() { fom h1 peers --home "$tmp/h1" --json 2>/dev/null | tr -d ' \n' | grep -o "\"peer_id\":\"$h2id\",\"addrs\":\[[^]]*\]"; }
direct() { conns | grep -q '/ip4/11.77.0.12/'; }
for _ in $(seq 120); do direct && break; sleep 0.5; done
direct || fail "the relayed connection h1→h2 did not become direct within 60 s: $(conns)"
echo "nat-test: hole punching made h1↔h2 direct: $(conns)"

# A run across the NATs: the public node seeds it, one joiner per home.
fom pub data prepare --builtin --synthetic 200 --vocab 320 --seq 32 --out "$tmp/ds" 2>/dev/null >/dev/null
run=$(fom pub run create --home "$tmp/pub" --data "$tmp/ds" --preset tiny --rounds 2 --h 3 --batch 2 --seq 32 --deadline 20s 2>>"$tmp/pub.log")
echo "nat-test: run $run"
# The public node follows the run (as a seeder should: README), so the run's
# topic has a member every joiner reaches.
fom pub mirror --follow "$run" --home "$tmp/pub" >/dev/null 2>>"$tmp/pub.log" || fail "the public node cannot follow the run"
for i in 1 2; do
  j=$tmp/j$i
  fom "h$i" init --home "$j" --listen /ip4/0.0.0.0/tcp/4111 --listen /ip4/0.0.0.0/udp/4111/quic-v1 "${bootflags[@]}" >/dev/null
  setcfg "$j" static_relays "[\"$pub\"]"
  setcfg "$j" reachability '"private"'
  bg "h$i" "$tmp/j$i.out" "$tmp/j$i.log" join "$run" --home "$j" --expect 2 --threads 1 --linger 5s
  joiners[$i]=$!
done
for i in 1 2; do
  wait "${joiners[$i]}" || fail "joiner $i failed"
done
a=$(cat "$tmp/j1.out") b=$(cat "$tmp/j2.out")
[ -n "$a" ] && [ "$a" = "$b" ] || fail "the joiners ended on '$a' and '$b'"
# Both took each other's contribution in every round: over a relayed
# connection (limited) neither gossip nor bitswap would carry them.
for i in 1 2; do
  n=$(grep -c 'checkpoint .* (2 contributions)' "$tmp/j$i.log" || true)
  [ "$n" = 2 ] || fail "joiner $i merged both contributions in $n of 2 rounds"
done
echo "nat-test: both joiners, each behind its own NAT, ended on $a"
echo "nat-test: ok"
