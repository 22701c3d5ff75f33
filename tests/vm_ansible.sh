# shellcheck shell=bash
# Stages `seed`, `kolla` and `ansible` of tests/vm_systemd.sh (sourced by it,
# with the VM booted; functions vm_seed, vm_kolla, vm_ansible_roles):
# deploy/ansible run from this host against the VM over SSH with a real
# inventory. The VM is compute-0 (role=compute) and also runs the aggregator; the gate module runs on this host (delegate_to: localhost)
# and asks the VM's aggregator through the hostfwd of port 9100. The "update"
# and "kolla-ansible upgrade" steps are replaced by commands that write marker
# files on this host, which prove whether the update ran.

cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}"
venv="$cache/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
[ -x "$venv/bin/ansible-playbook" ] || "$venv/bin/pip" install -q 'ansible-core>=2.16,<2.19' 'ansible-lint>=24,<26'
export ANSIBLE_CONFIG="$PWD/deploy/ansible/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_HOST_KEY_CHECKING=False \
  ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_PYTHON_INTERPRETER=auto_silent ANSIBLE_PIPELINING=True
ap() { (cd deploy/ansible && "$venv/bin/ansible-playbook" -i "$work/inventory" -e "@$work/vars.yml" "$@"); }

cat >"$work/inventory" <<INV
[Compute]
compute-0 ansible_host=127.0.0.1 ansible_port=$VM_SSH_PORT ansible_user=root ansible_ssh_private_key_file=$VM_KEY ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null' ansible_python_interpreter=/usr/bin/python3

[overcloud:children]
Compute

[preflight_aggregator:children]
Compute

[kolla]
INV
cat >"$work/vars.yml" <<VARS
preflight_agent_binary_src: $work/preflight
preflight_aggregator_binary_src: $work/preflight
preflight_agent_aggregators: ["http://127.0.0.1:9100"]
preflight_agent_labels: {role: compute}
preflight_agent_heartbeat: 2s
preflight_agent_report_token: vm-report-token
preflight_aggregator_report_token: vm-report-token
preflight_aggregator_admin_token: vm-admin-token
# This test's own network: the aggregator is reached only through qemu's
# hostfwd from this host's loopback, so it opts into plain HTTP, the fleet
# report token and open reads (the roles' defaults are TLS, node identity
# and authenticated reads; tests/ansible.sh runs those).
preflight_aggregator_insecure_plaintext: true
preflight_aggregator_fleet_report_token: true
preflight_aggregator_reads: open
preflight_aggregator_settle: 2s
preflight_aggregator_scopes: [role=compute]
preflight_aggregator_nodes: [{name: compute-0, labels: {role: compute}}]
# bond0 as the image's systemd-networkd made it, in os-net-config's words.
preflight_agent_os_net_config_content: |
  network_config:
    - type: interface
      name: eth0
      use_dhcp: true
    - type: linux_bond
      name: bond0
      bonding_options: "mode=active-backup miimon=100"
      addresses:
        - ip_netmask: 192.0.2.10/24
      members:
        - type: interface
          name: eth1
        - type: interface
          name: eth2
preflight_servers: ["http://127.0.0.1:$VM_AGG_PORT"]
VARS
gate() { curl -s "http://127.0.0.1:$VM_AGG_PORT/v1/gate?scope=role%3Dcompute"; }
gate_wait() {  # verdict, seconds
  local deadline=$((SECONDS + $2))
  until gate | json_check "d.get('verdict') == '$1'"; do
    [ $SECONDS -lt $deadline ] || { echo "gate is not $1: $(gate)" >&2; return 1; }
    sleep 1
  done
}
recap() { grep -E '^compute-0 +:' "$1" | sed 's/  */ /g'; }

vm_ansible_roles() {
  step "ansible: install.yml over SSH (aggregator + agent with an os-net-config bond)"
  ap playbooks/install.yml >"$work/install1.log" 2>&1 || { cat "$work/install1.log" >&2; fail "install.yml"; }
  echo "  first run: $(recap "$work/install1.log")"
  for u in preflight-agent preflight-aggregator; do
    guest_wait 30 "systemctl is-active -q $u" || fail "$u not active after the role"
  done
  vm_ssh 'test -f /etc/os-net-config/config.yaml' || fail "the role did not install the os-net-config file"
  guest_wait 30 "curl -sf http://127.0.0.1:9101/v1/report | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d.get(\"expected_from\") == \"/etc/os-net-config/config.yaml\" and any(b[\"name\"] == \"bond0\" for b in d[\"bonds\"]) else 1)'" \
    || { vm_ssh 'curl -s http://127.0.0.1:9101/v1/report' | head -c 3000 >&2; fail "the agent does not check against the role's os-net-config file"; }
  gate_wait go 60 || fail "the gate did not turn go after the role"
  step "ansible: second run changes nothing"
  ap playbooks/install.yml >"$work/install2.log" 2>&1 || { cat "$work/install2.log" >&2; fail "install.yml (second run)"; }
  echo "  second run: $(recap "$work/install2.log")"
  recap "$work/install2.log" | grep -q ' changed=0 ' || { grep -B2 -A8 'changed:' "$work/install2.log" >&2; fail "the roles are not idempotent"; }
}

