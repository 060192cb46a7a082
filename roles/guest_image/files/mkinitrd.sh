#!/bin/bash
# Build a small busybox initrd that insmods the root-disk drivers of a kernel tree and switch_roots to /sbin/init.
# Debian's kernels build virtio-pci/virtio-blk/ext4 as modules, and /boot has no initrd on this machine.
# Usage: mkinitrd.sh TREE RELEASE BUSYBOX_DEB OUT MODULE...
set -euo pipefail
tree=$1 release=$2 busybox_deb=$3 out=$4
shift 4
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM HUP
root=$work/root
mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,newroot,lib/modules}
dpkg -x "$busybox_deb" "$work/bb"
cp "$work/bb/bin/busybox" "$root/bin/busybox"

# Dependency order from the tree's modules.dep (softdeps included); modules built in print "builtin".
: > "$root/modules.order"
for mod in "$@"; do
  if ! modprobe --config=/dev/null -d "$tree" -S "$release" --show-depends "$mod" > "$work/deps" 2> /dev/null; then
    echo "mkinitrd: $mod not in $release, skipped" >&2
    continue
  fi
  awk '$1 == "insmod" { print $2 }' "$work/deps" | while read -r ko; do
    name=$(basename "$ko"); name=${name%.xz}; name=${name%.zst}; name=${name%.gz}
    grep -qx "/lib/modules/$name" "$root/modules.order" && continue
    case $ko in  # busybox insmod takes plain ELF only
      *.xz) xz -dc "$ko" > "$root/lib/modules/$name" ;;
      *.zst) zstd -qdc "$ko" > "$root/lib/modules/$name" ;;
      *.gz) gzip -dc "$ko" > "$root/lib/modules/$name" ;;
      *) cp "$ko" "$root/lib/modules/$name" ;;
    esac
    echo "/lib/modules/$name" >> "$root/modules.order"
  done
done

cat > "$root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
while read -r m; do insmod "$m" || echo "initrd: insmod $m failed"; done < /modules.order
root=/dev/vda
for arg in $(cat /proc/cmdline); do case $arg in root=*) root=${arg#root=} ;; esac; done
i=0
while [ ! -b "$root" ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 -o rw "$root" /newroot; then
  echo "initrd: cannot mount $root; stopping the guest"
  reboot -f
fi
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
INIT
chmod 0755 "$root/init"
(cd "$root" && find . | cpio -o -H newc --quiet) | gzip -1 > "$out.tmp"
mv -f "$out.tmp" "$out"
