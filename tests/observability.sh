#!/usr/bin/env bash
# Prometheus and page checks with the real tools:
#   promtool check/test rules; dashboard queries use only documented metrics;
#   promtool check metrics on real scrapes of an agent and an aggregator;
#   the on-call page in headless chromium (playwright-core), with screenshots
#   in target/page/.
# Installs Debian's prometheus (promtool) and chromium, and playwright-core
# from npm (cached), when missing. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/preflight}
cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}"
need=()
command -v promtool >/dev/null || need+=(prometheus)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v node >/dev/null || need+=(nodejs npm)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if [ ! -d "$cache/node/node_modules/playwright-core" ]; then
  mkdir -p "$cache/node"
  (cd "$cache/node" && npm install --silent --no-audit --no-fund playwright-core@1.65.1)
fi

echo "--- promtool: rules"
(cd deploy/prometheus && promtool check rules preflight-rules.yml && promtool test rules preflight-rules.test.yml)

echo "--- dashboard and rules use only documented metrics"
python3 - <<'PY'
import json, re
doc = open("docs/metrics.md").read()
documented = set(re.findall(r"^\| `(preflight_[a-z_]+)`", doc, re.M)) | {"up"}
def exprs(o):
    if isinstance(o, dict):
        for k, v in o.items():
            if k in ("expr", "query") and isinstance(v, str):
                yield v
            else:
                yield from exprs(v)
    elif isinstance(o, list):
        for v in o:
            yield from exprs(v)
used = set()
for e in exprs(json.load(open("deploy/grafana/preflight.json"))):
    used |= set(re.findall(r"\b(preflight_[a-z_]+)", e))
rules = open("deploy/prometheus/preflight-rules.yml").read()
used |= set(re.findall(r"expr:.*?\b(preflight_[a-z_]+)", rules))
used |= set(n for line in rules.splitlines() if "expr:" in line for n in re.findall(r"\b(preflight_[a-z_]+)", line))
missing = sorted(used - documented)
assert used, "no metric found in the dashboard"
assert not missing, f"dashboard/rules use undocumented metrics: {missing}"
print(f"{len(used)} metrics used, all documented")
PY

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d)
p1=$(free_port); p2=$(free_port)
PREFLIGHT_LOG=error "$bin" up --listen "127.0.0.1:$p1" --agent-listen "127.0.0.1:$p2" --database "$work/up.db" > "$work/up.log" &
up_pid=$!
trap 'kill $up_pid $agg_pid 2>/dev/null || true; rm -rf "$work"' EXIT
agg_pid=
for _ in $(seq 100); do
  curl -sf "http://127.0.0.1:$p2/healthz" >/dev/null 2>&1 && curl -sf "http://127.0.0.1:$p1/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
echo "--- promtool check metrics: agent scrape"
curl -sf "http://127.0.0.1:$p2/metrics" > "$work/agent.prom"
promtool check metrics < "$work/agent.prom"
grep -q '^preflight_node_go ' "$work/agent.prom"
echo "--- promtool check metrics: aggregator scrape"
sleep 1
curl -sf "http://127.0.0.1:$p1/metrics" > "$work/agg.prom"
promtool check metrics < "$work/agg.prom"
grep -q '^preflight_aggregator_reports_received_total{kind="full"} [1-9]' "$work/agg.prom"
kill $up_pid; wait $up_pid 2>/dev/null || true

echo "--- on-call page: text escaping (node, no browser)"
node --test tests/page/escape.test.mjs

echo "--- on-call page in headless chromium"
p3=$(free_port)
cat > "$work/agg.toml" <<TOML
[aggregator]
listen = "127.0.0.1:$p3"
database = "$work/page.db"
auth = "none"
settle = "0s"
TOML
PREFLIGHT_LOG=error "$bin" aggregator -c "$work/agg.toml" &
agg_pid=$!
for _ in $(seq 100); do curl -sf "http://127.0.0.1:$p3/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
mkdir -p target/page
# Run from the cache so that playwright-core resolves from its node_modules.
cp tests/page/page.test.mjs "$cache/node/page.test.mjs"
node "$cache/node/page.test.mjs" "http://127.0.0.1:$p3" "$(pwd)/target/page"
echo "observability: ok"
