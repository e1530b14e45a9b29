# Shared by the scripts that build networks in namespaces (nat-test.sh,
# swarm-netns.sh); sourced, not run.
#
#   netns_require NAME CMD...   exits 0 (skipped) unless root with CMDs and
#                               the right to make namespaces; 1 if a CMD is
#                               missing
#   netns_end PREFIX NS...      ends what still runs in namespaces PREFIX-NS
#                               (TERM, then KILL after 10 s) and removes them
#   netns_port PREFIX HUB NS DEV PORT ADDR
#                               joins namespace PREFIX-NS to bridge br0 of
#                               PREFIX-HUB: a veth pair, DEV (with ADDR, up)
#                               in NS, PORT on the bridge

netns_require() {
  local name=$1 c why
  shift
  if [ "$(id -u)" != 0 ]; then
    echo "$name: needs root (network namespaces); skipped" >&2
    exit 0
  fi
  for c in "$@"; do
    command -v "$c" >/dev/null || { echo "$name: needs $c" >&2; exit 1; }
  done
  # Root in a container may still lack the right to make namespaces: say so
  # and skip, rather than fail on the machine.
  if ! why=$(ip netns add "fnprobe$$" 2>&1); then
    echo "$name: cannot create network namespaces here ($why); skipped" >&2
    exit 0
  fi
  ip netns del "fnprobe$$"
}

netns_end() {
  local prefix=$1 n
  shift
  local spaces=("$@")
  _netns_inside() { for n in "${spaces[@]}"; do ip netns pids "$prefix-$n" 2>/dev/null; done; }
  _netns_inside | xargs -r kill 2>/dev/null || true
  for _ in $(seq 50); do [ -z "$(_netns_inside)" ] && break; sleep 0.2; done
  _netns_inside | xargs -r kill -9 2>/dev/null || true
  for n in "${spaces[@]}"; do ip netns del "$prefix-$n" 2>/dev/null || true; done
}

netns_port() {
  local prefix=$1 hub=$2 ns=$3 dev=$4 port=$5 addr=$6
  ip link add "$dev" type veth peer name "$port"
  ip link set "$dev" netns "$prefix-$ns"
  ip link set "$port" netns "$prefix-$hub"
  ip netns exec "$prefix-$hub" ip link set "$port" master br0 up
  ip netns exec "$prefix-$ns" ip addr add "$addr" dev "$dev"
  ip netns exec "$prefix-$ns" ip link set "$dev" up
}
