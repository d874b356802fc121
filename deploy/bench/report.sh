#!/usr/bin/env bash
# Writes the benchmark's RESULTS.md (on stdout) from the raw JSON of run.sh. Called by run.sh,
# which passes the settings in the environment; it can be re-run on an existing raw/ directory:
#   RAW=deploy/bench/raw REPO=. bash deploy/bench/report.sh > deploy/bench/RESULTS.md
set -euo pipefail
RAW=${RAW:?directory of the raw JSON}
REPO=${REPO:-.}

# get FILE JQ-EXPR: a value from raw/FILE.json, or "–" when absent.
get() {
  local v
  v=$(jq -r "($2) // empty" "$RAW/$1.json" 2>/dev/null || true)
  echo "${v:-–}"
}
# num FILE JQ-EXPR DIGITS: a number rounded to DIGITS decimals, or "–".
num() {
  local v
  v=$(jq -r "($2) // empty | . * pow(10; $3) | round / pow(10; $3)" "$RAW/$1.json" 2>/dev/null || true)
  echo "${v:-–}"
}
# ratio A B: A / B to two decimals, or "–" (also when either is not positive).
ratio() {
  if [[ $1 == – || $2 == – ]] || ! jq -en "$1 > 0 and $2 > 0" >/dev/null; then echo "–"; else jq -rn "$1 / $2 * 100 | round / 100"; fi
}
# problems LABEL: lost / duplicated / out of order / errors over every run of a configuration.
problems() {
  local files=("$RAW/$1"-*.json)
  jq -rs '[.[] | select(.mode == "rate" or .mode == "max" or .mode == "idle")] |
    "\(map(.lost // 0) | add) / \(map(.duplicated // 0) | add) / \(map(.out_of_order // 0) | add) / \(map((.errors // 0) + (.message_errors // 0) + (.unanswered // 0)) | add)"' \
    "${files[@]}" 2>/dev/null || echo "–"
}

