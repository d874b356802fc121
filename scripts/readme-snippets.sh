#!/usr/bin/env bash
# Runs README.md's code blocks as a newcomer would type them, in a copy of the checkout
# without the files git ignores (in CI: what a fresh clone holds), and fails when one fails or
# prints other than what the README shows; a block it cannot run must say why in the README
# (`<!-- snippet: skip (why) -->`). The checks and the rules are in readme_snippets.py, next
# to this file.
# Uses port 3000 (and 3001, 3100-3102 for the cluster block), which must be free; the cluster
# block runs on a nats-server of its own and a fresh database on the Postgres at
# 127.0.0.1:5432 (user postgres, no password), skipped loudly without them unless CI=true.
# Needs: python3, node (the npm packages of tests/e2e are installed when missing: the Node.js
# snippet's socket.io-client comes from there), curl, cargo. Takes well under two minutes when
# the release build is warm (scripts/test.sh builds it first).
set -euo pipefail
cd "$(dirname "$0")/.."
# The README tells a newcomer to export this to share the test command's build; so does CI.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}"

e2e=tests/e2e
if [[ ! -f $e2e/node_modules/.package-lock.json || $e2e/package-lock.json -nt $e2e/node_modules/.package-lock.json ]]; then
  (cd "$e2e" && npm ci --no-audit --no-fund)
fi
# What `npm i socket.io-client` gives the README's Node.js shells, without a registry call.
export NODE_PATH="$PWD/$e2e/node_modules${NODE_PATH:+:$NODE_PATH}"

exec python3 scripts/readme_snippets.py "$@"
