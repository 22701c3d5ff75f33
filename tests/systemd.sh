#!/usr/bin/env bash
# systemd units: `systemd-analyze verify` passes and `systemd-analyze
# security` rates each unit 2.0 or better (threshold 20 = exposure 2.0).
# ExecStart is pointed at the binary under test in a temporary copy.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/preflight}")
command -v systemd-analyze >/dev/null || { echo "systemd-analyze missing (package systemd)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in systemd/*.service; do
  name=$(basename "$unit")
  sed "s|/usr/bin/preflight|$bin|" "$unit" > "$tmp/$name"
  systemd-analyze verify "$tmp/$name"
  systemd-analyze security --offline=yes --threshold=20 "$tmp/$name" | tail -n 1
done
echo "systemd units: ok"
