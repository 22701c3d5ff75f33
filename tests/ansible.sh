#!/usr/bin/env bash
# Ansible integration: syntax checks, ansible-lint, a real run of the
# preflight_gate module against a local aggregator (127.0.0.1) with one
# healthy and one degraded node, then preflight_plan and preflight_maintenance
# (plan, take a lease, end it), and the roles' configuration templates
# rendered with their defaults and run: an aggregator with TLS and client
# certificates, an agent in a network namespace reporting over mutual TLS,
# and the module over HTTPS with a client certificate. Needs root. ansible-core and ansible-lint come from PyPI
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
echo "--- preflight_plan and preflight_maintenance against the same aggregator"
ansible-playbook -i localhost, -c local playbooks/plan-test.yml \
  -e "preflight_url=http://127.0.0.1:$port" -e "preflight_5xx_url=http://127.0.0.1:$port5" -e "ansible_python_interpreter=$venv/bin/python"

echo "--- the roles' templates with their defaults (TLS, node identity), run; preflight_gate over mTLS"
# The aggregator listens off loopback (0.0.0.0) as the role does, so every
# check of a non-loopback address applies; the agent runs in its own network
# namespace and reaches it over a veth pair, as a node would.
[ "$(id -u)" = 0 ] || { echo "this part needs root (a network namespace); it does not skip" >&2; exit 1; }
tls="$work/tls"; mkdir -p "$tls" "$work/etc" "$work/var"
ns="pf-ans-$$"; host_if="pfa$$"; ns_if="pfb$$"
host_ip=10.253.$(( $$ % 200 )).1; ns_ip=10.253.$(( $$ % 200 )).2
trap 'kill $pid $pid5 ${pid_tls:-} ${pid_agent:-} 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; ip link del "$host_if" 2>/dev/null || true; rm -rf "$work"' EXIT
(
  cd "$tls"
  mkca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.pem" -days 2 -subj "/CN=$1" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null; }
  mkleaf() {  # name san eku
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$1" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=%s\n' "$2" "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  }
  mkca ca; mkca other
  mkleaf server "IP:$host_ip" serverAuth
  mkleaf c3 DNS:c3 clientAuth
  mkleaf controller DNS:ansible-controller clientAuth
)
reader_token=$(openssl rand -hex 16); echo "$reader_token" >"$tls/reader.token"
reader_sha=$(printf %s "$reader_token" | sha256sum | cut -d' ' -f1)
tport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="https://$host_ip:$tport"
cat >"$work/render.yml" <<VARS
preflight_render_dir: $work
preflight_aggregator_listen: "0.0.0.0:$tport"
preflight_aggregator_tls_cert: $tls/server.pem
preflight_aggregator_tls_key: $tls/server.key
preflight_aggregator_tls_client_ca: $tls/ca.pem
preflight_aggregator_settle: 0s
preflight_aggregator_scopes: [role=ready, fleet=tls]
preflight_aggregator_nodes: [{name: c3, labels: {role: ready, fleet: tls}}, {name: c4, labels: {role: silent, fleet: tls}}]
preflight_aggregator_identities:
  - {name: controller, cert_san: ansible-controller, roles: [reader]}
  - {name: ci, token_sha256: "$reader_sha", roles: [reader]}
preflight_agent_node: c3
preflight_agent_aggregators: ["$url"]
preflight_agent_tls_ca: $tls/ca.pem
preflight_agent_tls_cert: $tls/c3.pem
preflight_agent_tls_key: $tls/c3.key
preflight_agent_listen: "127.0.0.1:9101"
VARS
ansible-playbook -i localhost, -c local playbooks/render-configs.yml -e "@$work/render.yml" -e "ansible_python_interpreter=$venv/bin/python" >/dev/null
agg_toml="$work/preflight_aggregator.toml"
if grep -nE '^(insecure_plaintext|fleet_report_token|report_token)|^reads = "open"' "$agg_toml"; then
  echo "FAIL: the aggregator role's defaults open plain HTTP, a fleet token or reads" >&2; exit 1
fi
grep -q '^tls = { cert = ' "$agg_toml" && grep -q "client_ca = " "$agg_toml" || { cat "$agg_toml" >&2; echo "FAIL: no TLS with client certificates" >&2; exit 1; }
sed -i "s#/etc/preflight/#$work/etc/#; s#/var/lib/preflight/#$work/var/#" "$agg_toml"
echo "admin-$reader_token" >"$work/etc/admin.token"
PREFLIGHT_LOG=error "$bin" aggregator -c "$agg_toml" &
pid_tls=$!
ip netns add "$ns"
ip link add "$host_if" type veth peer name "$ns_if" netns "$ns"
ip addr add "$host_ip/30" dev "$host_if"; ip link set "$host_if" up
ip -n "$ns" addr add "$ns_ip/30" dev "$ns_if"; ip -n "$ns" link set "$ns_if" up; ip -n "$ns" link set lo up
for _ in $(seq 50); do curl -sf --cacert "$tls/ca.pem" "$url/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -sf --cacert "$tls/ca.pem" "$url/healthz" >/dev/null || { echo "FAIL: the role-configured aggregator does not answer over HTTPS" >&2; exit 1; }
! curl -s -o /dev/null "http://$host_ip:$tport/healthz" || { echo "FAIL: plain HTTP answered on the TLS port" >&2; exit 1; }
PREFLIGHT_LOG=warn ip netns exec "$ns" "$bin" agent -c "$work/preflight_agent.toml" >/dev/null &
pid_agent=$!
ansible-playbook -i localhost, -c local playbooks/gate-tls-test.yml \
  -e "preflight_url=$url" -e "preflight_tls_dir=$tls" -e "ansible_python_interpreter=$venv/bin/python"
echo "ansible: ok"