tripleo() {
  ap playbooks/tripleo-update.yml -e preflight_role=Compute -e preflight_batch=1 \
    -e "{\"preflight_update_argv\": [\"touch\", \"$work/updated\"]}" "$@"
}

vm_seed() {
  step "seed: both cables in -> gate go, the rolling update runs"
  gate_wait go 60 || fail "not go with both cables in"
  rm -f "$work/updated"
  tripleo -e preflight_wait_for_go=true -e preflight_gate_timeout=60 >"$work/seed1.log" 2>&1 || { cat "$work/seed1.log" >&2; fail "tripleo-update.yml with both cables in"; }
  [ -f "$work/updated" ] || fail "the update did not run with the gate go"
  echo "  $(recap "$work/seed1.log"); update ran"

  step "seed: bond0's eth1 cable pulled (qemu monitor) -> the playbook stops at the gate"
  rm -f "$work/updated"
  vm_link 1 off
  gate_wait no-go 30 || fail "the gate did not turn no-go with a pulled cable"
  if tripleo -e preflight_wait_for_go=true -e preflight_gate_timeout=10 >"$work/seed2.log" 2>&1; then
    cat "$work/seed2.log" >&2; fail "the playbook completed with a pulled bond cable"
  fi
  grep -o 'preflight gate: no-go[^"]*' "$work/seed2.log" | head -n1 | sed 's/^/  /'
  grep -q 'compute-0 BOND_PORT_DOWN bond0/eth1' "$work/seed2.log" || { cat "$work/seed2.log" >&2; fail "the gate failure does not name node, bond and port"; }
  [ ! -e "$work/updated" ] || fail "the update ran although the gate was no-go"
  # The default mode skips nodes that are not ready instead of waiting.
  tripleo >"$work/seed3.log" 2>&1 || { cat "$work/seed3.log" >&2; fail "tripleo-update.yml (skip mode)"; }
  [ ! -e "$work/updated" ] || fail "the update ran on a node that is not ready (skip mode)"
  echo "  skip mode: $(recap "$work/seed3.log"); no update"

  step "seed: cable back while the playbook waits for go -> it continues and completes"
  tripleo -e preflight_wait_for_go=true -e preflight_gate_timeout=240 >"$work/seed4.log" 2>&1 &
  play=$!
  sleep 15
  kill -0 $play 2>/dev/null || { cat "$work/seed4.log" >&2; fail "the playbook did not wait for go"; }
  [ ! -e "$work/updated" ] || fail "the update ran while the cable was out"
  vm_link 1 on
  t0=$SECONDS
  wait $play || { cat "$work/seed4.log" >&2; fail "the playbook did not complete after the cable came back"; }
  [ -f "$work/updated" ] || fail "the update did not run after the cable came back"
  echo "  $(recap "$work/seed4.log"); completed $((SECONDS - t0)) s after the cable came back"
}

kolla() {
  ap playbooks/kolla-upgrade.yml -e preflight_scope=role=compute \
    -e "{\"kolla_upgrade_argv\": [\"touch\", \"$work/kolla-upgraded\"]}" "$@"
}

vm_kolla() {
  step "kolla: cable pulled -> kolla-upgrade.yml refuses to start"
  rm -f "$work/kolla-upgraded"
  vm_link 1 off
  gate_wait no-go 30 || fail "the gate did not turn no-go"
  if kolla -e preflight_gate_timeout=8 >"$work/kolla1.log" 2>&1; then
    cat "$work/kolla1.log" >&2; fail "kolla-upgrade.yml ran with a pulled bond cable"
  fi
  grep -q 'compute-0 BOND_PORT_DOWN bond0/eth1' "$work/kolla1.log" || { cat "$work/kolla1.log" >&2; fail "the kolla gate failure does not name node, bond and port"; }
  [ ! -e "$work/kolla-upgraded" ] || fail "kolla upgrade ran although no-go"
  step "kolla: cable back -> the upgrade runs"
  vm_link 1 on
  kolla -e preflight_gate_timeout=120 >"$work/kolla2.log" 2>&1 || { cat "$work/kolla2.log" >&2; fail "kolla-upgrade.yml with the cable back"; }
  [ -f "$work/kolla-upgraded" ] || fail "kolla upgrade did not run"
  echo "  refused with the cable out, ran with it back"
}
