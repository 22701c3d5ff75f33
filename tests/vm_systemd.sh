#!/usr/bin/env bash
# The operator path on a real Debian 12 host booted by systemd (a qemu VM,
# tests/vm/systemd-image.sh), reached over SSH. One boot serves every stage,
# in this order:
#   package   the .deb (deploy/debian/build.sh) installed with `apt install`,
#             both units enabled and started; is-active, READY (Type=notify),
#             netlink, ARP + ICMP probes under the hardening, no warnings in
#             the journal, `systemd-analyze security` inside the VM
#   watchdog  agent stopped with SIGSTOP -> restarted by systemd (WatchdogSec)
#   seed      playbooks/tripleo-update.yml against the VM as compute node
#             (services as the package installed them): go -> update ran;
#             bond cable pulled (qemu monitor) -> stops at the gate naming
#             node, bond and port, no update; cable back while waiting ->
#             continues and completes
#   kolla     playbooks/kolla-upgrade.yml: the same refusal and completion
#   upgrade   a newer build installed over it keeps waivers and audit, the
#             services run the new binary, the agent reports again; purge
#             removes what the package owns and nothing else
#   ansible   deploy/ansible roles over SSH with a real inventory: agent with
#             bond0 described by an os-net-config file the role installs,
#             aggregator; second run changed=0
# CI (tests/run.sh) runs `package watchdog seed kolla` (measured 5.7 min with
# the boot, under TCG); every stage (the default) took about 17 min, the
# Ansible roles' two runs alone 7.5 min:
#   bash tests/vm_systemd.sh [BINARY]          (default target/debug/preflight)
#   PREFLIGHT_VM_STAGES="package watchdog seed kolla" bash tests/vm_systemd.sh
# Needs root (image build). The image is cached (~/.cache/preflight/sysvm).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/preflight}")
stages=" ${PREFLIGHT_VM_STAGES:-package watchdog seed kolla upgrade ansible} "
has() { [[ "$stages" == *" $1 "* ]]; }
# shellcheck source=tests/vm/systemd-vm.sh
source tests/vm/systemd-vm.sh

work=$(mktemp -d /tmp/preflight-vmtest.XXXXXX)
cleanup() { vm_stop || true; rm -rf "$work"; }
trap cleanup EXIT
t_start=$SECONDS
step() { printf -- '--- [%4ds] %s\n' "$((SECONDS - t_start))" "$*"; }
fail() {
  echo "FAIL: $*" >&2
  vm_ssh 'journalctl -b --no-pager -n 60 -u preflight-agent -u preflight-aggregator' >&2 || true
  exit 1
}
# Polls a guest command until it succeeds; $1 seconds, rest the command.
guest_wait() {
  local limit=$1; shift
  local deadline=$((SECONDS + limit))
  until vm_ssh "$*" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || return 1
    sleep 1
  done
}
# Runs python over a JSON document on stdin; the expression must be true.
json_check() { python3 -c "import json,sys; d=json.load(sys.stdin); sys.exit(0 if ($1) else 1)"; }

step "start the VM; meanwhile build the packages (version as built, and a newer one for the upgrade)"
vm_start
strip -o "$work/preflight" "$bin"
strip -o "$work/preflight-agent" "$(dirname "$bin")/preflight-agent"
deb1=$(bash deploy/debian/build.sh "$work/preflight" "$work/deb1" | tail -n1)
version=$(dpkg-deb -f "$deb1" Version)
deb2=$(PREFLIGHT_DEB_VERSION="$version+vmtest1" bash deploy/debian/build.sh "$work/preflight" "$work/deb2" | tail -n1)

step "wait for the VM"
vm_wait
vm_ssh 'systemctl is-system-running --wait' >/dev/null 2>&1 || {
  vm_ssh 'systemctl --failed --no-legend' >&2
  fail "the VM did not boot cleanly"
}
vm_ssh 'cat /proc/net/bonding/bond0' | grep -q 'Bonding Mode: fault-tolerance (active-backup)' || fail "bond0 missing in the VM"

