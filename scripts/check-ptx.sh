#!/usr/bin/env bash
# check-ptx.sh — fail if the committed PTX (kernels/cuda/ptx) is not what
# gen-ptx.sh makes from the current kernels/cuda/*.cu, and assemble it with
# ptxas for sm_80 and sm_90 (what the driver's JIT will do on the GPU).
# Run it whenever a .cu file changes; it needs nvcc, so CI does not run it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bash "$root/scripts/gen-ptx.sh" "$tmp"
status=0
for f in "$tmp"/*.ptx; do
	name=$(basename "$f")
	if ! cmp -s "$f" "$root/kernels/cuda/ptx/$name"; then
		echo "check-ptx: kernels/cuda/ptx/$name is stale: run go generate ./kernels/cuda" >&2
		status=1
	fi
	case $name in
	*_sm90a.ptx) sms="sm_90a" ;;
	*) sms="sm_80 sm_90" ;;
	esac
	for sm in $sms; do
		if [ $sm = sm_90a ] && ! ptxas --help | grep -q sm_90a; then
			echo "check-ptx: this ptxas cannot assemble sm_90a (nvcc ≥ 12 can); $name not assembled" >&2
			continue
		fi
		ptxas -arch=$sm -o /dev/null "$f" || { echo "check-ptx: ptxas $sm failed on $name" >&2; status=1; }
	done
done
for f in "$root"/kernels/cuda/ptx/*.ptx; do
	[ -f "$tmp/$(basename "$f")" ] || { echo "check-ptx: kernels/cuda/ptx/$(basename "$f") has no .cu source" >&2; status=1; }
done
[ $status = 0 ] && echo "check-ptx: PTX is current and assembles (sm_80 and sm_90; sm_90a where ptxas can)"
exit $status
