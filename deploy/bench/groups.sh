#!/usr/bin/env bash
# Group fan-out (issue 17), measured on this machine; writes GROUPS.md and the raw JSON of every
# run (raw-groups/) to the output directory. See README.md.
#
# Two configurations, each on fresh storage: the all-in-one `chat` (SQLite in a fresh data
# directory, in-process bus), and the cluster with 2 gateways, a persister and presence on a
# nats-server of the run's own and a fresh Postgres database. In each, for groups of 10, 100
# and 1,000 members (1,000 members connected in all: 100, 10 and 1 groups; member j of group g
# on gateway (g·size + j) mod 2, so every group spans both gateways), `chat-loadgen group` on
# the open loop (evenly paced, one sender per group) at rising delivery rates (messages/s ×
# group size) until a step misses p99 delivery < 250 ms or loses, duplicates or reorders a
# message. The highest step that held is the configuration's sustained fan-out. Targets:
# >= 100,000 deliveries/s all-in-one, >= 50,000 in the cluster with 2 gateways.
#
# Usage: deploy/bench/groups.sh [--quick] [--out DIR] [--sizes "10 100 1000"] [--configs "all-in-one cluster"]
#   --quick    1 + 2 s steps and only the first two rates: to try the script, not for numbers.
#   --out      where GROUPS.md and raw-groups/ go (default: this directory).
#   --sizes    group sizes to run (each divides 1,000); --configs: which configurations.
# Env: CHAT_BIN, LOADGEN_BIN (default: built here, `cargo build --release --locked`, in
#      CARGO_TARGET_DIR), CHAT_COMMIT (for GROUPS.md; default: this checkout's), PG_URL (default
#      postgres://postgres@127.0.0.1:5432; a fresh database is created and dropped there),
#      NATS_SERVER_BIN.
# Needs: cargo (unless both binaries are given), node, curl, jq, psql, nats-server.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/lib.sh"

quick=0
out=$here
sizes=(10 100 1000)
configs=(all-in-one cluster)
command_line="deploy/bench/groups.sh $*"
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --sizes) read -r -a sizes <<<"$2"; shift ;;
    --configs) read -r -a configs <<<"$2"; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
command_line=$(sed -E 's/ --out [^ ]+//; s/ +$//' <<<"$command_line")

members_total=1000
steps=(25000 50000 100000 150000 200000 300000) # deliveries/s
p99_limit_ms=250
if ((quick)); then
  warmup=1s duration=2s steps=(5000 10000)
else
  warmup=2s duration=8s
fi

