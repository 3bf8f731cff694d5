#!/usr/bin/env bash
# Checks the Helm chart on a fresh machine: installs Helm (go install, pinned) and
# kubernetes-validate (PyPI, in a venv), then lints the chart, renders it in each shape an
# operator may choose (ScyllaDB credentials and TLS, an existing Secret, the sandbox on one
# pod) and validates every object against the Kubernetes schemas, checks what the Ingress
# routes and how the migrate hook gets its Secret, and checks that values which cannot run
# (the sandbox on several pods, a password without its user, ...) make `helm template` fail.
# Fails on any problem.
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
# The values a user must set: the secrets and a gateway.
REQUIRED=("${SECRETS[@]}" --set config.gateway=http://gateway.payments:9090)
OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT

render() { "$HELM" template kassa "$CHART" "$@"; }
validate() { "$VENV/bin/kubernetes-validate" --strict "$1"; }
# absent PATTERN FILE: fails when FILE has a line matching PATTERN (`! grep` would not:
# set -e ignores a negated command).
absent() {
  if grep -q -- "$1" "$2"; then
    echo "$2 must not have '$1':" >&2
    grep -n -- "$1" "$2" >&2
    exit 1
  fi
}
# refuses MESSAGE_PART ARGS...: `helm template` must fail, saying MESSAGE_PART.
refuses() {
  local says="$1"
  shift
  if render "$@" >"$OUT/refused.yaml" 2>"$OUT/refused.err"; then
    echo "the chart rendered with $*; it must refuse ($says)" >&2
    exit 1
  fi
  grep -q -- "$says" "$OUT/refused.err" || {
    echo "the chart refused $* without saying '$says':" >&2
    cat "$OUT/refused.err" >&2
    exit 1
  }
}

log "helm lint"
"$HELM" lint --strict "$CHART" "${REQUIRED[@]}"
"$HELM" lint --strict "$CHART" "${REQUIRED[@]}" \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
  --set grafanaDashboard.enabled=true --set ingress.enabled=true --set autoscaling.enabled=true

log "render and validate against the Kubernetes schemas"
render "${REQUIRED[@]}" \
  --set ingress.enabled=true --set autoscaling.enabled=true --set grafanaDashboard.enabled=true \
  > "$OUT/core.yaml"
validate "$OUT/core.yaml"

log "the Ingress routes the shopper, storefront and webhook paths only, never /metrics"
paths="$(grep -E '^ *- path: ' "$OUT/core.yaml" | awk '{print $3}' | sort | tr '\n' ' ')"
[[ "$paths" == "/api /assets /checkout /orders /webhook " ]] || {
  echo "unexpected Ingress paths: $paths" >&2
  exit 1
}

log "the migrate hook's Secret is a hook created before the Job; the pods use the release's"
python3 - "$OUT/core.yaml" <<'PY'
import re, sys
docs = open(sys.argv[1]).read().split("\n---\n")
def find(kind, name):
    for d in docs:
        if re.search(rf"^kind: {kind}$", d, re.M) and re.search(rf"^  name: {name}$", d, re.M):
            return d
    sys.exit(f"no {kind} {name}")
weight = lambda d: int(re.search(r'"helm.sh/hook-weight": "(-?\d+)"', d).group(1))
hook_secret, job = find("Secret", "kassa-migrate"), find("Job", "kassa-migrate-1")
release_secret, deploy = find("Secret", "kassa"), find("Deployment", "kassa")
assert '"helm.sh/hook": pre-install,pre-upgrade' in hook_secret, "hook secret is no hook"
assert weight(hook_secret) < weight(job), "the hook secret must come before the Job"
assert "helm.sh/hook" not in release_secret, "the release's Secret must stay ordinary"
assert "name: kassa-migrate\n" in job and "name: kassa\n" not in job.split("env:")[1]
assert "name: kassa-migrate\n" not in deploy.split("env:")[1]
PY

log "ScyllaDB credentials and TLS, SMTP credentials: rendered and validated"
render "${REQUIRED[@]}" --set scylla.username=kassa --set secrets.scyllaPassword=pw \
  --set scylla.tls.enabled=true --set scylla.tls.caSecret=scylla-ca \
  --set scylla.tls.serverName=scylla-client.scylla.svc --set scylla.replication=3 \
  --set config.smtpUser=mailer --set secrets.smtpPassword=mail-pw > "$OUT/scylla.yaml"
validate "$OUT/scylla.yaml"
for want in "name: KASSA_SCYLLA_USERNAME" "key: KASSA_SCYLLA_PASSWORD" \
  "value: \"/etc/kassa/scylla-ca/ca.crt\"" "secretName: scylla-ca" \
  "value: \"scylla-client.scylla.svc\"" "name: KASSA_SMTP_USER" "KASSA_SCYLLA_PASSWORD: \"pw\""; do
  grep -q -- "$want" "$OUT/scylla.yaml" || { echo "missing: $want" >&2; exit 1; }
done
# The CA is mounted in the server and in the migrate Job.
[[ "$(grep -c 'mountPath: /etc/kassa/scylla-ca' "$OUT/scylla.yaml")" == 2 ]]

log "an existing Secret: no Secret rendered, both the pods and the migrate Job read it"
render --set secrets.existingSecret=shop-secrets --set config.gateway=stripe \
  --set scylla.username=kassa > "$OUT/existing.yaml"
validate "$OUT/existing.yaml"
absent '^kind: Secret' "$OUT/existing.yaml"
[[ "$(grep -c 'name: shop-secrets' "$OUT/existing.yaml")" -ge 12 ]]

log "the sandbox on one pod: Recreate, no PodDisruptionBudget, its payment page routed"
render "${SECRETS[@]}" --set config.gateway=sandbox --set replicaCount=1 \
  --set ingress.enabled=true > "$OUT/sandbox.yaml"
validate "$OUT/sandbox.yaml"
grep -q 'type: Recreate' "$OUT/sandbox.yaml"
absent '^kind: PodDisruptionBudget' "$OUT/sandbox.yaml"
grep -q -- '- path: /sandbox/pay$' "$OUT/sandbox.yaml"
absent '- path: /metrics' "$OUT/sandbox.yaml"

log "the Prometheus Operator objects render with the rules and dashboard from helm/kassa/files"
render "${REQUIRED[@]}" \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true > "$OUT/monitoring.yaml"
grep -q "kind: ServiceMonitor" "$OUT/monitoring.yaml"
grep -q "alert: KassaHigh5xxRate" "$OUT/monitoring.yaml"

log "values that cannot run are refused"
refuses "set secrets.jwtSecret" --set config.gateway=stripe
refuses "set config.gateway" "${SECRETS[@]}"
refuses "replicaCount=1" "${SECRETS[@]}" --set config.gateway=sandbox
refuses "replicaCount=1" "${SECRETS[@]}" --set config.gateway=sandbox --set replicaCount=1 \
  --set autoscaling.enabled=true
refuses "smtpUser" "${REQUIRED[@]}" --set secrets.smtpPassword=pw
refuses "smtpUser" "${REQUIRED[@]}" --set config.smtpUser=mailer
refuses "scylla.username" "${REQUIRED[@]}" --set secrets.scyllaPassword=pw
refuses "scylla.username" "${REQUIRED[@]}" --set scylla.username=kassa
refuses "caSecret" "${REQUIRED[@]}" --set scylla.tls.enabled=true
refuses "stripeApiKey" "${SECRETS[@]}" --set config.gateway=stripe
refuses "credentials" "${REQUIRED[@]}" --set config.store=scylla://u:p@scylla:9042/kassa

log "helm chart OK"
