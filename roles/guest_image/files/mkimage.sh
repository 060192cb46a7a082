#!/bin/bash
# Golden image = rootfs + the kernel's modules (so modprobe works in the guest) + the lab's SSH key + the AnsiballZ
# bytecode cache hook (ansiballz_pycache.py, imported at every Python start-up by a .pth), as ext4 in qcow2.
# No loop mount: mkfs.ext4 -d populates the file system from a directory.
# Usage: mkimage.sh ROOTFS MODULES_DIR|"" PUBKEY SIZE_MB OUT PYCACHE_HOOK
set -euo pipefail
rootfs=$1 modules=$2 pubkey=$3 size_mb=$4 out=$5 pycache_hook=$6
# One builder per artifact, also across concurrent runs: the others wait, then find it built.
mkdir -p "$(dirname "$out")"
exec 9> "$out.lock"
flock 9
[ -e "$out" ] && exit 0
work=$(mktemp -d "$out.tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP
# Hard links: the staging tree costs no copy, and mkfs only reads it. Files added below are new inodes.
cp -al "$rootfs" "$work/root"
if [ -n "$modules" ]; then
  mkdir -p "$work/root/lib/modules"
  cp -a "$modules" "$work/root/lib/modules/"
fi
install -d -m 0700 "$work/root/root/.ssh"
install -m 0600 "$pubkey" "$work/root/root/.ssh/authorized_keys"
site=$work/root/usr/lib/python3/dist-packages
rm -f "$site/ansiballz_pycache.py" "$site/ansiballz_pycache.pth"  # hard links into the rootfs: replace, not write
install -m 0644 "$pycache_hook" "$site/ansiballz_pycache.py"
echo "import ansiballz_pycache" > "$site/ansiballz_pycache.pth"
truncate -s "${size_mb}M" "$work/root.ext4"
mkfs.ext4 -q -F -L root -d "$work/root" "$work/root.ext4"
qemu-img convert -O qcow2 "$work/root.ext4" "$work/image.qcow2"
mv -f "$work/image.qcow2" "$out"
