#!/usr/bin/env bash
# The benchmark: our cluster (NATS JetStream + Postgres, 1, 2 and 4 gateways), our all-in-one
# process (`chat all` on Postgres) and the peer (a conventional Node.js server of the same API;
# 1 instance, and 2 on Redis when Redis answers) under the same load from `chat-loadgen`, on
# this machine, in one run, next to the machine's raw limits (JetStream publishes, batched
# Postgres inserts). Each configuration: memory per idle connection, the closed-loop maximum,
# the highest open-loop rate sustained with evenly paced and with Poisson arrivals, latency
# and CPU at 1,000 msg/s. Writes RESULTS.md and the raw JSON of every step (raw/) to the
# output directory. See README.md here.
#
# Usage: deploy/bench/run.sh [--quick] [--out DIR] [PEER_DIR]
#   PEER_DIR (or env PEER_DIR): the peer's directory (its run.sh starts it); without one the
#            peer columns are left out.
#   --quick  seconds per step, 4 steps per open-loop search instead of 6, and 2,000 idle
#            connections instead of 10,000: for trying the script, not for numbers.
#   --out    where RESULTS.md and raw/ go (default: this directory).
# Env: PG_URL (default postgres://postgres@127.0.0.1:5432; fresh databases are created and
#      dropped there), NATS_SERVER_BIN (default: nats-server from PATH or /usr/sbin),
#      REDIS_URL (default redis://127.0.0.1:6379), CARGO_TARGET_DIR, BENCH_GATEWAYS (the
#      cluster's gateway counts, default "1 2 4").
# Needs: cargo, node, curl, jq, psql, pgbench, nats-server.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/lib.sh"

quick=0
out=$here
peer_dir=${PEER_DIR:-}
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) peer_dir=$1 ;;
  esac
  shift
done

if ((quick)); then
  warmup=1s duration=3s idle_connections=2000 search_steps=4 bisect_steps=1 pg_seconds=3 js_messages=20000
else
  warmup=3s duration=10s idle_connections=10000 search_steps=6 bisect_steps=2 pg_seconds=10 js_messages=200000
fi
# The peer announces every connection to every socket (user:online), so opening N idle
# connections costs it O(N^2) frames: 2,000 took it over two minutes here. Its memory per idle
# connection is measured at this many.
peer_idle_connections=2000
users=500          # simulated users in throughput and latency runs (250 conversations)
window=8           # unanswered sends per user in the closed-loop run
moderate_rate=1000 # msg/s of the latency run
p99_limit_ms=100   # "sustained": p99 delivery under this ...
min_delivered=0.95 # ... at least this share of the target delivered, nothing lost (passes)
# The open-loop searches (search): the first step at start_share of the closed loop's
# throughput (the Poisson search: at the even one's result), a failed one step_down lower,
# then bisections; search_steps runs at most per arrival pattern, bisections included.
start_share=0.9
step_down=0.85
bisect_min=0.03    # no bisection between rates closer than this (relative)
min_rate=100       # msg/s; the search stops below it
poisson_seed=1     # --seed of the Poisson runs: the same schedule in every run

