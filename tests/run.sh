#!/usr/bin/env bash
# The whole test suite, as CI runs it and as a newcomer runs it:
#   bash tests/run.sh
# Installs what it needs (Debian packages, the VM kernel; cached), then runs
# the gates: fmt, clippy, build, every test (unit, namespace, VM), docs.
# Needs root (network namespaces, qemu); fails loudly without it.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
[ "$(id -u)" -eq 0 ] || { echo "tests/run.sh: the namespace and VM tests need root" >&2; exit 1; }

step "prerequisites"
need=()
command -v ip >/dev/null || need+=(iproute2)
command -v strip >/dev/null || need+=(binutils)
command -v ovsdb-server >/dev/null || need+=(openvswitch-switch)
command -v dnsmasq >/dev/null || [ -x /usr/sbin/dnsmasq ] || need+=(dnsmasq-base)
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
bash tests/vm/prepare.sh >/dev/null   # qemu, busybox, kernel image (cached)
bash tests/vm/rig-prepare.sh >/dev/null   # lldpd, tcpdump, bridge modules for the two-switch rig (cached)
bash tests/vm/systemd-image.sh >/dev/null   # Debian 12 systemd VM image (cached; ~4 min when its recipe changes)
command -v cargo-nextest >/dev/null || cargo install --locked cargo-nextest

step "cargo fmt --check"
cargo fmt --all --check

step "unsafe code only in the one audited module"
allowed=$(grep -rl --include='*.rs' 'allow(unsafe_code)' crates tests | sort | tr '\n' ' ')
[ "$allowed" = "crates/probe/src/packet.rs " ] || {
  echo "allow(unsafe_code) must appear only in crates/probe/src/packet.rs; found in: $allowed" >&2
  exit 1
}

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "build (shared by every test stage)"
cargo build --workspace --all-targets --locked

step "tests"
cargo nextest run --workspace --locked --no-fail-fast --failure-output final

step "schema-driven fuzzing of the aggregator (schemathesis)"
bash tests/schemathesis.sh target/debug/preflight

step "Prometheus rules, dashboard, real scrapes (promtool) and the on-call page (chromium)"
bash tests/observability.sh target/debug/preflight

step "systemd units (verify, security)"
bash tests/systemd.sh target/debug/preflight

step "deployment files (kubernetes-validate, yamllint)"
bash tests/deploy.sh

step "Ansible (syntax, ansible-lint, preflight_gate against a real aggregator)"
bash tests/ansible.sh target/debug/preflight

step "Debian package (build, install, units load, remove)"
bash tests/package.sh target/debug/preflight

step "a real Debian host with systemd (VM): the .deb, watchdog, TripleO and kolla playbooks stopped by a pulled bond cable"
# Upgrade/purge and the Ansible roles' idempotence run with every stage:
# bash tests/vm_systemd.sh target/debug/preflight (about 17 minutes under TCG).
PREFLIGHT_VM_STAGES="package watchdog seed kolla" bash tests/vm_systemd.sh target/debug/preflight

step "benchmarks, short smoke pass (figures printed, nothing asserted on time)"
bash tests/bench-smoke.sh target/debug/preflight-bench target/debug/preflight

step "cargo doc"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

step "done"
