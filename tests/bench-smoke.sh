#!/usr/bin/env bash
# A short pass of every benchmark so they never rot. Prints figures; asserts
# nothing about time (the figures in docs/benchmarks.md come from full runs
# of release builds).
set -euo pipefail
cd "$(dirname "$0")/.."
bench=${1:-target/debug/preflight-bench}
bin=${2:-target/debug/preflight}
need=()
command -v prometheus-node-exporter >/dev/null || need+=(prometheus-node-exporter)
command -v prometheus >/dev/null || need+=(prometheus)
if [ "${#need[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# The Debian package starts a node_exporter service where systemd runs; the
# bench starts its own inside a namespace.
"$bench" netns-latency --toggles 20 --reps 1
"$bench" watch-rss --bin "$bin" --reps 1 --seconds 1
"$bench" footprint --bin "$bin" --reps 1 --idle 2 --storm 2 --scrapes 20
"$bench" idle-cpu --bin "$bin" --instances 2 --seconds 2
"$bench" aggregator-load --bin "$bin" --nodes 500 --seconds 3 --reps 1
"$bench" vm-latency --bin "$bin" --pulls 2 --boots 1
"$bench" vm-compare --bin "$bin" --intervals 1 --pulls 2 --boots 1 --bonds 2
echo "bench smoke: ok"
