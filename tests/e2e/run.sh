#!/usr/bin/env bash
# Runs the end-to-end suite against the release binary, three times: first E2E_MODE=single
# (one all-in-one process), then E2E_MODE=cluster (persister, presence and two gateways over
# NATS JetStream at 127.0.0.1:4222 and Postgres at 127.0.0.1:5432; see harness/settings.mjs), then
# "cluster3": the cluster again, on a NATS cluster of three nats-server processes that each test
# file starts for itself, with the work queue and the presence bucket in three replicas
# (E2E_NATS_SERVERS=3). Without NATS (nats-server, for cluster3) or Postgres the cluster passes
# are skipped with a warning, unless CI=true, where they fail.
# Exits non-zero if a pass fails. E2E_MODES="single" (or "cluster", "cluster3", or several)
# runs only those passes.
# Binary: $CHAT_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/release/chat (build it first:
# `cargo build --release`). Extra arguments are passed to `node --test`
# (e.g. `--test-name-pattern typing`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

shopt -s nullglob
files=(*.test.mjs)
if [[ ${#files[@]} -eq 0 ]]; then
  echo "no *.test.mjs files found in $(pwd)" >&2
  exit 1
fi

read -r -a modes <<<"${E2E_MODES:-single cluster cluster3}"
# The usual reporter on stdout (spec on a terminal, else TAP), plus TAP in a file for the counts.
if [[ -t 1 ]]; then reporter=spec; else reporter=tap; fi
tap_file=$(mktemp)
trap 'rm -f "$tap_file"' EXIT
count() { awk -v k="$1" '$1 == "#" && $2 == k { n = $3 } END { print (n == "" ? "?" : n) }' "$tap_file"; }

failed=()
summary=()
total_pass=0 total_fail=0 total_skip=0
for mode in "${modes[@]}"; do
  case "$mode" in
    single | cluster) e2e_mode=$mode nats_servers=1 label="E2E_MODE=$mode" ;;
    cluster3) e2e_mode=cluster nats_servers=3 label="E2E_MODE=cluster, 3 NATS servers" ;;
    *) echo "E2E_MODES: unknown mode \"$mode\" (single, cluster, cluster3)" >&2; exit 2 ;;
  esac
  echo
  echo "=================================================================="
  echo "== e2e: $label"
  echo "=================================================================="
  started=$SECONDS
  : >"$tap_file"
  set +e
  E2E_MODE="$e2e_mode" E2E_NATS_SERVERS="$nats_servers" node --test --test-concurrency=1 \
    --test-reporter="$reporter" --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap_file" \
    "$@" "${files[@]}"
  code=$?
  set -e
  pass=$(count pass) fail=$(count fail) cancelled=$(count cancelled) skipped=$(count skipped)
  if [[ $pass == "?" || $fail == "?" || $cancelled == "?" || $skipped == "?" ]]; then
    if [[ $code -eq 0 ]]; then code=1; fi # no summary: the runner did not finish
    line="no test summary"
  else
    fail=$((fail + cancelled))
    total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail)) total_skip=$((total_skip + skipped))
    line="$pass passed, $fail failed, $skipped skipped"
  fi
  summary+=("== e2e: $label: $line (exit $code, $((SECONDS - started)) s)")
  echo "${summary[-1]}"
  if [[ $code -ne 0 ]]; then failed+=("$mode"); fi
done

echo
printf '%s\n' "${summary[@]}"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "== e2e: FAILED in mode(s): ${failed[*]}"
fi
echo "e2e: $total_pass passed, $total_fail failed, $total_skip skipped"
if [[ ${#failed[@]} -gt 0 ]]; then exit 1; fi
