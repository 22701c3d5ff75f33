#!/usr/bin/env bash
# Prepares everything the real-kernel (VM) tests need, idempotently:
#   - Debian packages: qemu-system-x86, busybox-static, kmod, cpio, iproute2
#   - the kernel Debian's linux-image-amd64 depends on, unpacked into a cache
#   - a base initramfs tree: busybox, /sbin/ip with its libraries, modules
# Output: the cache directory path on stdout (last line).
# Cache: ${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}/vm
set -euo pipefail

cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}/vm"
mkdir -p "$cache"
log() { echo "vm-prepare: $*" >&2; }

need_pkgs=()
command -v qemu-system-x86_64 >/dev/null || need_pkgs+=(qemu-system-x86)
[ -x /bin/busybox ] && /bin/busybox --list 2>/dev/null | grep -qx udhcpc || need_pkgs+=(busybox-static)
command -v depmod >/dev/null || need_pkgs+=(kmod)
command -v cpio >/dev/null || need_pkgs+=(cpio)
command -v ip >/dev/null || need_pkgs+=(iproute2)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  log "installing ${need_pkgs[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi
if ! file -L /bin/busybox 2>/dev/null | grep -q 'statically linked' && ! ldd /bin/busybox 2>&1 | grep -q 'not a dynamic'; then
  log "installing busybox-static (the guest has no libc of its own for busybox)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends busybox-static >&2
fi

# The kernel: the version linux-image-amd64 depends on.
if [ ! -f "$cache/kernel.ready" ]; then
  [ -n "$(ls /var/lib/apt/lists/*Packages* 2>/dev/null)" ] || apt-get update -qq >&2
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$pkg" ] || { apt-get update -qq >&2; pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}'); }
  [ -n "$pkg" ] || { log "cannot find the kernel package linux-image-amd64 depends on"; exit 1; }
  log "downloading $pkg"
  rm -rf "$cache/kernel" && mkdir -p "$cache/kernel"
  (cd "$cache" && rm -f ./*.deb && apt-get download "$pkg" >&2)
  dpkg -x "$cache"/"$pkg"_*.deb "$cache/kernel"
  rm -f "$cache"/*.deb
  kver=$(ls "$cache/kernel/lib/modules" | head -n1)
  depmod -b "$cache/kernel" "$kver"
  echo "$kver" > "$cache/kernel.ready"
fi
kver=$(cat "$cache/kernel.ready")
[ -f "$cache/kernel/boot/vmlinuz-$kver" ] || { log "kernel image missing; delete $cache and retry"; exit 1; }

# Base initramfs tree (without the binary under test and the guest script).
if [ ! -f "$cache/base.ready" ] || [ "$cache/base.ready" -ot "$0" ]; then
  base="$cache/base"
  rm -rf "$base" && mkdir -p "$base"/{bin,sbin,lib,lib64,proc,sys,dev,tmp,run,etc,root,var/run,usr/share/udhcpc}
  cp /bin/busybox "$base/bin/busybox"
  # Every applet but `ip`: busybox's ip silently ignores bond options.
  for a in $(/bin/busybox --list); do
    case "$a" in ip|busybox) continue ;; esac
    ln -sf busybox "$base/bin/$a"
  done
  copy_with_libs() {
    local src=$1 dst=$2
    mkdir -p "$(dirname "$base$dst")"
    cp -L "$src" "$base$dst"
    ldd "$src" 2>/dev/null | grep -o '/[^ ]*' | while read -r lib; do
      mkdir -p "$base$(dirname "$lib")"
      cp -Ln "$lib" "$base$lib" 2>/dev/null || true
    done
  }
  copy_with_libs "$(command -v ip)" /sbin/ip
  mods="$base/lib/modules/$kver"
  mkdir -p "$mods"
  for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net tls bonding veth; do
    f=$(find "$cache/kernel/lib/modules/$kver" -name "$m.ko*" | head -n1)
    [ -n "$f" ] || { log "module $m not found in $kver"; exit 1; }
    cp "$f" "$mods/"
  done
  # udhcpc's default script applies the lease (used by the DHCP fallback replay).
  cat > "$base/usr/share/udhcpc/default.script" <<'SCRIPT'
#!/bin/sh
case "$1" in
  bound|renew)
    /sbin/ip addr add "$ip/${mask:-24}" dev "$interface" valid_lft "${lease:-3600}" preferred_lft "${lease:-3600}" 2>/dev/null
    [ -n "$router" ] && /sbin/ip route replace default via "${router%% *}" dev "$interface" proto dhcp
    ;;
esac
exit 0
SCRIPT
  chmod +x "$base/usr/share/udhcpc/default.script"
  echo "$kver" > "$cache/base.ready"
fi
echo "$cache"