# The agent's test configuration: the packaged file plus an aggregator and
# probes of qemu's user-net gateway (10.0.2.2 answers ARP and ICMP itself;
# nothing leaves the VM's user network).
# The aggregator listens on every address (with tokens) so the playbooks on
# this host reach it through the hostfwd of port 9100.
agent_conf='[agent]
listen = "127.0.0.1:9101"
aggregators = ["http://127.0.0.1:9100"]
token_file = "/etc/preflight/report.token"
labels = { role = "compute" }
heartbeat = "2s"
probes = ["arp:10.0.2.2@eth0", "icmp:10.0.2.2@eth0"]
probe_interval = "1s"

[aggregator]
listen = "0.0.0.0:9100"
# Plain HTTP and one fleet report token off loopback are explicit opt-ins;
# here the only way in is qemu'"'"'s hostfwd from the host'"'"'s loopback.
insecure_plaintext = true
fleet_report_token = true
reads = "open"
database = "/var/lib/preflight/preflight.db"
report_token_file = "/etc/preflight/report.token"
admin_token_file = "/etc/preflight/admin.token"
settle = "2s"
scopes = ["role=compute"]'

if has package; then
  step "package: apt install ./$(basename "$deb1")"
  vm_scp "$deb1" "$deb2" /root/
  echo keep > "$work/sentinel"
  vm_scp "$work/sentinel" /etc/preflight-sentinel
  vm_ssh "apt-get install -y -q /root/$(basename "$deb1")" >"$work/apt.log" 2>&1 || { cat "$work/apt.log" >&2; fail "apt install"; }
  vm_ssh 'test -x /usr/bin/preflight && getent passwd preflight && stat -c "%U:%G %a" /etc/preflight/preflight.toml' | tail -n1 | grep -qx 'root:preflight 640' \
    || fail "package files or the preflight user missing"
  vm_ssh 'cat > /etc/preflight/preflight.toml' <<<"$agent_conf"
  vm_ssh 'cd /etc/preflight && echo vm-report-token > report.token && echo vm-admin-token > admin.token && chgrp preflight report.token admin.token && chmod 0640 report.token admin.token'
  step "package: enable --now both units"
  vm_ssh 'systemctl enable --now preflight-aggregator preflight-agent' >/dev/null 2>&1 \
    || fail "enable --now failed: $(vm_ssh 'systemctl status --no-pager preflight-aggregator preflight-agent; journalctl -b --no-pager -u preflight-aggregator -u preflight-agent | tail -n 30' 2>&1)"
  for u in preflight-agent preflight-aggregator; do
    guest_wait 30 "systemctl is-active -q $u" || fail "$u is not active"
    # Type=notify: active/running only after READY=1 (activating before).
    show=$(vm_ssh "systemctl show -p Type,ActiveState,SubState,StatusText,NRestarts $u")
    echo "$u: $(tr '\n' ' ' <<<"$show")"
    grep -qx 'Type=notify' <<<"$show" && grep -qx 'ActiveState=active' <<<"$show" && grep -qx 'SubState=running' <<<"$show" \
      || fail "$u: READY not seen: $show"
  done
  step "package: the agent under its hardening reads netlink and probes 10.0.2.2"
  guest_wait 30 "curl -sf http://127.0.0.1:9101/v1/report | python3 -c 'import json,sys; d=json.load(sys.stdin); p={x[\"target\"]: x for x in d[\"probes\"]}; sys.exit(0 if all(k in p and p[k][\"rtt_ms\"] is not None and p[k][\"loss\"] < 1 for k in (\"arp 10.0.2.2 via eth0\", \"icmp 10.0.2.2 via eth0\")) else 1)'" \
    || { vm_ssh 'curl -s http://127.0.0.1:9101/v1/report' >&2; fail "probes did not answer"; }
  vm_ssh 'curl -sf http://127.0.0.1:9101/v1/report' >"$work/report.json"
  json_check '{i["name"] for i in d["interfaces"]} >= {"lo","eth0","eth1","eth2","bond0"} and any(b["name"] == "bond0" for b in d["bonds"])' <"$work/report.json" \
    || fail "the agent's report lacks interfaces or bond0: $(head -c 2000 "$work/report.json")"
  python3 -c 'import json,sys; d=json.load(sys.stdin); [print("  probe", p["target"], "loss", p["loss"], "rtt_ms", p["rtt_ms"]) for p in d["probes"]]; print("  verdict", d["verdict"], [f["code"] + " " + f["subject"] for f in d["findings"]])' <"$work/report.json"
  guest_wait 30 "curl -sf http://127.0.0.1:9100/v1/nodes/compute-0" || fail "the agent did not reach the aggregator"
  warnings=$(vm_ssh 'journalctl -b -q --no-pager -p warning -u preflight-agent -u preflight-aggregator')
  [ -z "$warnings" ] || fail "warnings in the journal: $warnings"
  ! vm_ssh 'journalctl -b -q --no-pager -u preflight-agent -u preflight-aggregator' | grep -iE 'permission denied|operation not permitted|EPERM|EACCES' \
    || fail "permission errors in the journal"
  step "package: systemd-analyze security inside the VM (threshold 2.0 as tests/systemd.sh)"
  for u in preflight-agent preflight-aggregator; do
    vm_ssh "systemd-analyze security --no-pager --threshold=20 $u.service" | tail -n1 | sed "s/^/  $u: /" \
      || fail "$u: exposure above 2.0"
  done
