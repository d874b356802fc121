#!/usr/bin/env bash
# Writes the benchmark's RESULTS.md (on stdout) from the raw JSON of run.sh. Called by run.sh,
# which passes the settings in the environment and writes them to raw/settings.json; it can be
# re-run on an existing raw/ directory:
#   RAW=deploy/bench/raw REPO=. bash deploy/bench/report.sh > deploy/bench/RESULTS.md
set -euo pipefail
RAW=${RAW:?directory of the raw JSON}
REPO=${REPO:-.}

# setting NAME DEFAULT: $NAME from the environment, else from raw/settings.json, else DEFAULT.
setting() {
  local v=${!1:-}
  if [[ -z $v && -s $RAW/settings.json ]]; then v=$(jq -r --arg k "$1" '.[$k] // empty | tostring' "$RAW/settings.json"); fi
  printf -v "$1" '%s' "${v:-$2}"
}
for kv in QUICK=0 USERS=? WINDOW=8 WARMUP=? DURATION=? IDLE=? PEER_IDLE=? MODERATE_RATE=1000 P99_LIMIT=100 \
  MIN_DELIVERED=0.95 START_SHARE=0.9 STEP_DOWN=0.85 SEARCH_STEPS=6 BISECT_STEPS=2 BISECT_MIN=0.03 POISSON_SEED=1 \
  AUTOVACUUM=unknown; do
  setting "${kv%%=*}" "${kv#*=}"
