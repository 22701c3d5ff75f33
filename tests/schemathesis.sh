#!/usr/bin/env bash
# Schema-driven fuzzing of a running aggregator against docs/openapi.json.
#   Pass 1, without credentials: no 5xx, responses match the schema, and the
#     store is byte-for-byte the same afterwards (every write was rejected).
#   Pass 2, with tokens: no 5xx, responses match the schema.
# Traffic goes to 127.0.0.1 only. Usage: bash tests/schemathesis.sh [BIN]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/preflight}
cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}"
venv="$cache/venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi
work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > "$work/agg.toml" <<TOML
[aggregator]
listen = "127.0.0.1:$port"
database = "$work/fuzz.db"
report_token = "rtok"
admin_token = "atok"
settle = "0s"
TOML
PREFLIGHT_LOG=error "$bin" aggregator -c "$work/agg.toml" &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 50); do
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/healthz')" 2>/dev/null && break
  sleep 0.1
done
# Seed one node and one waiver so reads have something to return.
python3 - "$port" <<'PY'
import json, sys, urllib.request
port = sys.argv[1]
def post(path, body, tok):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode(),
        headers={"content-type": "application/json", "authorization": f"Bearer {tok}"})
    return urllib.request.urlopen(req).status
state = {"node": "c1", "verdict": "no-go", "interfaces": [], "bonds": [], "addresses": [], "routes": [],
         "findings": [{"code": "BOND_PORT_DOWN", "severity": "critical", "subject": "bond0/eth1",
                       "message": "bond0 port eth1 is down", "since": "2026-11-25T00:00:00Z"}]}
assert post("/v1/reports", {"node": "c1", "boot_id": "b", "seq": 1, "kind": "full", "labels": {"role": "compute"}, "state": state}, "rtok") == 200
assert post("/v1/waivers", {"node": "c1", "reason": "seed", "author": "fuzz", "duration": "1h"}, "atok") == 201
PY
dump() {
  python3 - "$work/fuzz.db" <<'PY'
import sqlite3, sys
c = sqlite3.connect(sys.argv[1])
for t in ("nodes", "reports", "waivers", "audit"):
    for row in c.execute(f"SELECT * FROM {t} ORDER BY 1"):
        print(t, row)
PY
}
sleep 0.5   # let the report writer persist the seed
before=$(dump)
checks=not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance
# GET /v1/gate answers no-go with 503 by design (docs/api.md), and
# /v1/plan answers an empty batch with 503 the same way, so they run
# without the not-a-server-error check; every other operation runs with it.
gate_checks=status_code_conformance,content_type_conformance,response_schema_conformance
st() {
  "$venv/bin/schemathesis" run docs/openapi.json --url "http://127.0.0.1:$port" \
    --phases examples,coverage,fuzzing --max-examples 30 --workers 1 --no-color "$@"
}
echo "schemathesis pass 1: no credentials"
st --checks "$checks" --exclude-path-regex '^/v1/(gate|plan)$' --max-time 45
st --checks "$gate_checks" --include-path-regex '^/v1/(gate|plan)$' --max-time 15
after=$(dump)
if [ "$before" != "$after" ]; then
  echo "FAIL: requests without credentials changed the store" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "store unchanged by unauthenticated requests"
echo "schemathesis pass 2: with tokens"
st --checks "$checks" --exclude-path-regex '^/v1/(gate|plan)$' --max-time 60 -H "Authorization: Bearer atok"
st --checks "$gate_checks" --include-path-regex '^/v1/(gate|plan)$' --max-time 15 -H "Authorization: Bearer atok"
kill $pid
wait $pid 2>/dev/null || true
echo "schemathesis: ok"