pg=${PG_URL:-postgres://postgres@127.0.0.1:5432}
binaries "$repo"

tmp=$(mktemp -d)
tag=groups_$(date +%s)_$$
raw=$out/raw-groups
mkdir -p "$raw"
rm -f "$raw"/*.json "$raw/commands.txt"
echo "$command_line" >"$raw/commands.txt"
started=()
nats_pid=
db=
cleanup() {
  if ((${#started[@]})); then stop_pids "${started[@]}"; fi
  if [[ -n $nats_pid ]]; then stop_pids "$nats_pid"; fi
  if [[ -n $db ]]; then psql "$pg/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT
log() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

jq -n --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" --arg commit "${CHAT_COMMIT:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)}" \
  --arg cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" --argjson cpus "$(nproc)" \
  --arg mem "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" --arg kernel "$(uname -r)" \
  --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson quick "$quick" \
  '{date: $date, commit: $commit, cpu: $cpu, cpus: $cpus, memory: $mem, kernel: $kernel, load_at_start: $load,
    quick: ($quick == 1)}' >"$raw/machine.json"

# all_in_one: the all-in-one server on a fresh data directory; sets urls and pids.
all_in_one() {
  local port
  port=$(free_port)
  start all-in-one env "${LOAD_LIMITS[@]}" RUST_LOG=warn "$chat" --host 127.0.0.1 --port "$port" --data-dir "$tmp/data-$port"
  pids=("$last")
  urls=(--url "http://127.0.0.1:$port")
  wait_http "http://127.0.0.1:$port/healthz" 60
}

# cluster: 2 gateways, a persister and presence on the run's nats-server and a fresh database.
cluster() {
  local persister_port presence_port port
  start_nats "$tmp/nats"
  db=${tag}_cluster
  psql "$pg/postgres" -qc "create database $db" >/dev/null
  export NATS_URL=$nats_url DATABASE_URL=$pg/$db?sslmode=disable CHAT_SUBJECT_PREFIX=$tag RUST_LOG=warn CHAT_WORKER_THREADS=$ROLE_WORKER_THREADS
  "$chat" migrate >"$tmp/migrate.log" 2>&1
  persister_port=$(free_port) presence_port=$(free_port)
  start persister "$chat" persister --host 127.0.0.1 --port "$persister_port"
  pids=("$last" "$nats_pid")
  start presence "$chat" presence --host 127.0.0.1 --port "$presence_port"
  pids+=("$last")
  urls=()
  for gw in 0 1; do
    port=$(free_port)
    start "gw$gw" env "${LOAD_LIMITS[@]}" "$chat" gateway --host 127.0.0.1 --port "$port" --gateway-id "gw$gw"
    pids+=("$last")
    urls+=(--url "http://127.0.0.1:$port")
    wait_http "http://127.0.0.1:$port/healthz" 60
  done
  for p in "$persister_port" "$presence_port"; do wait_http "http://127.0.0.1:$p/healthz" 60; done
  unset NATS_URL DATABASE_URL CHAT_SUBJECT_PREFIX RUST_LOG CHAT_WORKER_THREADS
}

# sweep CONFIG: every group size at rising rates, until a step misses the target.
sweep() {
  local config=$1 size groups deliveries rate name p99 ok pid_args=()
  for pid in "${pids[@]}"; do pid_args+=(--server-pid "$pid"); done
  # The cluster's Postgres backends count as server CPU too (the all-in-one's SQLite is in
  # its process).
  if [[ $config == cluster ]]; then pid_args+=(--server-database "$db"); fi
  for size in "${sizes[@]}"; do
    groups=$((members_total / size))
    for deliveries in "${steps[@]}"; do
      rate=$((deliveries / size))
      name=$config-g$size-d$deliveries
      log "$name: $groups groups of $size at $rate msg/s"
      echo "chat-loadgen group ${urls[*]} --groups $groups --members $size --rate $rate --warmup $warmup --duration $duration --json raw-groups/$name.json" \
        >>"$raw/commands.txt"
      "$loadgen" group "${urls[@]}" "${pid_args[@]}" --groups "$groups" --members "$size" --rate "$rate" \
        --warmup "$warmup" --duration "$duration" --drain 5s --json "$raw/$name.json" 2>"$tmp/$name.err" >&2 || true
      cat "$tmp/$name.err" >&2
      if [[ ! -s $raw/$name.json ]]; then # no report: the run could not be made (set-up failed)
        jq -n --argjson g "$groups" --argjson m "$size" --argjson r "$rate" --arg why "$(tail -1 "$tmp/$name.err")" \
          '{groups: $g, members: $m, rate_target: $r, ok: false, run_failed: $why}' >"$raw/$name.json"
      fi
      p99=$(jq '.delivery_latency_ms.p99' "$raw/$name.json" 2>/dev/null || echo 1e9)
      ok=$(jq '.ok' "$raw/$name.json" 2>/dev/null || echo false)
      if [[ $ok != true ]] || jq -en "$p99 >= $p99_limit_ms" >/dev/null; then
        log "$name: missed (p99 $p99 ms, checks ok: $ok): the next size"
        break
      fi
    done
  done
}

for config in "${configs[@]}"; do
  case $config in
    all-in-one) log "all-in-one"; all_in_one ;;
    cluster) log "cluster: 2 gateways"; cluster ;;
    *) echo "unknown configuration $config" >&2; exit 2 ;;
  esac
  sweep "$config"
  stop_configuration
done

bash "$here/groups-report.sh" "$raw" "$p99_limit_ms" >"$out/GROUPS.md"
log "wrote $out/GROUPS.md"
