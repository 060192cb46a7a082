#!/bin/sh
# PID 1 of a disk image's one setup boot (mkdisk.sh): GRUB into the MBR of the disk holding /, grub.cfg written by
# update-grub, as debian-installer does; then the machine stops. Debian's initramfs has already moved /dev, /proc,
# /sys and /run onto the root file system.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mount -o remount,rw /
disk=/dev/vda
if grub-install --target=i386-pc "$disk" && update-grub; then
  # So a later grub-pc upgrade in the guest reinstalls to the same disk instead of asking.
  echo "grub-pc grub-pc/install_devices multiselect $disk" | debconf-set-selections
  echo "lab-disk-setup: done"
else
  echo "lab-disk-setup: failed"
fi
sync
mount -o remount,ro /
echo b > /proc/sysrq-trigger
