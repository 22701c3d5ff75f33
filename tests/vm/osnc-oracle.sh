#!/usr/bin/env bash
# The os-net-config oracle: the real os-net-config from PyPI, with every
# dependency it declares (wheels fetched and installed by pip on this host
# for the VM's Python, cached; the VM has no network), unpacked into the
# Debian 12 systemd VM (tests/vm/systemd-image.sh) booted with 8 NICs and
# asked `os-net-config -i [-m FILE]` in many states: cables pulled, a bond
# port, admin-down NICs, NICs unbound from the kernel and listed in
# dpdk_mapping.yaml, an SR-IOV PF in sriov_config.yaml, mapping files
# (partial, complete, by MAC and by name, an upper-case MAC, a MAC or a
# name on no NIC). preflight's prediction in the same state must agree on
# every nicN (tests/vm/osnc-oracle.py does the comparing). One boot, both
# pinned versions (their rules differ: SR-IOV PFs), preflight reading which
# one is installed from the package metadata as on a node.
#   bash tests/vm/osnc-oracle.sh [PREFLIGHT_BINARY]   (default target/debug/preflight)
# Exit 0 when every state agrees; 1 on a disagreement (state, name, both
# answers printed) or when anything cannot run: it never skips.
# Dependencies pinned by tests/vm/osnc-constraints.txt.
# Needs root (image build). Cache: ${PREFLIGHT_CACHE:-~/.cache/preflight}/osnc/.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=$(realpath "${1:-target/debug/preflight}")
[ -x "$bin" ] || { echo "osnc-oracle: no preflight binary at $bin" >&2; exit 1; }

# Pinned: the current release (edpm-ansible's) with every state, then TripleO
# Wallaby's with the groups where numbering can differ.
VERSIONS=("18.1.0:" "14.2.0:nomap upper-mac")
PY=3.11 # Debian 12's python3

log() { echo "osnc-oracle: $*" >&2; }

# The installed tree of os-net-config $1 for the VM's Python, as a tarball;
# prints its path.
fetch() {
  local v=$1 cache pins
  pins=$(sha256sum tests/vm/osnc-constraints.txt | cut -c1-12)
  cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}/osnc/$v-cp${PY/./}-$pins"
  if [ -f "$cache/ready" ] && [ -f "$cache/site.tar.gz" ]; then echo "$cache/site.tar.gz"; return; fi
  log "downloading os-net-config $v and its dependencies for Python $PY"
  rm -rf "${cache%-*}"-* && mkdir -p "$cache/wheels"
  # pip from a throwaway venv: the host's python3 may have no pip module
  # (tests/run.sh installs python3-venv).
  python3 -m venv "$cache.venv"
  local pip="$cache.venv/bin/pip"
  local target=(--only-binary=:all: --python-version "$PY" --implementation cp --abi "cp${PY/./}"
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64
    -c tests/vm/osnc-constraints.txt)
  if [[ "$v" == 14.* ]]; then
    # Wallaby's anyjson 0.3.3 is a source package whose setup.py uses
    # use_2to3, which setuptools dropped in 58: built with an older one.
    echo 'setuptools<58' > "$cache/build-constraints.txt"
    PIP_CONSTRAINT="$cache/build-constraints.txt" "$pip" wheel -q --no-deps -w "$cache/wheels" anyjson==0.3.3 >&2
  fi
  # 14.x imports pkg_resources without declaring it (a node has
  # python3-setuptools); setuptools 81 and later no longer ship it.
  local extra=()
  [[ "$v" == 14.* ]] && extra=("setuptools<71")
  "$pip" download -q -d "$cache/wheels" --find-links "$cache/wheels" "${target[@]}" "os-net-config==$v" "${extra[@]}" >&2
  # Installed by pip here (pip under TCG takes minutes); the VM unpacks the
  # tree into its dist-packages, package metadata included.
  "$pip" install -q --no-index --find-links "$cache/wheels" "${target[@]}" \
    --no-compile --target "$cache/site" "os-net-config==$v" "${extra[@]}" >&2
  rm -rf "$cache/site/bin" "$cache.venv"
  tar -C "$cache/site" -czf "$cache/site.tar.gz" . && rm -rf "$cache/site"
  touch "$cache/ready"
  echo "$cache/site.tar.gz"
}
trees=()
for entry in "${VERSIONS[@]}"; do trees+=("$(fetch "${entry%%:*}")"); done

