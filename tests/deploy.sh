#!/usr/bin/env bash
# Deployment files: Kubernetes manifests against the Kubernetes API schemas
# (kubernetes-validate, strict), yamllint on every YAML file we ship.
# The Prometheus Operator CRs (deploy/kubernetes/monitoring) and the
# cert-manager ones (deploy/kubernetes/tls) have no bundled schema; they are
# linted only. tests/tests/shipped_configs.rs runs the ConfigMap's files.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${PREFLIGHT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/preflight}"
venv="$cache/venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
[ -x "$venv/bin/kubernetes-validate" ] || "$venv/bin/pip" install -q 'kubernetes-validate==1.*' 'yamllint==1.*'
echo "--- kubernetes-validate"
"$venv/bin/kubernetes-validate" --strict --kubernetes-version 1.30.0 deploy/kubernetes/*.yaml
"$venv/bin/kubernetes-validate" --strict deploy/kubernetes/*.yaml
echo "--- yamllint"
"$venv/bin/yamllint" deploy .yamllint
echo "deploy files: ok"
