#!/bin/bash
# Download one Debian package (PKG:ARCH=VERSION) into DIR unless it is there; prints the .deb path.
# Usage: fetch-deb.sh PKG ARCH VERSION DIR
set -euo pipefail
pkg=$1 arch=$2 version=$3 dir=$4
deb="$dir/${pkg}_${version//:/%3a}_${arch}.deb"
mkdir -p "$dir"
exec 9> "$dir/.lock"
flock 9
if [ ! -s "$deb" ]; then
  # apt-get download warns about the unsandboxed _apt user when run as root in a root-owned dir: harmless.
  (cd "$dir" && apt-get download -q "$pkg:$arch=$version" 2>&1 | grep -v 'unsandboxed' >&2 || true)
  [ -s "$deb" ] || { echo "fetch-deb: $pkg:$arch=$version not downloaded (apt-get update? arch enabled?)" >&2; exit 1; }
fi
echo "$deb"
