#!/usr/bin/env bash
# Runs the browser tests (tests/browser/*.test.mjs) in headless Chromium against the release
# binary: the test client page driven by two users, and the REST API docs. Installs what they
# need when it is missing: Debian's `chromium` (apt-get, as root or through sudo), and the npm
# packages of these tests and of the end-to-end harness they start the server with.
# Runs once per mode, E2E_MODE=single then E2E_MODE=cluster (two gateways over NATS and
# Postgres; skipped with a warning when those are not reachable, unless CI=true); pick with
# BROWSER_MODES="single". Screenshots go to $BROWSER_ARTIFACTS (default tests/browser/artifacts).
# Binary: $CHAT_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/release/chat. Chromium:
# $CHROMIUM_BIN, else /usr/bin/chromium. Extra arguments go to `node --test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [[ ! -x $CHROMIUM_BIN ]]; then
  echo "== installing Debian's chromium"
  sudo=()
  if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); fi
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
fi

for dir in . ../e2e; do
  if [[ ! -f $dir/node_modules/.package-lock.json || $dir/package-lock.json -nt $dir/node_modules/.package-lock.json ]]; then
    (cd "$dir" && npm ci --no-audit --no-fund)
  fi
done

if [[ -t 1 ]]; then reporter=spec; else reporter=tap; fi
tap_file=$(mktemp)
trap 'rm -f "$tap_file"' EXIT
count() { awk -v k="$1" '$1 == "#" && $2 == k { n = $3 } END { print (n == "" ? 0 : n) }' "$tap_file"; }

status=0 pass=0 fail=0 skipped=0
for mode in ${BROWSER_MODES:-single cluster}; do
  echo "== browser tests: E2E_MODE=$mode"
  : >"$tap_file"
  E2E_MODE="$mode" node --test --test-concurrency=1 \
    --test-reporter="$reporter" --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap_file" \
    "$@" ./*.test.mjs || status=1
  if [[ $(count pass) -eq 0 && $(count fail) -eq 0 && $(count skipped) -eq 0 ]]; then status=1; fi
  pass=$((pass + $(count pass))) fail=$((fail + $(count fail) + $(count cancelled))) skipped=$((skipped + $(count skipped)))
done
echo "browser: $pass passed, $fail failed, $skipped skipped"
exit "$status"
