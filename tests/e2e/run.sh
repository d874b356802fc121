#!/usr/bin/env bash
# Runs the end-to-end suite against the release binary.
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

set +e
node --test --test-concurrency=1 "$@" "${files[@]}"
code=$?
set -e
exit "$code"