fi

if has watchdog; then
  step "watchdog: SIGSTOP the agent; systemd restarts it within WatchdogSec"
  wd=$(vm_ssh 'systemctl show -p WatchdogUSec --value preflight-agent')
  pid=$(vm_ssh 'systemctl show -p MainPID --value preflight-agent')
  n0=$(vm_ssh 'systemctl show -p NRestarts --value preflight-agent')
  vm_ssh "kill -STOP $pid"
  t0=$SECONDS
  # WatchdogSec, RestartSec (2s), start-up and TCG slack.
  guest_wait 60 "[ \"\$(systemctl show -p MainPID --value preflight-agent)\" != $pid ] && systemctl is-active -q preflight-agent" \
    || fail "the agent was not restarted after SIGSTOP"
  n1=$(vm_ssh 'systemctl show -p NRestarts --value preflight-agent')
  [ "$n1" -gt "$n0" ] || fail "NRestarts did not grow ($n0 -> $n1)"
  vm_ssh 'journalctl -b -q --no-pager -u preflight-agent' | grep -q 'Watchdog timeout' || fail "no watchdog timeout in the journal"
  echo "  WatchdogUSec=$wd; restarted after $((SECONDS - t0)) s (NRestarts $n0 -> $n1, MainPID $pid -> $(vm_ssh 'systemctl show -p MainPID --value preflight-agent'))"
fi