labels=()
for f in "$RAW"/*-summary.json; do
  [[ -e $f ]] && labels+=("$(basename "$f" -summary.json)")
done

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
# The benchmark's own output (this directory's results) does not count as a change.
if [[ -n $(git -C "$REPO" status --porcelain -- . ':!deploy/bench/RESULTS.md' ':!deploy/bench/raw' 2>/dev/null) ]]; then
  commit+=" (with uncommitted changes)"
fi

if [[ ${QUICK:-0} == 1 ]]; then
  echo "# Benchmark results — QUICK RUN (seconds per step; not for comparison)"
  echo
  echo "This table comes from \`run.sh --quick\`: steps of ${DURATION:-?} on a machine busy with other work."
  echo "It shows that the benchmark runs, not how fast anything is. The real table comes from a full run."
else
  echo "# Benchmark results"
fi
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit"
echo "- machine: $(nproc) CPUs ($cpu_model), $mem_gib GiB memory, $(uname -sr)"
echo "- software: $(nats-server --version 2>/dev/null || echo nats-server), Postgres $(psql "${PG_URL:-postgres://postgres@127.0.0.1:5432}/postgres" -Atc 'show server_version' 2>/dev/null || echo '?'), Node.js $(node --version 2>/dev/null || echo '?')"
echo "- load: ${USERS:-?} users (pairs sharing a conversation, user i on gateway i mod M), warm-up ${WARMUP:-?}, measured ${DURATION:-?} per step; idle: ${IDLE:-?} connections (the peer: ${PEER_IDLE:-?})"
echo
echo "## The machine's raw limits (same run)"
echo
echo "| limit | value |"
echo "|---|---|"
echo "| JetStream acknowledged publishes (file storage, $(get box-jetstream .payload_bytes) B, $(get box-jetstream .in_flight) in flight) | $(num box-jetstream .publishes_per_s 0) /s |"
echo "| Postgres batched inserts (256-row statements, 2 clients, table shaped like \`messages\`) | $(num box-postgres .rows_per_s 0) rows/s |"
echo
echo "## Results"
echo
echo "| configuration | max sustained (delivered msg/s, p99 < ${P99_LIMIT:-100} ms) | its p99 delivery (ms) | closed loop, ${WINDOW:-8} unanswered per user (msg/s) | delivery p50 / p99 / p99.9 at ${MODERATE_RATE:-1000} msg/s (ms) | ack p50 / p99 / p99.9 at ${MODERATE_RATE:-1000} msg/s (ms) | CPU s per 1,000 msgs at ${MODERATE_RATE:-1000} msg/s / at max sustained | memory per idle connection (bytes) | lost / dup / out of order / errors |"
echo "|---|---|---|---|---|---|---|---|---|"
for l in "${labels[@]}"; do
  sustained=$(get "$l-summary" 'select(.sustained > 0) | .sustained')
  echo "| $l | $sustained | $(num "$l-sustained" .delivery_latency_ms.p99 1) | $(num "$l-max" .throughput_delivered_per_s 0) | $(num "$l-moderate" .delivery_latency_ms.p50 2) / $(num "$l-moderate" .delivery_latency_ms.p99 2) / $(num "$l-moderate" .delivery_latency_ms.p999 2) | $(num "$l-moderate" .ack_latency_ms.p50 2) / $(num "$l-moderate" .ack_latency_ms.p99 2) / $(num "$l-moderate" .ack_latency_ms.p999 2) | $(num "$l-moderate" .server_cpu_s_per_1000_msgs 3) / $(num "$l-sustained" .server_cpu_s_per_1000_msgs 3) | $(num "$l-idle" .bytes_per_connection 0)$(jq -r 'if .settled == false then " (not settled)" else "" end' "$RAW/$l-idle.json" 2>/dev/null || true) | $(problems "$l") |"
done

if [[ -e $RAW/peer-1x-summary.json ]]; then
  echo
  echo "## Ours against the peer (1 instance)"
  echo
  echo "Throughput: ours / peer (higher is better); latency, CPU and memory: ours / peer (lower is better)."
  echo
  echo "| configuration | max sustained | p99 delivery at ${MODERATE_RATE:-1000} msg/s | CPU per message at ${MODERATE_RATE:-1000} msg/s | CPU per message, each at its max sustained | memory per idle connection |"
  echo "|---|---|---|---|---|---|"
  peer_sustained=$(get peer-1x-summary 'select(.sustained > 0) | .sustained')
  peer_p99=$(get peer-1x-moderate .delivery_latency_ms.p99)
  peer_cpu=$(get peer-1x-moderate .server_cpu_s_per_1000_msgs)
  peer_cpu_sustained=$(get peer-1x-sustained .server_cpu_s_per_1000_msgs)
  peer_mem=$(get peer-1x-idle .bytes_per_connection)
  for l in "${labels[@]}"; do
    [[ $l == chat-* ]] || continue
    echo "| $l | $(ratio "$(get "$l-summary" 'select(.sustained > 0) | .sustained')" "$peer_sustained") | $(ratio "$(get "$l-moderate" .delivery_latency_ms.p99)" "$peer_p99") | $(ratio "$(get "$l-moderate" .server_cpu_s_per_1000_msgs)" "$peer_cpu") | $(ratio "$(get "$l-sustained" .server_cpu_s_per_1000_msgs)" "$peer_cpu_sustained") | $(ratio "$(get "$l-idle" .bytes_per_connection)" "$peer_mem") |"
  done
fi

cat <<EOF

## How the columns are measured

- **max sustained**: a closed-loop run (\`chat-loadgen max\`) finds the most the configuration
  delivers; open-loop runs (\`chat-loadgen rate\`) then start at 90 % of that and step down by
  15 % until one delivers at least 95 % of its target rate with p99 delivery under
  ${P99_LIMIT:-100} ms and nothing lost, duplicated or reordered; the column is that run's
  delivered messages per second ("–": no step passed). Every message is stored before it is
  acknowledged or delivered, so delivered messages are persisted ones.
- **latency**: from the scheduled send time (open loop, so a server that falls behind cannot
  hide its queue) to \`message-sent\` at the sender (ack) and \`receive-message\` at the
  partner (delivery), for messages sent in the measured window.
- **CPU**: user + system time of every server process during the measured window of the
  ${MODERATE_RATE:-1000} msg/s run (and of the max sustained run), divided by the messages
  acknowledged in it: for ours the
  gateways, persister, presence, our nats-server and the Postgres backends of the database;
  for the peer its node processes and their Postgres backends. Only processes alive at the
  start and the end of the window count: a database connection its pool closes or opens
  meanwhile (node-postgres closes idle ones after 10 s) is left out.
- **memory per idle connection**: resident memory of the gateways (the peer's node processes)
  after ${IDLE:-?} connections (the peer: ${PEER_IDLE:-?}, see run.sh) were opened and joined
  to a conversation and traffic settled,
  minus before, divided by the connections ("not settled": frames were still arriving when it
  was measured, e.g. a server announcing every connection to every socket).
- **lost / dup / out of order / errors**: summed over every run of the configuration; errors
  include \`message-error\`, \`error\` events, disconnections and sends never answered.

## Commands

\`\`\`
$(cat "$RAW/commands.txt" 2>/dev/null)
\`\`\`

Raw JSON of every step: [raw/](raw/).
EOF