pg=${PG_URL:-postgres://postgres@127.0.0.1:5432}
redis_url=${REDIS_URL:-redis://127.0.0.1:6379}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}
chat=$CARGO_TARGET_DIR/release/chat
loadgen=$CARGO_TARGET_DIR/release/chat-loadgen

# 10,000 connections need as many descriptors in the servers (they inherit this limit).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
if [[ $nofile != unlimited ]] && ((nofile < idle_connections + 1000)); then
  echo "warning: open files limit $nofile is too low for $idle_connections idle connections" >&2
fi

tmp=$(mktemp -d)
tag=bench_$(date +%s)_$$
raw=$out/raw
mkdir -p "$raw"
rm -f "$raw"/*.json "$raw/commands.txt"
rm -rf "$out/failed-logs"
echo "${BENCH_GATEWAYS:+BENCH_GATEWAYS=\"$BENCH_GATEWAYS\" }deploy/bench/run.sh $( ((quick)) && echo '--quick ')${peer_dir:+<peer dir>}" >"$raw/commands.txt"
started=() # processes of the current configuration
nats_pid=
databases=()
block=$(( ($(date +%s) % 1000000) * 100 )) # see next_base
blocks=()

cleanup() {
  if ((${#started[@]})); then stop_pids "${started[@]}"; fi
  if [[ -n $nats_pid ]]; then stop_pids "$nats_pid"; fi
  if ((${#blocks[@]})) && redis-cli -u "$redis_url" ping >/dev/null 2>&1; then
    for b in "${blocks[@]}"; do
      redis-cli -u "$redis_url" --scan --pattern "chatpeer:online:${b}??????" | xargs -r redis-cli -u "$redis_url" del >/dev/null || true
    done
  fi
  for db in "${databases[@]}"; do psql "$pg/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
log() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

# A Postgres without autovacuum (this machine's is so configured) never cleans the dead rows
# of updates nor gathers planner statistics: the inbox rows the persister updates with every
# message (issue 16) would pile up dead versions step after step, and every later step of a
# configuration would pay for the earlier ones. So, where autovacuum is off, the configuration's
# database gets the `VACUUM ANALYZE` autovacuum would have run before each traffic step (the
# peer's too: the same for every configuration). Recorded in raw/settings.json.
autovacuum=$(psql "$pg/postgres" -Atc 'show autovacuum' 2>/dev/null || echo unknown)
keep_vacuumed() {
  if [[ $autovacuum != on && -n ${db:-} ]]; then psql "$pg/$db" -qc 'vacuum analyze' >/dev/null 2>&1 || true; fi
}

new_database() { # new_database SUFFIX: creates it, name in $db (no subshell: cleanup needs the list)
  db=${tag}_$1
  psql "$pg/postgres" -qc "create database $db" >/dev/null
  databases+=("$db")
}

# Every simulated crowd gets its own block of user ids (ids block*1e6 + i), recorded so that
# cleanup can remove what the peer leaves in the shared Redis under those ids.
next_base() {
  block=$((block + 1))
  blocks+=("$block")
  base=$((block * 1000000))
}

# loadgen NAME ARGS...: one loadgen run, its JSON kept as raw/NAME.json; the table on stderr.
# A failed check does not stop the benchmark: the JSON records it and RESULTS.md shows it.
loadgen() {
  local name=$1
  shift
  case $1 in
    rate | max | idle) next_base; set -- "$@" --user-base "$base" ;;
  esac
  case $1 in
    rate | max) keep_vacuumed ;;
  esac
  log "loadgen $name: $*"
  echo "chat-loadgen $* --json raw/$name.json" >>"$raw/commands.txt"
  "$loadgen" "$@" --json "$raw/$name.json" >&2 || log "loadgen $name: exit $? (see raw/$name.json)"
  [[ -s $raw/$name.json ]] || return 1
  keep_logs_if_failed "$name"
}

# keep_logs_if_failed NAME: when raw/NAME.json records a failed check (something lost,
# duplicated, reordered or unanswered), the logs of the configuration's servers and of
# nats-server so far are copied to failed-logs/NAME/ in the output directory (not committed:
# they name this machine's paths), since the run's own directory goes at the end.
keep_logs_if_failed() {
  if jq -e '.ok == false' "$raw/$1.json" >/dev/null 2>&1; then
    local kept=$out/failed-logs/$1
    mkdir -p "$kept"
    cp "$tmp/$label"*.log "$tmp"/nats*.log "$kept/" 2>/dev/null || true
    log "loadgen $1: a check failed; the servers' logs are in $kept"
  fi
  true
}

# measure LABEL URLS MEMORY_PIDS CPU_PIDS [IDLE]: the benchmark of one running configuration.
# URLS: comma-separated base URLs; pids: space-separated; IDLE: "no-idle" skips the idle step.
# $setup: a line describing the configuration, for RESULTS.md.
measure() {
  local label=$1 urls=() mem_pids=($3) cpu_pids=($4) url_args=() pid_args=() cpu_args=() idle=yes
  if [[ ${5:-} == no-idle ]]; then idle=; fi
  IFS=, read -r -a urls <<<"$2"
  for u in "${urls[@]}"; do url_args+=(--url "$u"); done
  for p in "${mem_pids[@]}"; do pid_args+=(--server-pid "$p"); done
  for p in "${cpu_pids[@]}"; do cpu_args+=(--server-pid "$p"); done
  # The configuration's Postgres backends count too, whichever its pool opens or closes.
  cpu_args+=(--server-database "$db")
  local common=(--users "$users" --warmup "$warmup" --duration "$duration")

  # Memory per idle connection, first, while the processes hold no garbage of earlier runs.
  # Not for the second peer configuration: the peer announces every connection to every
  # socket, so 10,000 connections cost it minutes, and one instance's figure is the one
  # compared. Connections may wait long for a busy server.
  if [[ $idle ]]; then
    loadgen "$label-idle" idle "${url_args[@]}" --users "$idle_connections" --setup-timeout 120s --settle-max 120s \
      "${pid_args[@]}" || true
  fi

  # The closed-loop maximum, then the open-loop searches, evenly paced and Poisson (see search).
  loadgen "$label-max" max "${url_args[@]}" "${common[@]}" --window "$window" || true
  local closed
  closed=$(jq -r '.throughput_delivered_per_s // 0' "$raw/$label-max.json" 2>/dev/null || echo 0)
  local start hi
  start=$(jq -n "$closed * $start_share | floor") hi=$(jq -n "$closed | floor")
  search "$label" even "$start" "$hi"
  local even=$found
  # Poisson arrivals (bursts) sustain at most about what even ones do: the search starts at the
  # even search's passing rate, below its failing one.
  if [[ $(jq -r .rate <<<"$even") != null ]]; then
    start=$(jq -r .rate <<<"$even") hi=$(jq -r '.failed_rate // empty' <<<"$even")
    hi=${hi:-$(jq -n "$closed | floor")}
  fi
  search "$label" poisson "$start" "$hi"
  local poisson=$found

  # Latency at a moderate rate (evenly paced), with the CPU time of every server process.
  loadgen "$label-moderate" rate "${url_args[@]}" "${common[@]}" --rate "$moderate_rate" "${cpu_args[@]}" || true

  # sustained / sustained_rate: the even search's, as before there were two.
  jq -n --arg name "$label" --arg setup "$setup" --argjson closed "${closed:-0}" --argjson even "$even" \
    --argjson poisson "$poisson" --argjson seed "$poisson_seed" '{
      label: $name, setup: $setup, closed_loop: $closed,
      sustained: ($even.delivered // 0), sustained_rate: ($even.rate // 0),
      sustained_even: ($even.delivered // 0), sustained_even_rate: ($even.rate // 0),
      sustained_even_p99_ms: $even.p99_ms, sustained_even_failed_rate: $even.failed_rate,
      sustained_poisson: ($poisson.delivered // 0), sustained_poisson_rate: ($poisson.rate // 0),
      sustained_poisson_p99_ms: $poisson.p99_ms, sustained_poisson_failed_rate: $poisson.failed_rate,
      poisson_seed: $seed, steps: {even: $even.steps, poisson: $poisson.steps}
    }' >"$raw/$label-summary.json"
}

# passes FILE: whether a `rate` report meets the criterion of "sustained".
passes() {
  jq -e --argjson p99 "$p99_limit_ms" --argjson min "$min_delivered" '.mode == "rate" and .ok
    and .lost == 0 and .duplicated == 0 and .out_of_order == 0 and .delivery_latency_ms.count > 0
    and .delivery_latency_ms.p99 < $p99 and .throughput_delivered_per_s >= $min * .rate_target' "$1" >/dev/null 2>&1
}

# search_step RATE: one step of search (whose variables it uses and sets: steps, name, f);
# recorded in its log; true when it passes.
search_step() {
  local ok
  steps=$((steps + 1))
  name=$label-$arrival-$steps
  f=$raw/$name.json
  ok=false
  if loadgen "$name" rate "${url_args[@]}" "${common[@]}" --rate "$1" "${args[@]}" "${cpu_args[@]}" && passes "$f"; then
    ok=true
  fi
  jq -nc --argjson step "$steps" --argjson rate "$1" --argjson pass "$ok" --slurpfile r <(cat "$f" 2>/dev/null || true) \
    '{step: $step, rate: $rate, delivered: ($r[0].throughput_delivered_per_s // null),
      p99_ms: ($r[0].delivery_latency_ms.p99 // null), pass: $pass}' >>"$log_file"
  log "$name: $1 msg/s: $(jq -r 'def r: if . == null then "?" else . * 10 | round / 10 | tostring end;
    "delivered \(.delivered | r)/s, p99 delivery \(.p99_ms | r) ms: " + (if .pass then "pass" else "fail" end)' <<<"$(tail -1 "$log_file")")"
  [[ $ok == true ]]
}

# search LABEL ARRIVAL START HI: the highest open-loop rate (`--arrival ARRIVAL`, no in-flight
# cap) that passes, in at most search_steps runs (raw/LABEL-ARRIVAL-N.json). Steps down from
# START, each step_down lower (more when the failed step's p99 was far over the limit:
# sqrt(limit / p99), at most half), or just under what a failed step delivered when that is lower
# still (an overloaded open loop delivers about what the configuration carries, at whatever
# latency; but never below half the failed rate), until one passes; then up to bisect_steps
# bisections between the passing rate and the lowest failed one (HI, unmeasured, when nothing
# failed), unless they are within bisect_min of each other. The passing report is copied to
# raw/LABEL-sustained-ARRIVAL.json.
# Uses from measure: url_args, common, cpu_args. Result in $found (JSON): rate (target,
# null: no step passed), delivered, p99_ms, failed_rate (lowest failed target above it, or
# null), steps [{step, rate, delivered, p99_ms, pass}].
search() {
  local label=$1 arrival=$2 rate=$3 hi=$4 lo= lo_name= failed= steps=0 name f delivered p99
  local args=(--arrival "$arrival")
  if [[ $arrival == poisson ]]; then args+=(--seed "$poisson_seed"); fi
  local log_file=$tmp/$label-$arrival.steps
  : >"$log_file"
  rm -f "$raw/$label-sustained-$arrival.json"
  while ((steps < search_steps && rate >= min_rate)); do
    if search_step "$rate"; then
      lo=$rate lo_name=$name
      break
    fi
    hi=$rate failed=$rate
    delivered=$(jq -r '.throughput_delivered_per_s // 0' "$f" 2>/dev/null || echo 0)
    p99=$(jq -r '.delivery_latency_ms.p99 // 0' "$f" 2>/dev/null || echo 0)
    # Queueing latency grows steeply near capacity: the further the p99 was over the limit,
    # the larger the step down (sqrt(limit / p99), between half and step_down).
    rate=$(jq -n --argjson r "$rate" --argjson d "${delivered:-0}" --argjson s "$step_down" \
      --argjson p "${p99:-0}" --argjson l "$p99_limit_ms" \
      '(if $p > $l then [[($l / $p | sqrt), $s] | min, 0.5] | max else $s end) as $k |
       [$r * $k, (if $d > 0 then [$d * 0.95, $r * 0.5] | max else $r end)] | min | floor')
  done
  if [[ -n $lo ]]; then
    local b mid
    for ((b = 0; b < bisect_steps && steps < search_steps; b++)); do
      jq -en --argjson lo "$lo" --argjson hi "$hi" --argjson m "$bisect_min" '$hi - $lo > $lo * $m' >/dev/null || break
      mid=$(((lo + hi) / 2))
      if search_step "$mid"; then lo=$mid lo_name=$name; else hi=$mid failed=$mid; fi
    done
    cp "$raw/$lo_name.json" "$raw/$label-sustained-$arrival.json"
  else
    log "$label $arrival: no step passed"
  fi
  found=$(jq -sc --argjson rate "${lo:-null}" --argjson failed "${failed:-null}" \
    '{rate: $rate, failed_rate: $failed, steps: .,
      delivered: (map(select(.pass and .rate == $rate)) | first | if . == null then null else .delivered | floor end),
      p99_ms: (map(select(.pass and .rate == $rate)) | first | .p99_ms // null)}' "$log_file")
}

# ---- build
log "build"
(cd "$repo" && cargo build --release --locked -p chat -p chat-loadgen)

# ---- our NATS server (the shared one is left alone)
start_nats "$tmp/nats"

# ---- the box's limits
log "box limits: JetStream publishes"
loadgen box-jetstream jetstream-bench --nats-url "$nats_url" --stream "${tag}_js" --messages "$js_messages" || true
log "box limits: batched Postgres inserts (256 rows per statement)"
new_database pglimit
pgdb=$db
env DATABASE_URL="$pg/$pgdb" "$chat" migrate >"$tmp/migrate-pglimit.log" 2>&1
psql "$pg/$pgdb" -qc "create table bench_messages (like messages including all)"
cat >"$tmp/insert.sql" <<'SQL'
insert into bench_messages (conversation_id, sender_id, message_type, content, created_at)
select 1 + (random() * 1000)::bigint, 1, 'text', '1234567:123:456789:1234567890123', now() from generate_series(1, 256);
SQL
echo "pgbench -n -c 2 -j 2 -T $pg_seconds -f insert.sql <database>   # insert.sql: $(tr '\n' ' ' <"$tmp/insert.sql")" >>"$raw/commands.txt"
pgbench -n -c 2 -j 2 -T "$pg_seconds" -f "$tmp/insert.sql" "$pg/$pgdb" >"$tmp/pgbench.log" 2>&1 || cat "$tmp/pgbench.log" >&2
pg_tps=$(awk '/^tps = / { print $3; exit }' "$tmp/pgbench.log")
jq -n --argjson tps "${pg_tps:-0}" '{statements_per_s: $tps, rows_per_statement: 256, rows_per_s: ($tps * 256)}' >"$raw/box-postgres.json"

ours_idle_connections=$idle_connections

# ---- our cluster, 1, 2 and 4 gateways
for gateways in ${BENCH_GATEWAYS:-1 2 4}; do
  label=chat-${gateways}gw
  log "configuration $label"
  new_database "g$gateways"
  # No TLS to the local Postgres, like the peer (node-postgres does not use it by default).
  export NATS_URL=$nats_url DATABASE_URL=$pg/$db?sslmode=disable CHAT_SUBJECT_PREFIX=${tag}_g$gateways RUST_LOG=warn CHAT_WORKER_THREADS=$ROLE_WORKER_THREADS
  "$chat" migrate >"$tmp/migrate-$label.log" 2>&1
  persister_port=$(free_port) presence_port=$(free_port)
  start "$label-persister" "$chat" persister --host 127.0.0.1 --port "$persister_port"
  roles=("$last")
  start "$label-presence" "$chat" presence --host 127.0.0.1 --port "$presence_port"
  roles+=("$last")
  gateway_pids=() urls=()
  for ((g = 0; g < gateways; g++)); do
    port=$(free_port)
    start "$label-gw$g" env "${LOAD_LIMITS[@]}" "$chat" gateway --host 127.0.0.1 --port "$port" --gateway-id "gw$g"
    gateway_pids+=("$last")
    urls+=("http://127.0.0.1:$port")
  done
  for p in "$persister_port" "$presence_port"; do wait_http "http://127.0.0.1:$p/healthz" 60; done
  for u in "${urls[@]}"; do wait_http "$u/healthz" 60; done
  unset NATS_URL DATABASE_URL CHAT_SUBJECT_PREFIX RUST_LOG CHAT_WORKER_THREADS
  # warm the database pools before the first measurement
  next_base
  "$loadgen" rate --url "${urls[0]}" --users 20 --rate 200 --warmup 0s --duration 1s --user-base "$base" >/dev/null 2>&1 || true
  plural=; if ((gateways > 1)); then plural=s; fi
  setup="$gateways gateway$plural, a persister and presence (\`chat gateway|persister|presence\`, each with \`--worker-threads $ROLE_WORKER_THREADS\`) on NATS JetStream (a nats-server of the run's own), Postgres"
  measure "$label" "$(IFS=,; echo "${urls[*]}")" "${gateway_pids[*]}" \
    "${gateway_pids[*]} ${roles[*]} $nats_pid"
  stop_configuration
done

# ---- all in one: `chat all` (the binary's default), every role in one process on the
# in-process bus (no NATS), on Postgres like the cluster and the peer (a fresh database; the
# process applies the migrations at start).
label=chat-aio
log "configuration $label"
new_database aio
port=$(free_port)
start "$label" env -u NATS_URL -u CHAT_SUBJECT_PREFIX "${LOAD_LIMITS[@]}" RUST_LOG=warn \
  "$chat" all --host 127.0.0.1 --port "$port" --database-url "$pg/$db?sslmode=disable" --data-dir "$tmp/aio-data"
aio_pid=$last
wait_http "http://127.0.0.1:$port/healthz" 60
next_base
"$loadgen" rate --url "http://127.0.0.1:$port" --users 20 --rate 200 --warmup 0s --duration 1s --user-base "$base" >/dev/null 2>&1 || true
setup="\`chat all\`: gateway, persister and presence in one process on the in-process bus (no NATS), Postgres"
measure "$label" "http://127.0.0.1:$port" "$aio_pid" "$aio_pid"
stop_configuration

# ---- the peer, 1 instance and (with Redis) 2
peer_configs=()
if [[ -n $peer_dir ]]; then
  peer_configs=(1)
  if redis-cli -u "$redis_url" ping >/dev/null 2>&1; then peer_configs+=(2); fi
fi
if ((peer_idle_connections < idle_connections)); then idle_connections=$peer_idle_connections; fi
for instances in "${peer_configs[@]}"; do
  label=peer-${instances}x
  log "configuration $label"
  new_database "peer$instances"
  peer_env=(DATABASE_URL="$pg/$db")
  if ((instances > 1)); then peer_env+=(REDIS_URL="$redis_url"); fi
  peer_pids=() urls=()
  for ((i = 0; i < instances; i++)); do
    port=$(free_port)
    start "$label-$i" env "${peer_env[@]}" bash "$peer_dir/run.sh" "$port"
    peer_pids+=("$last")
    urls+=("http://127.0.0.1:$port")
  done
  for u in "${urls[@]}"; do wait_http "$u/healthz" 120; done
  next_base
  "$loadgen" rate --url "${urls[0]}" --users 20 --rate 200 --warmup 0s --duration 1s --user-base "$base" >/dev/null 2>&1 || true
  setup="the peer: 1 Node.js instance (socket.io, node-postgres), Postgres"
  if ((instances > 1)); then setup="the peer: $instances Node.js instances on Redis (socket.io Redis adapter), node-postgres, Postgres"; fi
  # run.sh ends by exec'ing node, so these pids are the node processes
  measure "$label" "$(IFS=,; echo "${urls[*]}")" "${peer_pids[*]}" "${peer_pids[*]}" \
    "$( ((instances > 1)) && echo no-idle)"
  stop_configuration
done

log "writing $out/RESULTS.md"
# The settings, for report.sh (also when it is re-run on raw/ alone).
settings=(QUICK="$quick" USERS="$users" WINDOW="$window" WARMUP="$warmup" DURATION="$duration"
  IDLE="$ours_idle_connections" PEER_IDLE="$idle_connections" MODERATE_RATE="$moderate_rate"
  P99_LIMIT="$p99_limit_ms" MIN_DELIVERED="$min_delivered" START_SHARE="$start_share" STEP_DOWN="$step_down"
  SEARCH_STEPS="$search_steps" BISECT_STEPS="$bisect_steps" BISECT_MIN="$bisect_min" POISSON_SEED="$poisson_seed"
  AUTOVACUUM="$autovacuum")
printf '%s\n' "${settings[@]}" | jq -R 'capture("^(?<k>[^=]*)=(?<v>.*)$") | {(.k): .v}' | jq -s add >"$raw/settings.json"
env "${settings[@]}" RAW="$raw" REPO="$repo" bash "$here/report.sh" >"$out/RESULTS.md"
cat "$out/RESULTS.md"
