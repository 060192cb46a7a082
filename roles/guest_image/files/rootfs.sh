#!/bin/bash
# Build a Debian root filesystem for a lab guest: debootstrap (arm64 through qemu-user binfmt) + lab config.
# Usage: rootfs.sh DEST ARCH RELEASE MIRROR CACHE_DIR OVERLAY_DIR PACKAGES(comma list)
# Builds into DEST.tmp.* and renames atomically, so an interrupted build never looks complete.
set -euo pipefail
dest=$1 arch=$2 release=$3 mirror=$4 cache=$5 overlay=$6 packages=$7
# One builder per artifact, also across concurrent runs: the others wait, then find it built.
mkdir -p "$(dirname "$dest")"
exec 9> "$dest.lock"
flock 9
[ -e "$dest" ] && exit 0
tmp=$(mktemp -d "$dest.tmp.XXXXXX")
binfmt_entry=/proc/sys/fs/binfmt_misc/compaction-lab-aarch64
mounted_binfmt=0 registered=0
cleanup() {
  local rc=$?
  if [ "$rc" != 0 ] && [ -f "$tmp/root/debootstrap/debootstrap.log" ]; then
    tail -n 30 "$tmp/root/debootstrap/debootstrap.log" >&2
  fi
  # Leave the host as found: our binfmt entry and mount go, whatever happened.
  if [ "$registered" = 1 ] && [ -e "$binfmt_entry" ]; then echo -1 > "$binfmt_entry"; fi
  if [ "$mounted_binfmt" = 1 ]; then umount /proc/sys/fs/binfmt_misc; fi
  # An interrupted debootstrap leaves /proc (and /sys) mounted in the target: unmount before deleting.
  awk -v t="$tmp/" 'index($2, t) == 1 { print $2 }' /proc/mounts | sort -r | xargs -r -n1 umount -l
  rm -rf --one-file-system "$tmp"
}
trap cleanup EXIT
trap "exit 130" INT TERM HUP  # so the EXIT trap runs on interrupt too

if [ "$arch" = arm64 ] && [ "$(dpkg --print-architecture)" != arm64 ]; then
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc && mounted_binfmt=1
  fi
  if [ ! -e "$binfmt_entry" ]; then
    # Magic/mask of aarch64 ELF executables (as in qemu-user-static's binfmt.d file); F = open the interpreter
    # now, so it works inside the chroot.
    magic='\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00'
    mask='\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
    echo ":compaction-lab-aarch64:M::$magic:$mask:/usr/bin/qemu-aarch64-static:F" > /proc/sys/fs/binfmt_misc/register
    registered=1
  fi
fi

# One package cache per arch: concurrent builds would race on the arch:all .debs of a shared one.
mkdir -p "$cache/$arch"
debootstrap --arch="$arch" --variant=minbase --cache-dir="$cache/$arch" --include="$packages" \
  "$release" "$tmp/root" "$mirror"

cp -a "$overlay/." "$tmp/root/"
# systemd-networkd brings up DHCP on the virtio NIC; units that only cost boot time under TCG are masked.
systemctl --root="$tmp/root" enable systemd-networkd.service
for unit in systemd-networkd-wait-online.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  e2scrub_reap.service fstrim.timer man-db.timer getty-static.service; do
  ln -sf /dev/null "$tmp/root/etc/systemd/system/$unit"
done
# Make the shared image fit any guest name: the hostname comes from systemd.hostname= on the kernel command line.
echo lab > "$tmp/root/etc/hostname"
rm -f "$tmp/root/etc/machine-id" && touch "$tmp/root/etc/machine-id"
apt_clean_dir="$tmp/root/var/cache/apt/archives"
find "$apt_clean_dir" -name '*.deb' -delete

mv -T "$tmp/root" "$dest"
