#!/usr/bin/env bash
# Builds the .deb, installs it on this machine, checks the binary, man page,
# completions and that systemd loads the units, then removes it.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/preflight}
deb=$(bash deploy/debian/build.sh "$bin" target/debian)
echo "--- $deb"
dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/preflight ./usr/bin/preflight-agent ./lib/systemd/system/preflight-agent.service ./lib/systemd/system/preflight-aggregator.service \
         ./etc/preflight/preflight.toml ./usr/share/man/man1/preflight.1.gz ./usr/share/bash-completion/completions/preflight \
         ./usr/share/zsh/vendor-completions/_preflight ./usr/share/doc/preflight/operations.md; do
  grep -q " $f\$" <<<"$contents" || { echo "missing from the package: $f" >&2; exit 1; }
done
if dpkg -s preflight >/dev/null 2>&1; then dpkg -r preflight >/dev/null; fi
dpkg -i "$deb" >/dev/null
trap 'dpkg -r preflight >/dev/null 2>&1 || true' EXIT
/usr/bin/preflight --version
/usr/bin/preflight-agent --version
getent passwd preflight >/dev/null
zcat /usr/share/man/man1/preflight.1.gz | grep -q '^\.TH preflight 1'
grep -q 'complete' /usr/share/bash-completion/completions/preflight
# The packaged default configuration is valid for every command.
/usr/bin/preflight inspect --config /etc/preflight/preflight.toml --json >/dev/null || [ $? -eq 1 ]
systemd-analyze verify /lib/systemd/system/preflight-agent.service /lib/systemd/system/preflight-aggregator.service
dpkg -r preflight >/dev/null
[ ! -e /usr/bin/preflight ] && [ ! -e /usr/bin/preflight-agent ] || { echo "not removed" >&2; exit 1; }
echo "package: ok"