done

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
# ratio0 A B: like ratio, but A may be 0 (a search where no step passed: 0).
ratio0() {
  if [[ $1 == – || $2 == – ]] || ! jq -en "$1 >= 0 and $2 > 0" >/dev/null; then echo "–"; else jq -rn "$1 / $2 * 100 | round / 100"; fi
}
# check VALUE OP LIMIT: "met" or "not met" (OP: >= or <=), "–" when VALUE is.
check() {
  if [[ $1 == – ]]; then echo "–"; elif jq -en "$1 $2 $3" >/dev/null; then echo "met"; else echo "not met"; fi
}
# sustained LABEL ARRIVAL: delivered msg/s of the open-loop search's passing step, 0 when no
# step passed, "–" when the search was not made. Raw directories of runs before the Poisson
# search have the even one as `sustained`.
sustained() {
  if [[ $2 == even ]]; then get "$1-summary" '.sustained_even // .sustained'; else get "$1-summary" ".sustained_$2"; fi
}
# chosen LABEL ARRIVAL: the raw report (name without .json) of the search's passing step.
chosen() {
  if [[ $2 == even && ! -e $RAW/$1-sustained-even.json && -e $RAW/$1-sustained.json ]]; then echo "$1-sustained"; else echo "$1-sustained-$2"; fi
}
# blank: "–" for 0 (no step passed), in the tables of values.
blank() { if [[ $1 == 0 ]]; then echo "–"; else echo "$1"; fi; }
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
if [[ $AUTOVACUUM != unknown ]]; then
  echo "- Postgres autovacuum: $AUTOVACUUM$([[ $AUTOVACUUM != on ]] && echo ' on this machine, so the script runs `VACUUM ANALYZE` on the configuration'"'"'s database before every traffic step, as autovacuum would keep it (the persister updates the members'"'"' inbox rows with every message)')"
fi
echo "- load: ${USERS:-?} users (pairs sharing a conversation, user i on gateway i mod M), warm-up ${WARMUP:-?}, measured ${DURATION:-?} per step; idle: ${IDLE:-?} connections (the peer: ${PEER_IDLE:-?})"
echo
echo "## The machine's raw limits (same run)"
echo
echo "| limit | value |"
echo "|---|---|"
echo "| JetStream acknowledged publishes (file storage, $(get box-jetstream .payload_bytes) B, $(get box-jetstream .in_flight) in flight) | $(num box-jetstream .publishes_per_s 0) /s |"
echo "| Postgres batched inserts (256-row statements, 2 clients, table shaped like \`messages\`) | $(num box-postgres .rows_per_s 0) rows/s |"
echo
# The configurations, as run.sh describes them (raw directories of older runs: none).
setups=
for l in "${labels[@]}"; do
  s=$(get "$l-summary" .setup)
  if [[ $s != – ]]; then setups+="- **$l**: $s"$'\n'; fi
done
if [[ -n $setups ]]; then
  echo "## Configurations"
  echo
  printf '%s' "$setups"
  echo
fi

p99=${P99_LIMIT:-100}
rate=${MODERATE_RATE:-1000}
echo "## Results"
echo
echo "Sustained: delivered msg/s of the highest open-loop rate with p99 delivery < $p99 ms, evenly paced and with Poisson arrivals (\"–\": no step passed)."
echo
echo "| configuration | sustained, even (msg/s) | its p99 delivery (ms) | sustained, Poisson (msg/s) | its p99 delivery (ms) | closed loop, ${WINDOW:-8} unanswered per user (msg/s) | delivery p50 / p99 / p99.9 at $rate msg/s (ms) | ack p50 / p99 / p99.9 at $rate msg/s (ms) | CPU s per 1,000 msgs at $rate msg/s / at sustained (even) | memory per idle connection (bytes) | lost / dup / out of order / errors |"
echo "|---|---|---|---|---|---|---|---|---|---|---|"
for l in "${labels[@]}"; do
  even=$(chosen "$l" even) poisson=$(chosen "$l" poisson)
  echo "| $l | $(blank "$(sustained "$l" even)") | $(num "$even" .delivery_latency_ms.p99 1) | $(blank "$(sustained "$l" poisson)") | $(num "$poisson" .delivery_latency_ms.p99 1) | $(num "$l-max" .throughput_delivered_per_s 0) | $(num "$l-moderate" .delivery_latency_ms.p50 2) / $(num "$l-moderate" .delivery_latency_ms.p99 2) / $(num "$l-moderate" .delivery_latency_ms.p999 2) | $(num "$l-moderate" .ack_latency_ms.p50 2) / $(num "$l-moderate" .ack_latency_ms.p99 2) / $(num "$l-moderate" .ack_latency_ms.p999 2) | $(num "$l-moderate" .server_cpu_s_per_1000_msgs 3) / $(num "$even" .server_cpu_s_per_1000_msgs 3) | $(num "$l-idle" .bytes_per_connection 0)$(jq -r 'if .settled == false then " (not settled)" else "" end' "$RAW/$l-idle.json" 2>/dev/null || true) | $(problems "$l") |"
done

# The steps of the open-loop searches, when the summaries have them.
if jq -es 'map(.steps.even // empty) | length > 0' "$RAW"/*-summary.json >/dev/null 2>&1; then
  echo
  echo "## The open-loop searches"
  echo
  echo "Each step: its target rate (msg/s), then its p99 delivery (ms) and ✓ when it passed, ✗ when it did not; in the order run."
  echo
  echo "| configuration | arrivals | steps | sustained target (msg/s) | lowest failed target above it (msg/s) |"
  echo "|---|---|---|---|---|"
  for l in "${labels[@]}"; do
    for arrival in even poisson; do
      steps=$(jq -r --arg a "$arrival" '.steps[$a] // [] | map("\(.rate) (\(if .p99_ms == null then "no report" else (.p99_ms | round | tostring) + " ms" end)) \(if .pass then "✓" else "✗" end)") | join(", ")' "$RAW/$l-summary.json" 2>/dev/null || true)
      [[ -n $steps ]] || continue
      if [[ $arrival == even ]]; then shown=even; else shown=Poisson; fi
      echo "| $l | $shown | $steps | $(blank "$(get "$l-summary" ".sustained_${arrival}_rate")") | $(get "$l-summary" ".sustained_${arrival}_failed_rate") |"
    done
  done
fi

echo
echo "## Open loop against closed loop"
echo
echo "Sustained open-loop rate / closed-loop maximum, each configuration against itself (0: no step passed). Target ≥ 0.8 (see Targets)."
echo
echo "| configuration | closed loop (msg/s) | sustained, even / closed loop | sustained, Poisson / closed loop |"
echo "|---|---|---|---|"
for l in "${labels[@]}"; do
  closed=$(get "$l-max" .throughput_delivered_per_s)
  echo "| $l | $(num "$l-max" .throughput_delivered_per_s 0) | $(ratio0 "$(sustained "$l" even)" "$closed") | $(ratio0 "$(sustained "$l" poisson)" "$closed") |"
done

# Targets: name, what, comparison, limit; "aio": only for the all-in-one configuration.
targets=(
  "open-loop sustained, even / closed loop|oc-even|>=|0.8|all"
  "open-loop sustained, Poisson / closed loop|oc-poisson|>=|0.8|all"
  "open-loop sustained, even: ours / peer|vs-even|>=|3|all"
  "open-loop sustained, Poisson: ours / peer|vs-poisson|>=|3|all"
  "p99 delivery at $rate msg/s: ours / peer|vs-p99|<=|1|all"
  "CPU per message at $rate msg/s: ours / peer|vs-cpu|<=|1.5|all"
  "closed loop: ours / peer (all-in-one)|vs-closed|>=|10|aio"
)
ours=()
for l in "${labels[@]}"; do [[ $l == chat-* ]] && ours+=("$l"); done
have_peer=
if [[ -e $RAW/peer-1x-summary.json ]]; then
  have_peer=1
  peer_even=$(sustained peer-1x even)
  peer_poisson=$(sustained peer-1x poisson)
  peer_closed=$(get peer-1x-max .throughput_delivered_per_s)
  peer_p99=$(get peer-1x-moderate .delivery_latency_ms.p99)
  peer_cpu=$(get peer-1x-moderate .server_cpu_s_per_1000_msgs)
  peer_cpu_sustained=$(get "$(chosen peer-1x even)" .server_cpu_s_per_1000_msgs)
  peer_mem=$(get peer-1x-idle .bytes_per_connection)

  echo
  echo "## Ours against the peer (1 instance)"
  echo
  echo "Throughput: ours / peer (higher is better); latency, CPU and memory: ours / peer (lower is better). 0: no step of ours passed."
  echo
  echo "| configuration | sustained, even | sustained, Poisson | closed loop | p99 delivery at $rate msg/s | CPU per message at $rate msg/s | CPU per message, each at its sustained (even) | memory per idle connection |"
  echo "|---|---|---|---|---|---|---|---|"
  for l in "${ours[@]}"; do
    echo "| $l | $(ratio0 "$(sustained "$l" even)" "$peer_even") | $(ratio0 "$(sustained "$l" poisson)" "$peer_poisson") | $(ratio "$(get "$l-max" .throughput_delivered_per_s)" "$peer_closed") | $(ratio "$(get "$l-moderate" .delivery_latency_ms.p99)" "$peer_p99") | $(ratio "$(get "$l-moderate" .server_cpu_s_per_1000_msgs)" "$peer_cpu") | $(ratio "$(get "$(chosen "$l" even)" .server_cpu_s_per_1000_msgs)" "$peer_cpu_sustained") | $(ratio "$(get "$l-idle" .bytes_per_connection)" "$peer_mem") |"
  done
fi

# value KEY LABEL: the ratio a target compares, "–" when it cannot be computed.
value() {
  local closed
  case $1 in
    oc-*) closed=$(get "$2-max" .throughput_delivered_per_s); ratio0 "$(sustained "$2" "${1#oc-}")" "$closed" ;;
    vs-*) if [[ -z $have_peer ]]; then echo "–"; return; fi ;;&
    vs-even) ratio0 "$(sustained "$2" even)" "$peer_even" ;;
    vs-poisson) ratio0 "$(sustained "$2" poisson)" "$peer_poisson" ;;
    vs-p99) ratio "$(get "$2-moderate" .delivery_latency_ms.p99)" "$peer_p99" ;;
    vs-cpu) ratio "$(get "$2-moderate" .server_cpu_s_per_1000_msgs)" "$peer_cpu" ;;
    vs-closed) ratio "$(get "$2-max" .throughput_delivered_per_s)" "$peer_closed" ;;
  esac
}

if ((${#ours[@]})); then
  echo
  echo "## Targets"
  echo
  echo "Computed from the tables above (peer: its single instance); \"–\": not measured, \"n/a\": the target is for another configuration."
  echo
  header="| target | required |" rule="|---|---|"
  for l in "${ours[@]}"; do header+=" $l |" rule+="---|"; done
  echo "$header"
  echo "$rule"
  met=0 total=0
  for t in "${targets[@]}"; do
    IFS='|' read -r name key op limit scope <<<"$t"
    if [[ $op == ">=" ]]; then sym=≥; else sym=≤; fi
    row="| $name | $sym $limit |"
    for l in "${ours[@]}"; do
      if [[ $scope == aio && $l != chat-aio ]]; then row+=" n/a |"; continue; fi
      v=$(value "$key" "$l")
      c=$(check "$v" "$op" "$limit")
      if [[ $c != – ]]; then total=$((total + 1)); fi
      case $c in
        met) met=$((met + 1)) row+=" **$v: met** |" ;;
        –) row+=" – |" ;;
        *) row+=" $v: $c |" ;;
      esac
    done
    echo "$row"
  done
  echo
  echo "Met: $met of the $total measured."
fi

if [[ -e $REPO/deploy/bench/SCALE.md ]]; then
  echo
  echo "## Scale-out: see SCALE.md"
  echo
  echo "Whether capacity follows the replicas (gateways, persisters), each confined to the same CPU"
  echo "share, is measured by \`deploy/bench/scale.sh\` and written to SCALE.md, with the model of"
  echo "capacity at 10, 100 and 1,000 gateways."
fi

seed=$POISSON_SEED search_steps=$SEARCH_STEPS bisect_steps=$BISECT_STEPS
pct() { jq -rn "($1) * 100 | round"; }
min_pct=$(pct "$MIN_DELIVERED") start_pct=$(pct "$START_SHARE") down_pct=$(pct "1 - $STEP_DOWN") bmin_pct=$(pct "$BISECT_MIN")

cat <<EOF

## How the columns are measured

- **sustained, even / Poisson**: open-loop runs (\`chat-loadgen rate\`, no cap on a user's
  unanswered sends), evenly paced (\`--arrival even\`: sends 1/rate apart, users in turn) and
  Poisson (\`--arrival poisson --seed $seed\`: exponential gaps of mean 1/rate, each send by a
  user drawn at random, so bursts). A step passes when it delivers at least
  $min_pct % of its target rate with p99 delivery under ${P99_LIMIT:-100} ms and nothing lost,
  duplicated, reordered or answered with an error. The even search starts at $start_pct % of the
  closed loop; after a failed step the next is $down_pct % lower (or by sqrt(limit / p99)
  when that is lower, down to half: the further over the limit, the larger the step), or just under what the
  failed step delivered when that is lower still (an overloaded open loop delivers about what
  the configuration carries, at any latency; never below half the failed rate); after the
  first pass, up to $bisect_steps bisections between the passing rate and the lowest failed
  one (the closed loop when none failed), unless they are within $bmin_pct % of each other;
  at most $search_steps steps per search. The Poisson search is the same but starts at the even
  search's passing rate and bisects below its lowest failed one (bursts make the even rate
  Poisson's likely ceiling), which saves steps. The column is the passing step's delivered
  messages per second ("–": no step passed); the real limit lies between its target and the
  lowest failed target (see "The open-loop searches"). Every message is stored before it is
  acknowledged or delivered, so delivered messages are persisted ones.
- **closed loop**: \`chat-loadgen max\`: every user keeps ${WINDOW:-8} sends unanswered and
  sends again on each answer; the most the configuration delivers, at whatever latency.
- **latency**: from the scheduled send time (open loop, so a server that falls behind cannot
  hide its queue) to \`message-sent\` at the sender (ack) and \`receive-message\` at the
  partner (delivery), for messages sent in the measured window; at ${MODERATE_RATE:-1000}
  msg/s, evenly paced.
- **CPU**: user + system time of every server process during the measured window of the
  ${MODERATE_RATE:-1000} msg/s run (and of the even search's passing step), divided by the
  messages acknowledged in it: for our cluster the gateways, persister, presence, our
  nats-server and the Postgres backends of the database; for the all-in-one its process and
  its Postgres backends; for the peer its node processes and their Postgres backends. The
  backends are every one serving the configuration's database during the window, found by
  their process title every 200 ms (\`chat-loadgen --server-database\`): a connection the pool
  opens in the window counts from its start, one it closes up to its last sample
  (node-postgres closes connections idle for 10 s, so those alive when the configuration
  started are not those working at 1,000 msg/s). Runs before 2026-12-07 counted only the
  backends alive when the configuration started, and so left out most of the peer's.
- **memory per idle connection**: resident memory of the gateways (the all-in-one process,
  the peer's node processes) after ${IDLE:-?} connections (the peer: ${PEER_IDLE:-?}, see
  run.sh) were opened and joined to a conversation and traffic settled, minus before, divided
  by the connections ("not settled": frames were still arriving when it was measured, e.g. a
  server announcing every connection to every socket).
- **lost / dup / out of order / errors**: summed over every run of the configuration; errors
  include \`message-error\`, \`error\` events, disconnections and sends never answered.
- **ratios and targets**: open-loop sustained / closed loop shows how much of a
  configuration's capacity traffic that arrives on its own schedule gets (target ≥ 0.8);
  ours / the peer's single instance: open-loop sustained ≥ 3 on each arrival pattern, p99
  delivery at ${MODERATE_RATE:-1000} msg/s ≤ 1, CPU per message at ${MODERATE_RATE:-1000}
  msg/s ≤ 1.5, and for the all-in-one the closed loop ≥ 10. "Met" and "not met" are computed
  from this run's numbers.

## Commands

\`\`\`
$(cat "$RAW/commands.txt" 2>/dev/null)
\`\`\`

Raw JSON of every step: [raw/](raw/).

Earlier measurements and analyses, each with its date and machine: [EARLIER.md](EARLIER.md).
EOF