# shellcheck source=tests/vm_ansible.sh
source tests/vm_ansible.sh
if has seed; then vm_seed; fi
if has kolla; then vm_kolla; fi
if has upgrade; then
  step "upgrade: a waiver before, install $(basename "$deb2") over it"
  vm_ssh 'preflight waive add --server http://127.0.0.1:9100 --token-file /etc/preflight/admin.token --node compute-0 --code BOND_PORT_DOWN --subject bond0/eth1 --reason "CHG-1 vm test" --for 2h --author vmtest' >/dev/null \
    || fail "waive add"
  before_audit=$(vm_ssh 'curl -sf -H "authorization: Bearer vm-admin-token" http://127.0.0.1:9100/v1/audit')
  seq_before=$(vm_ssh 'systemctl show -p MainPID --value preflight-agent')
  vm_ssh "apt-get install -y -q /root/$(basename "$deb2")" >"$work/apt2.log" 2>&1 || { cat "$work/apt2.log" >&2; fail "upgrade"; }
  vm_ssh "dpkg-query -W -f '\${Version}' preflight" | grep -qx "$version+vmtest1" || fail "not upgraded"
  vm_ssh 'grep -q "probes = " /etc/preflight/preflight.toml && test -f /etc/preflight/admin.token' || fail "the upgrade replaced the edited configuration"
  for u in preflight-agent preflight-aggregator; do
    guest_wait 30 "systemctl is-active -q $u" || fail "$u not active after the upgrade"
    # The running binary is the new one (not the deleted old inode).
    vm_ssh "ls -l /proc/\$(systemctl show -p MainPID --value $u)/exe" | grep -q '(deleted)' && fail "$u still runs the old binary after the upgrade"
  done
  [ "$(vm_ssh 'systemctl show -p MainPID --value preflight-agent')" != "$seq_before" ] || fail "the agent was not restarted by the upgrade"
  guest_wait 20 'curl -sf -H "authorization: Bearer vm-admin-token" http://127.0.0.1:9100/v1/waivers | grep -q "CHG-1 vm test"' || fail "the waiver was lost in the upgrade"
  after_audit=$(vm_ssh 'curl -sf -H "authorization: Bearer vm-admin-token" http://127.0.0.1:9100/v1/audit')
  python3 -c 'import json,sys; b=json.loads(sys.argv[1]); a=json.loads(sys.argv[2]); n=lambda d: len(d if isinstance(d, list) else next(v for v in d.values() if isinstance(v, list))); sys.exit(0 if n(a) >= n(b) >= 1 else 1)' "$before_audit" "$after_audit" \
    || fail "the audit log lost entries in the upgrade: $before_audit -> $after_audit"
  vm_ssh 'curl -sf -H "authorization: Bearer vm-admin-token" http://127.0.0.1:9100/v1/audit' | grep -q 'CHG-1 vm test' || fail "the audit log lost the waiver entry"
  t_up=$(date -u +%s)
  guest_wait 30 "curl -sf http://127.0.0.1:9100/v1/nodes/compute-0 | python3 -c 'import json,sys,datetime; d=json.load(sys.stdin); s=json.dumps(d); sys.exit(0 if \"compute-0\" in s else 1)'" \
    || fail "the agent did not report again after the upgrade"
  echo "  upgraded to $version+vmtest1; waiver and audit kept; both services run the new binary (t=$t_up)"

  step "purge: removes what the package owns and nothing else"
  vm_ssh 'dpkg-query -L preflight' | grep -v '^/\.$' | sort >"$work/owned"
  vm_ssh 'apt-get purge -y -q preflight' >"$work/purge.log" 2>&1 || { cat "$work/purge.log" >&2; fail "purge"; }
  left=$(vm_ssh "for f in $(grep -vE '^/(usr|lib|etc|usr/share|usr/share/[^/]+|usr/share/[^/]+/[^/]+|lib/systemd|lib/systemd/system|usr/bin|usr/share/man/man1)$' "$work/owned" | tr '\n' ' ') /var/lib/preflight /etc/systemd/system/multi-user.target.wants/preflight-agent.service /etc/systemd/system/multi-user.target.wants/preflight-aggregator.service; do [ -e \$f ] || [ -L \$f ] && echo \$f; done; true")
  # /etc/preflight stays only for the tokens this test wrote there (not the package's).
  left=$(grep -vx /etc/preflight <<<"$left" || true)
  [ -z "$left" ] || fail "left behind by purge: $left"
  [ "$(vm_ssh 'ls /etc/preflight | tr "\n" " "')" = "admin.token report.token " ] || fail "purge touched files it does not own in /etc/preflight"
  vm_ssh 'pgrep -x preflight' && fail "a preflight process survived the purge"
  vm_ssh 'test "$(cat /etc/preflight-sentinel)" = keep && test -f /etc/systemd/network/20-bond0.netdev && test -x /usr/bin/curl' || fail "purge removed something it does not own"
  echo "  purge left no owned file, no state, no enablement link; others untouched"
fi

if has ansible; then vm_ansible_roles; fi
step "done"
