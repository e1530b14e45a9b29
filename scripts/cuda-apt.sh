#!/usr/bin/env bash
# cuda-apt.sh — the CUDA 11.8 parts fomnet builds with, from Debian's non-free
# archive (bookworm). Needs root (apt) and the network to Debian's mirror.
#
#   scripts/cuda-apt.sh headers DIR   cuda.h and the libcuda stub, extracted from
#                                     nvidia-cuda-dev into DIR (no install): enough
#                                     for `go build -tags cuda` and `go vet -tags cuda`
#   scripts/cuda-apt.sh nvcc          install nvidia-cuda-toolkit (nvcc, ptxas), for
#                                     `go generate ./kernels/cuda` and scripts/check-ptx.sh
#
# Both enable the contrib and non-free components in their own apt source file
# (/etc/apt/sources.list.d/fomnet-nonfree.sources); nothing else is changed.
set -euo pipefail

enable_nonfree() {
	local f=/etc/apt/sources.list.d/fomnet-nonfree.sources
	if [ ! -f "$f" ]; then
		cat >"$f" <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: contrib non-free
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
	fi
	apt-get update -qq
}

case "${1:-}" in
headers)
	dir=${2:?usage: cuda-apt.sh headers DIR}
	if [ -f "$dir/usr/include/cuda.h" ] && [ -f "$dir/usr/lib/x86_64-linux-gnu/stubs/libcuda.so" ]; then
		exit 0
	fi
	enable_nonfree
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	(cd "$tmp" && apt-get download -qq nvidia-cuda-dev 2>/dev/null)
	mkdir -p "$dir"
	# Only the headers and the driver stub: the package's static libraries are not needed.
	dpkg-deb --fsys-tarfile "$tmp"/nvidia-cuda-dev_*.deb |
		tar -x -C "$dir" --wildcards './usr/include/*' './usr/lib/x86_64-linux-gnu/stubs/libcuda.so'
	;;
nvcc)
	if command -v nvcc >/dev/null; then
		exit 0
	fi
	enable_nonfree
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nvidia-cuda-toolkit >/dev/null
	;;
*)
	echo "usage: cuda-apt.sh headers DIR | nvcc" >&2
	exit 2
	;;
esac