# shellcheck source=tests/vm/systemd-vm.sh
source tests/vm/systemd-vm.sh
work=$(mktemp -d /tmp/preflight-osnc.XXXXXX)
# One SSH connection for every state (a new one costs about a second under TCG).
VM_SSH_OPTS+=(-o ControlMaster=auto -o "ControlPath=$work/ssh.sock" -o ControlPersist=yes)
cleanup() {
  ssh -o "ControlPath=$work/ssh.sock" -O exit dummy 2>/dev/null || true
  vm_stop || true
  rm -rf "$work"
}
trap cleanup EXIT
t0=$SECONDS
PREFLIGHT_VM_NICS=8 vm_start
strip -o "$work/preflight" "$bin"
vm_wait

vm_ssh 'mkdir -p /root/oracle'
for i in "${!VERSIONS[@]}"; do cp "${trees[$i]}" "$work/site-${VERSIONS[$i]%%:*}.tar.gz"; done
vm_scp "$work"/site-*.tar.gz "$work/preflight" tests/vm/osnc-oracle.py /root/oracle/
vm_ssh "set -e
  printf '#!/bin/sh\nexec python3 -c \"import sys; from os_net_config.cli import main; sys.exit(main())\" \"\$@\"\n' \
    > /usr/local/bin/os-net-config
  chmod +x /usr/local/bin/os-net-config
  # 14.x picks its provider by the directories it finds (RHEL's, as on a
  # Wallaby node); 18.x does not look.
  mkdir -p /etc/sysconfig/network-scripts
  python3 /root/oracle/osnc-oracle.py prepare" >&2

failed=0
n=0
link=()
for entry in "${VERSIONS[@]}"; do
  v=${entry%%:*} groups=${entry#*:}
  site=/usr/local/lib/python3.11/dist-packages
  vm_ssh "set -e
    [ -f /root/oracle/serve.pid ] && kill \$(cat /root/oracle/serve.pid) && rm -f /root/oracle/serve.pid /root/oracle/osnc.sock
    rm -rf $site && mkdir -p $site && tar -C $site -xzf /root/oracle/site-$v.tar.gz
    ls -d $site/os_net_config-$v.dist-info
    setsid python3 /root/oracle/osnc-oracle.py serve </dev/null >/root/oracle/serve.log 2>&1 &
    echo \$! > /root/oracle/serve.pid
    for i in \$(seq 300); do [ -S /root/oracle/osnc.sock ] && exit 0; sleep 0.2; done
    cat /root/oracle/serve.log; exit 1" >&2
  log "os-net-config $v installed at $((SECONDS - t0)) s"
  while IFS=$'\t' read -r state pulls; do
    # Only the cables that change (the monitor is asked once per change).
    for i in 1 2 3 4 5 6 7; do
      want=on
      [[ " $pulls " == *" $i "* ]] && want=off
      [ "${link[$i]:-on}" = "$want" ] || { vm_link "$i" "$want"; link[$i]=$want; }
    done
    n=$((n + 1))
    vm_ssh "python3 /root/oracle/osnc-oracle.py run '$state' $v" </dev/null || failed=$((failed + 1))
    echo "     (at $((SECONDS - t0)) s)"
  done < <(vm_ssh "python3 /root/oracle/osnc-oracle.py list $groups")
done
[ "$n" -ge 40 ] || { log "only $n states ran"; exit 1; }
log "$n states, $failed disagreeing, $((SECONDS - t0)) s in all"
[ "$failed" -eq 0 ]
