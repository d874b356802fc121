#!/usr/bin/env bash
# Runs the fault-injection group, tests/e2e/faults/*.test.mjs, against the release binary in
# E2E_MODE=cluster, twice: on one NATS server, then on a NATS cluster of three with the work
# queue and the presence bucket in three replicas (E2E_NATS_SERVERS=3; FAULTS_NATS_SERVERS="1"
# or "3" runs one of the two). Each file starts its own cluster (persister, presence, two
# gateways; see harness/settings.mjs), puts a steady message load on it and injects faults (the
# persister, a gateway, NATS, one NATS server of three or presence killed, Postgres
# unreachable, the announcing presence replica of two killed, a rolling restart of every role),
# or fuzzes every event and route. Needs Postgres at 127.0.0.1:5432, NATS
# (JetStream) at 127.0.0.1:4222 and the `nats-server` binary (faults.test.mjs runs NATS servers
# of its own, to restart them); without them the files are skipped with a warning, unless
# CI=true, where they fail.
# Prints each file's counts, the fault summary table (messages sent, acknowledged, stored,
# delivered, lost, duplicated, …; pass: none lost, none duplicated), and a last line
# `faults: N passed, N failed, N skipped`. Exits non-zero if a test failed.
# Binary: $CHAT_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/release/chat (build it first:
# `cargo build --release`). Extra arguments go to `node --test` (e.g. `--test-name-pattern NATS`);
# FUZZ_SEED=<n> replays a fuzz run; E2E_SHOW_LOG=1 prints the server output of passing files too.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

if [[ ! -f node_modules/.package-lock.json || package-lock.json -nt node_modules/.package-lock.json ]]; then
  npm ci --no-audit --no-fund
fi

shopt -s nullglob
files=(faults/*.test.mjs)
if [[ ${#files[@]} -eq 0 ]]; then
  echo "no faults/*.test.mjs files found in $(pwd)" >&2
  exit 1
fi

# The usual reporter on stdout (spec on a terminal, else TAP), plus TAP in a file for the counts.
if [[ -t 1 ]]; then reporter=spec; else reporter=tap; fi
tap_file=$(mktemp)
report_file=$(mktemp) # one JSON line per fault, appended by the tests (faults/runner.mjs)
trap 'rm -f "$tap_file" "$report_file"' EXIT
export FAULTS_REPORT="$report_file"
count() { awk -v k="$1" '$1 == "#" && $2 == k { n = $3 } END { print (n == "" ? "?" : n) }' "$tap_file"; }

# Every file on one NATS server, then every file on three.
runs=()
read -r -a nats_counts <<<"${FAULTS_NATS_SERVERS:-1 3}"
for n in "${nats_counts[@]}"; do
  case "$n" in
    1 | 3) ;;
    *) echo "FAULTS_NATS_SERVERS: $n NATS servers? (1, 3)" >&2; exit 2 ;;
  esac
  for file in "${files[@]}"; do runs+=("$n $file"); done
done

started_all=$SECONDS
failed=()
summary=()
total_pass=0 total_fail=0 total_skip=0
for run in "${runs[@]}"; do
  read -r n file <<<"$run"
  echo
  echo "=================================================================="
  echo "== faults: $file (E2E_MODE=cluster, $n NATS server(s))"
  echo "=================================================================="
  started=$SECONDS
  : >"$tap_file"
  set +e
  E2E_MODE=cluster E2E_NATS_SERVERS="$n" node --test --test-concurrency=1 \
    --test-reporter="$reporter" --test-reporter-destination=stdout \
    --test-reporter=tap --test-reporter-destination="$tap_file" \
    "$@" "$file"
  code=$?
  set -e
  pass=$(count pass) fail=$(count fail) cancelled=$(count cancelled) skipped=$(count skipped)
  if [[ $pass == "?" || $fail == "?" || $cancelled == "?" || $skipped == "?" ]]; then
    if [[ $code -eq 0 ]]; then code=1; fi # no summary: the runner did not finish
    total_fail=$((total_fail + 1))
    line="no test summary"
  else
    fail=$((fail + cancelled))
    total_pass=$((total_pass + pass)) total_fail=$((total_fail + fail)) total_skip=$((total_skip + skipped))
    line="$pass passed, $fail failed, $skipped skipped"
  fi
  summary+=("== faults: $file, $n NATS: $line (exit $code, $((SECONDS - started)) s)")
  echo "${summary[-1]}"
  if [[ $code -ne 0 ]]; then failed+=("$file ($n NATS)"); fi
done

echo
if [[ -s $report_file ]]; then
  echo "== fault summary (every file)"
  node --input-type=module -e "
    import { readFileSync } from 'node:fs';
    import { formatTable, LEGEND } from './faults/table.mjs';
    const rows = readFileSync(process.argv[1], 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l));
    console.log(formatTable(rows));
    console.log(LEGEND);
  " "$report_file"
  echo
fi
printf '%s\n' "${summary[@]}"
echo "== faults: $((SECONDS - started_all)) s in all"
if [[ ${#failed[@]} -gt 0 ]]; then
  echo "== faults: FAILED in: ${failed[*]}"
fi
echo "faults: $total_pass passed, $total_fail failed, $total_skip skipped"
if [[ ${#failed[@]} -gt 0 ]]; then exit 1; fi
