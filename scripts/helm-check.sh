#!/usr/bin/env bash
# Checks the Helm chart on a fresh machine: installs Helm (go install, pinned) and
# kubernetes-validate (PyPI, in a venv), then lints the chart, renders it and validates every
# object against the Kubernetes schemas. Fails on any problem.
# Usage: scripts/helm-check.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CHART="$ROOT/helm/kassa"
HELM_VERSION="v3.22.0"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/kassa"
VENV="$CACHE/venv-tools"
GOBIN_DIR="$CACHE/go-bin"

log() { printf '==> %s\n' "$*"; }

HELM="$GOBIN_DIR/helm"
if ! "$HELM" version --short 2>/dev/null | grep -q "$HELM_VERSION"; then
  log "installing helm $HELM_VERSION (go install)"
  mkdir -p "$GOBIN_DIR"
  GOBIN="$GOBIN_DIR" go install "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
fi
if [[ ! -x "$VENV/bin/kubernetes-validate" ]]; then
  log "installing kubernetes-validate (pip)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q kubernetes-validate
fi

SECRETS=(--set secrets.jwtSecret=chart-check --set secrets.webhookSecret=whsec_Y2hhcnQtY2hlY2s=)
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

log "helm lint"
"$HELM" lint --strict "$CHART" "${SECRETS[@]}"
"$HELM" lint --strict "$CHART" "${SECRETS[@]}" \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
  --set grafanaDashboard.enabled=true --set ingress.enabled=true --set autoscaling.enabled=true

log "render and validate against the Kubernetes schemas"
"$HELM" template kassa "$CHART" "${SECRETS[@]}" \
  --set ingress.enabled=true --set autoscaling.enabled=true --set grafanaDashboard.enabled=true \
  > "$OUT/core.yaml"
"$VENV/bin/kubernetes-validate" --strict "$OUT/core.yaml"

log "the Prometheus Operator objects render with the rules and dashboard from helm/kassa/files"
"$HELM" template kassa "$CHART" "${SECRETS[@]}" \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true > "$OUT/monitoring.yaml"
grep -q "kind: ServiceMonitor" "$OUT/monitoring.yaml"
grep -q "alert: KassaHigh5xxRate" "$OUT/monitoring.yaml"

log "rendering without secrets is refused"
if "$HELM" template kassa "$CHART" > /dev/null 2>&1; then
  echo "the chart rendered without secrets; it must refuse" >&2
  exit 1
fi

log "helm chart OK"
