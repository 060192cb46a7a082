#!/bin/bash
# Bootable BIOS disk, as debian-installer leaves a machine: MBR partition table, one ext4 root partition holding the
# rootfs (with a Debian kernel package, its initramfs and grub-pc installed by mmdebstrap), GRUB in the MBR.
# The file system is made without a loop mount (mkfs.ext4 -d at the partition's offset). GRUB is installed by
# Debian's own grub-install + update-grub *inside* the guest, booted once by QEMU with the rootfs's kernel and
# initramfs and disk-setup.sh as init: the host needs no grub and no root-only block-device tricks.
# Usage: mkdisk.sh ROOTFS PUBKEY SIZE_MB SETUP_SCRIPT GRUB_DEFAULTS OUT
set -euo pipefail
rootfs=$1 pubkey=$2 size_mb=$3 setup=$4 grub_defaults=$5 out=$6
# One builder per artifact, also across concurrent runs: the others wait, then find it built.
mkdir -p "$(dirname "$out")"
exec 9> "$out.lock"
flock 9
[ -e "$out" ] && exit 0
work=$(mktemp -d "$out.tmp.XXXXXX")
qemu_pid=""
cleanup() {
  if [ -n "$qemu_pid" ]; then kill "$qemu_pid" 2> /dev/null || true; wait "$qemu_pid" 2> /dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

kernels=("$rootfs"/boot/vmlinuz-*)
[ "${#kernels[@]}" = 1 ] && [ -f "${kernels[0]}" ] \
  || { echo "mkdisk: need exactly one /boot/vmlinuz-* in $rootfs, found: ${kernels[*]}" >&2; exit 1; }
release=${kernels[0]##*/vmlinuz-}
[ -f "$rootfs/boot/initrd.img-$release" ] || { echo "mkdisk: no initrd.img-$release in $rootfs/boot" >&2; exit 1; }

# Hard links: the staging tree costs no copy. Files below are replaced (new inodes), never edited in place, which
# would write through to the cached rootfs.
cp -al "$rootfs" "$work/root"
rm -f "$work/root/etc/fstab"
echo "LABEL=root / ext4 rw,discard,errors=remount-ro 0 1" > "$work/root/etc/fstab"
install -D -m 0644 "$grub_defaults" "$work/root/etc/default/grub.d/lab.cfg"
install -D -m 0755 "$setup" "$work/root/usr/local/sbin/lab-disk-setup"
install -d -m 0700 "$work/root/root/.ssh"
install -m 0600 "$pubkey" "$work/root/root/.ssh/authorized_keys"

disk=$work/disk.raw
truncate -s "${size_mb}M" "$disk"
printf 'label: dos\nstart=2048, type=83, bootable\n' | sfdisk -q "$disk"
mkfs.ext4 -q -F -L root -E offset=1048576 -d "$work/root" "$disk" "$(((size_mb - 1) * 1024))k"

# The setup boot: TCG always (a broken nested KVM hangs; this is a one-time build step). -no-reboot: the script's
# reboot ends QEMU.
qemu-system-x86_64 -accel tcg -cpu max -m 1024 -smp 2 -nodefaults -no-user-config -display none -no-reboot \
  -kernel "${kernels[0]}" -initrd "$rootfs/boot/initrd.img-$release" \
  -append "root=LABEL=root rw console=ttyS0 panic=-1 init=/usr/local/sbin/lab-disk-setup" \
  -drive "file=$disk,format=raw,if=virtio" -serial "file:$work/setup.log" &
qemu_pid=$!
if ! timeout 1800 tail --pid="$qemu_pid" -f /dev/null; then
  echo "mkdisk: the GRUB setup boot did not finish in 1800 s" >&2
fi
wait "$qemu_pid" || true
qemu_pid=""
if ! grep -q '^lab-disk-setup: done' "$work/setup.log"; then
  echo "mkdisk: grub-install/update-grub in the setup boot failed; console tail:" >&2
  tail -n 40 "$work/setup.log" | tr -d '\r' >&2
  exit 1
fi
qemu-img convert -O qcow2 "$disk" "$work/image.qcow2"
mv -f "$work/image.qcow2" "$out"
