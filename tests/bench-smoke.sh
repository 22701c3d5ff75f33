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
# `all --quick` runs every comparison (netns latency, watch RSS, VM cable
# pull vs Prometheus at 1 s and 15 s, footprint, idle CPU, aggregator load,
# OVS member down on a real ovs-vswitchd)
# at toy sizes and prints the summary table; vm-latency is issue 4's bench.
"$bench" all --bin "$bin" --quick
"$bench" vm-latency --bin "$bin" --pulls 2 --boots 1
echo "bench smoke: ok"
