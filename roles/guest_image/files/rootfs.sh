#!/bin/bash
# Build a Debian root filesystem for a lab guest: mmdebstrap (arm64's maintainer scripts run under qemu-user binfmt)
# + lab config.
# Usage: rootfs.sh DEST ARCH RELEASE MIRROR CACHE_DIR OVERLAY_DIR PACKAGES(comma list)
# Builds into DEST.tmp.* and renames atomically, so an interrupted build never looks complete.
set -euo pipefail
command -v mmdebstrap > /dev/null || { echo "rootfs: mmdebstrap is missing: make setup (or apt-get install mmdebstrap)" >&2; exit 1; }
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
  # Leave the host as found: our binfmt entry and mount go, whatever happened.
  if [ "$registered" = 1 ] && [ -e "$binfmt_entry" ]; then echo -1 > "$binfmt_entry"; fi
  if [ "$mounted_binfmt" = 1 ]; then umount /proc/sys/fs/binfmt_misc; fi
  # An interrupted build leaves /proc, /sys, /dev mounted in the target: unmount before deleting.
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

# mmdebstrap rather than debootstrap: apt downloads in parallel, and dpkg runs a few times over all packages (one
# trigger pass) instead of package by package — under qemu-user every dpkg start and maintainer script is emulated.
# Not unpacked: docs, man pages, translations (no man-db, no doc files to write); copyright files stay.
# force-unsafe-io only while building (no fsync per file), dropped below.
# SSH host keys come from the host's ssh-keygen before openssh-server is configured (its postinst keeps existing
# keys): an emulated RSA key generation alone took ~30 s.
# merged-usr: the /usr layout debootstrap makes (usr-is-merged, not usrmerge and its perl). The package lists stay
# (apt in the guest, e.g. kernel_build's kexec-tools). Downloaded .debs are kept per arch in CACHE_DIR for the next
# build (arch:all ones too: no race between arches).
mkdir -p "$cache/$arch"
mmdebstrap --mode=root --variant=minbase --arch="$arch" --include="$packages" \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' --dpkgopt=force-unsafe-io \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr --skip=essential/unlink,cleanup/apt/lists \
  --setup-hook='mkdir -p "$1/var/cache/apt/archives"' \
  --setup-hook="sync-in $cache/$arch /var/cache/apt/archives" \
  --essential-hook='mkdir -p "$1/etc/ssh" && ssh-keygen -A -f "$1"' \
  --customize-hook="sync-out /var/cache/apt/archives $cache/$arch" \
  --customize-hook='sed -i /force-unsafe-io/d "$1/etc/dpkg/dpkg.cfg.d/99mmdebstrap"' \
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
find "$tmp/root/var/cache/apt/archives" -name '*.deb' -delete

mv -T "$tmp/root" "$dest"
