#!/usr/bin/env bash
# CI smoke of the load generator (seconds, not a benchmark): starts the all-in-one `chat` on a
# free port with a fresh data directory, runs `chat-loadgen rate` for 3 s at a low rate, the
# same with read receipts (`--mark-read`), a closed loop with them (`chat-loadgen max`, 3 s),
# `chat-loadgen inbox-list` on the inbox of one of
# those users, `chat-loadgen group` (3 groups of 10), and `chat-loadgen idle` with 50
# connections, and fails if any reports a lost,
# duplicated or out-of-order message, a receipt not answered as the contract says, or any error.
# Binaries: $CHAT_BIN (default $CARGO_TARGET_DIR/release/chat) and $LOADGEN_BIN (default
# $CARGO_TARGET_DIR/release/chat-loadgen); build them first (`cargo build --release`).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$here/lib.sh"
target=${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}
chat=${CHAT_BIN:-$target/release/chat}
loadgen=${LOADGEN_BIN:-$target/release/chat-loadgen}

tmp=$(mktemp -d)
server=
cleanup() {
  if [[ -n $server ]]; then stop_pids "$server"; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

port=$(free_port)
env "${LOAD_LIMITS[@]}" RUST_LOG=warn "$chat" --host 127.0.0.1 --port "$port" --data-dir "$tmp/data" >"$tmp/chat.log" 2>&1 &
server=$!
if ! wait_http "http://127.0.0.1:$port/healthz" 30; then
  cat "$tmp/chat.log" >&2
  exit 1
fi
url=http://127.0.0.1:$port
status=0
echo "== loadgen smoke: rate"
"$loadgen" rate --url "$url" --users 20 --rate 200 --warmup 1s --duration 3s --drain 5s || status=1
echo "== loadgen smoke: rate with read receipts"
# User ids of its own, above every clock-derived base, so that the inbox below knows a user.
base=2000000000000
"$loadgen" rate --url "$url" --users 20 --rate 200 --warmup 1s --duration 3s --drain 5s --mark-read --user-base "$base" \
  || status=1
echo "== loadgen smoke: closed loop with read receipts"
# Bursts: each user's packets leave in one write per read (user.rs), the path a paced run
# seldom takes; a packet left unflushed would show as unanswered or lost here.
"$loadgen" max --url "$url" --users 20 --window 8 --warmup 1s --duration 3s --drain 5s --mark-read \
  --user-base "$((base + 1000))" || status=1
echo "== loadgen smoke: inbox-list"
"$loadgen" inbox-list --url "$url" --user "$base" --requests 20 --warmup-requests 2 --expect-conversations 1 || status=1
echo "== loadgen smoke: group fan-out"
"$loadgen" group --url "$url" --groups 3 --members 10 --rate 30 --warmup 1s --duration 3s --drain 5s || status=1
echo "== loadgen smoke: idle"
"$loadgen" idle --url "$url" --users 50 --server-pid "$server" --settle-max 5s || status=1
if ((status != 0)); then
  echo "== loadgen smoke FAILED; server log:" >&2
  cat "$tmp/chat.log" >&2
fi
exit "$status"
