#!/bin/bash
# Unpack a Debian kernel package into DEST (boot/vmlinuz-*, lib/modules/*) and run depmod on it, so the
# initrd builder and the guest's modprobe can resolve dependencies. Works cross-arch.
# Usage: kernel-tree.sh DEB DEST
set -euo pipefail
deb=$1 dest=$2
# One builder per artifact, also across concurrent runs: the others wait, then find it built.
mkdir -p "$(dirname "$dest")"
exec 9> "$dest.lock"
flock 9
[ -e "$dest" ] && exit 0
tmp=$(mktemp -d "$dest.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM HUP
dpkg -x "$deb" "$tmp"
for dir in "$tmp"/lib/modules/*/; do
  depmod -b "$tmp" "$(basename "$dir")"
done
mv -T "$tmp" "$dest"
