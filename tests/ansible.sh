#!/usr/bin/env bash
# Ansible integration: syntax checks, ansible-lint, and a real run of the
# preflight_gate module against a local aggregator (127.0.0.1) with one
# healthy and one degraded node. ansible-core and ansible-lint come from PyPI
# into a cached virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$(realpath "${1:-target/debug/preflight}")
cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}"
venv="$cache/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
[ -x "$venv/bin/ansible-lint" ] || "$venv/bin/pip" install -q 'ansible-core>=2.16,<2.19' 'ansible-lint>=24,<26'
export PATH="$venv/bin:$PATH" ANSIBLE_CONFIG="$PWD/deploy/ansible/ansible.cfg" ANSIBLE_NOCOLOR=1 ANSIBLE_LOCALHOST_WARNING=false ANSIBLE_INVENTORY_UNPARSED_WARNING=false
cd deploy/ansible
echo "--- syntax"
for p in playbooks/*.yml; do
  ansible-playbook -i localhost, --syntax-check "$p" >/dev/null
done
echo "--- ansible-lint"
ansible-lint --offline -q playbooks/ roles/
echo "--- preflight_gate against a real aggregator"
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/agg.toml" <<TOML
[aggregator]
listen = "127.0.0.1:$port"
database = "$work/a.db"
auth = "none"
settle = "0s"
TOML
PREFLIGHT_LOG=error "$bin" aggregator -c "$work/agg.toml" &
pid=$!
# A broken replica for the failover checks: answers every request with 500.
port5=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 - "$port5" <<'PY' &
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(500); self.end_headers(); self.wfile.write(b"database on fire")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
PY
pid5=$!
trap 'kill $pid $pid5 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
for _ in $(seq 50); do curl -s -o /dev/null "http://127.0.0.1:$port5/" && break; sleep 0.1; done
report() {  # node, role, findings-json
  curl -sf -X POST -H 'content-type: application/json' "http://127.0.0.1:$port/v1/reports" -d \
    "{\"node\":\"$1\",\"boot_id\":\"b\",\"seq\":1,\"kind\":\"full\",\"labels\":{\"role\":\"$2\",\"fleet\":\"prod\"},\"state\":{\"node\":\"$1\",\"verdict\":\"go\",\"findings\":$3,\"interfaces\":[],\"bonds\":[],\"addresses\":[],\"routes\":[]}}" >/dev/null
}
report c1 healthy '[]'
report c2 compute '[{"code":"BOND_PORT_DOWN","severity":"critical","subject":"bond0/eth1","message":"bond0 port eth1 is down","since":"2026-11-25T00:00:00Z"}]'
ansible-playbook -i localhost, -c local playbooks/gate-test.yml \
  -e "preflight_url=http://127.0.0.1:$port" -e "preflight_5xx_url=http://127.0.0.1:$port5" -e "ansible_python_interpreter=$venv/bin/python"
echo "ansible: ok"
