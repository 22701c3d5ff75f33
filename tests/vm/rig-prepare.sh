#!/usr/bin/env bash
# Prepares the two-switch rig of issue 33 (tests/tests/vm_rig.rs) on top of
# tests/vm/prepare.sh, idempotently:
#   - lldpd and tcpdump from Debian, unpacked (never installed: installing
#     lldpd would start an LLDP daemon on this host's own interfaces), with
#     the libraries they link installed as ordinary packages
#   - an overlay tree for the initramfs: bridge, lldpd, lldpcli, tcpdump with
#     their libraries, the modules llc stp bridge garp mrp 8021q, and the
#     _lldpd / tcpdump users their privilege separation needs
# Output: the overlay directory on stdout (last line).
set -euo pipefail

cache=$(bash "$(dirname "$0")/prepare.sh" | tail -n1)
log() { echo "rig-prepare: $*" >&2; }
kver=$(cat "$cache/kernel.ready")
rig="$cache/rig"

if [ -f "$cache/rig.ready" ] && [ ! "$cache/rig.ready" -ot "$0" ]; then
  echo "$rig"
  exit 0
fi

command -v bridge >/dev/null || {
  log "installing iproute2 (bridge)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends iproute2 >&2
}
# The libraries lldpd and tcpdump link, from their own Depends lines.
libs=$(apt-cache depends --no-pre-depends lldpd tcpdump | awk '/ Depends: lib/{print $2}' | grep -v '^libc6$' | sort -u)
missing=()
for p in $libs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || {
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
  }
fi

# Under /tmp: apt's sandbox user (_apt) must reach the download directory.
pkgs=$(mktemp -d)
trap 'rm -rf "$pkgs"' EXIT
rm -rf "$rig"
mkdir -p "$pkgs/dl" "$pkgs/x" "$rig"
chmod 755 "$pkgs"
chmod 777 "$pkgs/dl"
(cd "$pkgs/dl" && apt-get download lldpd tcpdump >&2)
for d in "$pkgs"/dl/*.deb; do dpkg -x "$d" "$pkgs/x"; done
x="$pkgs/x"
libdir="$x/usr/lib/x86_64-linux-gnu"

copy_with_libs() {
  local src=$1 dst=$2
  mkdir -p "$(dirname "$rig$dst")"
  cp -L "$src" "$rig$dst"
  local out
  out=$(LD_LIBRARY_PATH="$libdir" ldd "$src")
  if grep -q 'not found' <<<"$out"; then
    log "$src: unresolved libraries:"; echo "$out" >&2; exit 1
  fi
  grep -o '/[^ ]*' <<<"$out" | while read -r lib; do
    # Libraries of the unpacked package go where the package puts them.
    local to=${lib#"$x"}
    mkdir -p "$rig$(dirname "$to")"
    cp -Ln "$lib" "$rig$to" 2>/dev/null || true
  done
}
copy_with_libs "$(command -v bridge)" /sbin/bridge
copy_with_libs "$x/usr/sbin/lldpd" /usr/sbin/lldpd
copy_with_libs "$x/usr/sbin/lldpcli" /usr/sbin/lldpcli
copy_with_libs "$x/usr/bin/tcpdump" /usr/sbin/tcpdump
[ -f "$rig/usr/lib/x86_64-linux-gnu/liblldpctl.so.4" ] || { log "liblldpctl.so.4 not copied"; exit 1; }

mods="$rig/lib/modules/$kver"
mkdir -p "$mods"
for m in llc stp bridge garp mrp 8021q; do
  f=$(find "$cache/kernel/lib/modules/$kver" -name "$m.ko*" | head -n1)
  [ -n "$f" ] || { log "module $m not found in $kver"; exit 1; }
  cp "$f" "$mods/"
done

mkdir -p "$rig/etc"
cat > "$rig/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
_lldpd:x:100:100:lldpd:/run/lldpd:/bin/false
tcpdump:x:101:101:tcpdump:/nonexistent:/bin/false
EOF
cat > "$rig/etc/group" <<'EOF'
root:x:0:
_lldpd:x:100:
tcpdump:x:101:
EOF
touch "$cache/rig.ready"
echo "$rig"
