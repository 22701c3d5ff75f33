#!/usr/bin/env bash
# Builds the systemd VM image the operator-path tests boot (tests/vm_systemd.sh):
# a Debian 12 host as operators run it, reached over SSH.
#
# Recipe:
#   - mmdebstrap (minbase) from Debian's package archive: systemd-sysv, udev,
#     dbus, iproute2, openssh-server, python3 (Ansible), kmod, adduser, curl,
#     procps, linux-image-amd64 with its initrd (initramfs-tools; virtio_blk,
#     virtio_net and bonding are in the standard kernel package);
#   - host name compute-0; classic NIC names (net.ifnames=0): eth0 takes DHCP
#     from qemu's user network (systemd-networkd), eth1 + eth2 are the ports of
#     bond0 (active-backup, miimon 100 ms), made by systemd-networkd;
#   - a throwaway ed25519 key authorized for root (kept next to the image);
#   - serial console on ttyS0 (kernel console= starts serial-getty);
#   - timers that would compete for the CPU under TCG are masked;
#   - an ext4 image made with `mkfs.ext4 -d`; kernel and initrd copied out so
#     qemu boots them directly (-kernel/-initrd, root=/dev/vda).
# Cache: ${PREFLIGHT_CACHE:-~/.cache/preflight}/sysvm/<sha256 of this script>/;
# a changed recipe gets a new directory (older ones are removed).
# Output: the cache directory on stdout (last line).
# Building takes a few minutes (downloads ~250 MB through apt); booting ~30-60 s.
set -euo pipefail

root_cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}/sysvm"
key=$(sha256sum "$0" | cut -c1-16)
out="$root_cache/$key"
log() { echo "systemd-image: $*" >&2; }
if [ -f "$out/ready" ]; then echo "$out"; exit 0; fi
[ "$(id -u)" -eq 0 ] || { log "needs root (mmdebstrap, mkfs)"; exit 1; }

need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v ssh >/dev/null || need+=(openssh-client)
if [ "${#need[@]}" -gt 0 ]; then
  log "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

rm -rf "$root_cache" && mkdir -p "$out"
rootfs="$out/rootfs"
ssh-keygen -q -t ed25519 -N '' -C preflight-test-vm -f "$out/id_ed25519"

log "mmdebstrap (Debian 12)"
mmdebstrap --mode=root --variant=minbase \
  --include=systemd-sysv,udev,dbus,iproute2,openssh-server,python3,kmod,adduser,curl,procps,initramfs-tools,linux-image-amd64 \
  --aptopt='Acquire::Languages "none"' --dpkgopt='path-exclude=/usr/share/{doc,man,locale}/*' \
  bookworm "$rootfs" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main" >&2

log "configure"
echo compute-0 > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 compute-0\n' > "$rootfs/etc/hosts"
echo '/dev/vda / ext4 defaults,noatime 0 1' > "$rootfs/etc/fstab"
install -d -m 0700 "$rootfs/root/.ssh"
install -m 0600 "$out/id_ed25519.pub" "$rootfs/root/.ssh/authorized_keys"
echo 'options bonding max_bonds=0' > "$rootfs/etc/modprobe.d/bonding.conf"
net="$rootfs/etc/systemd/network"
cat > "$net/10-eth0.network" <<'EOF'
[Match]
Name=eth0

[Network]
DHCP=ipv4
EOF
cat > "$net/20-bond0.netdev" <<'EOF'
[NetDev]
Name=bond0
Kind=bond

[Bond]
Mode=active-backup
MIIMonitorSec=100ms
EOF
cat > "$net/20-bond0.network" <<'EOF'
[Match]
Name=bond0

[Link]
RequiredForOnline=no

[Network]
LinkLocalAddressing=no
ConfigureWithoutCarrier=yes
Address=192.0.2.10/24
EOF
cat > "$net/21-bond0-ports.network" <<'EOF'
[Match]
Name=eth1 eth2

[Link]
RequiredForOnline=no

[Network]
Bond=bond0
EOF
chroot "$rootfs" systemctl enable systemd-networkd.service >&2
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer man-db.timer \
         dpkg-db-backup.timer systemd-tmpfiles-clean.timer getty@tty1.service; do
  ln -sf /dev/null "$rootfs/etc/systemd/system/$t"
done
kver=$(ls "$rootfs/lib/modules" | head -n1)
cp "$rootfs/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$out/initrd.img"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*_Packages

log "mkfs.ext4 -d"
mkfs.ext4 -q -F -L root -d "$rootfs" "$out/rootfs.img" 2G
rm -rf "$rootfs"
echo "$kver" > "$out/ready"
echo "$out"
