#!/usr/bin/env bash
# Builds the Debian package: binary, systemd units, default configuration,
# man page, shell completions, docs.
#   bash deploy/debian/build.sh [BINARY] [OUTDIR]   (default target/release/preflight, target/debian)
# Without BINARY it first builds both release binaries (cargo does nothing
# when they are current): `preflight` (release profile) and the agent's own
# `preflight-agent` (release-agent profile: size-optimized, panic = abort;
# see Cargo.toml). preflight-agent is taken from target/release-agent/ when
# BINARY is target/release/preflight, else from beside BINARY (tests pass
# target/debug/preflight).
# PREFLIGHT_DEB_VERSION overrides the package version (default: Cargo.toml's).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -z "${1:-}" ]; then
  cargo build --locked --release -p preflight
  cargo build --locked --profile release-agent -p preflight-agentd
fi
bin=${1:-target/release/preflight}
out=${2:-target/debian}
version=${PREFLIGHT_DEB_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)}
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0755 "$bin" "$stage/usr/bin/preflight"
strip "$stage/usr/bin/preflight"
bindir=$(dirname "$bin")
[ "$(basename "$bindir")" = release ] && bindir="$(dirname "$bindir")/release-agent"
agent_bin="$bindir/preflight-agent"
[ -f "$agent_bin" ] || { echo "build.sh: $agent_bin missing (cargo build --profile release-agent -p preflight-agentd)" >&2; exit 1; }
install -D -m 0755 "$agent_bin" "$stage/usr/bin/preflight-agent"
strip "$stage/usr/bin/preflight-agent"
install -D -m 0644 systemd/preflight-agent.service "$stage/lib/systemd/system/preflight-agent.service"
install -D -m 0644 systemd/preflight-aggregator.service "$stage/lib/systemd/system/preflight-aggregator.service"
install -D -m 0644 deploy/debian/preflight.toml "$stage/etc/preflight/preflight.toml"
mkdir -p "$stage/usr/share/man/man1"
"$stage/usr/bin/preflight" debug man | gzip -9n > "$stage/usr/share/man/man1/preflight.1.gz"
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions" "$stage/usr/share/fish/vendor_completions.d"
"$stage/usr/bin/preflight" debug completions bash > "$stage/usr/share/bash-completion/completions/preflight"
"$stage/usr/bin/preflight" debug completions zsh > "$stage/usr/share/zsh/vendor-completions/_preflight"
"$stage/usr/bin/preflight" debug completions fish > "$stage/usr/share/fish/vendor_completions.d/preflight.fish"
install -d "$stage/usr/share/doc/preflight"
for d in operations api inspect metrics benchmarks design; do
  install -m 0644 "docs/$d.md" "$stage/usr/share/doc/preflight/$d.md"
done
cat > "$stage/usr/share/doc/preflight/copyright" <<TXT
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: preflight
Files: *
License: Apache-2.0
TXT
install -d "$stage/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
cat > "$stage/DEBIAN/control" <<TXT
Package: preflight
Version: $version
Architecture: $arch
Maintainer: preflight contributors <preflight@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), adduser
Section: net
Priority: optional
Description: go/no-go network readiness for bonded server fleets
 preflight reads bond ports, link state, addresses and routes over netlink,
 and answers one question for update pipelines: go or no-go.
TXT
echo "/etc/preflight/preflight.toml" > "$stage/DEBIAN/conffiles"
cat > "$stage/DEBIAN/postinst" <<'TXT'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
  getent group preflight >/dev/null || addgroup --system preflight
  getent passwd preflight >/dev/null || adduser --system --ingroup preflight --no-create-home --home /nonexistent --shell /usr/sbin/nologin preflight
  install -d -o root -g preflight -m 0750 /etc/preflight
  chgrp preflight /etc/preflight/preflight.toml && chmod 0640 /etc/preflight/preflight.toml
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade restarts the services that run, so they run the new binary
    # (not the deleted old one); a first install starts nothing: the
    # configuration needs the aggregator URL or tokens first.
    if [ -n "$2" ]; then systemctl try-restart preflight-agent.service preflight-aggregator.service || true; fi
  fi
fi
exit 0
TXT
cat > "$stage/DEBIAN/prerm" <<'TXT'
#!/bin/sh
set -e
# Removal stops the services (an upgrade restarts them in postinst instead).
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop preflight-agent.service preflight-aggregator.service || true
fi
exit 0
TXT
cat > "$stage/DEBIAN/postrm" <<'TXT'
#!/bin/sh
set -e
if [ "$1" = purge ]; then
  # What the package made besides its files: the units' enablement links and
  # the aggregator's state (SQLite: waivers, audit). The preflight user stays
  # (Debian policy: system users are not removed).
  rm -f /etc/systemd/system/*.wants/preflight-agent.service /etc/systemd/system/*.wants/preflight-aggregator.service
  rm -rf /var/lib/preflight
fi
if [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
TXT
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/prerm" "$stage/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/preflight_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >/dev/null
echo "$deb"
