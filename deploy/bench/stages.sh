#!/usr/bin/env bash
# Where a send waits, by stage, on this machine: writes STAGES.md and the raw data of every run
# (raw-stages/) to the output directory. See README.md.
#
# For each gateway count in GATEWAYS: a fresh Postgres database, a persister, presence and that
# many gateways (`chat gateway|persister|presence`, one worker thread each, as run.sh) on one
# nats-server of the script's own, which the configurations share in turn (as in run.sh). For
# each rate in RATES: `chat-loadgen rate` (500 users, evenly paced, no in-flight cap), and the
# gateways' and the persister's /metrics scraped twice inside its measured window; the stage
# histograms between the two scrapes (deploy/bench/stages.py) give each stage's mean and the
# bucket bound of its p99, beside the client's delivery p50 / p99 of the whole run.
#
# Usage: deploy/bench/stages.sh [--quick] [--out DIR] [--gateways "1 2"] [--rates "1000 8000 12000"]
#   --quick     1 gateway at 1,000 msg/s, 2 + 4 s: to try the script (CI's smoke runs it), not
#               for numbers (STAGES.md says so).
#   --out       where STAGES.md and raw-stages/ go (default: this directory).
#   --gateways  the gateway counts (default "1 2").
#   --rates     the offered rates, msg/s (default "1000 8000 12000").
# Exits non-zero when a run's load generator reports a failed check (lost, duplicated or
# reordered messages, errors) or a stage recorded nothing.
# Env: CHAT_BIN, LOADGEN_BIN (default: built here, `cargo build --release --locked`, in
#      CARGO_TARGET_DIR), CHAT_COMMIT (the commit CHAT_BIN was built from; default: this
#      checkout's), PG_URL (default postgres://postgres@127.0.0.1:5432; fresh databases are
#      created and dropped there), NATS_SERVER_BIN.
# Needs: cargo (unless both binaries are given), node, curl, jq, psql, python3, nats-server.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/lib.sh"

quick=0
out=$here
gateway_counts="1 2"
rates="1000 8000 12000"
command_line="deploy/bench/stages.sh $*"
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --gateways) gateway_counts=$2; shift ;;
    --rates) rates=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
# The command as recorded: without --out, whose value is a path of the machine that ran it.
command_line=$(sed -E 's/ --out [^ ]+//; s/ +$//' <<<"$command_line")

users=500 # simulated users (250 conversations), as run.sh
if ((quick)); then
  gateway_counts=1 rates=1000 warmup_s=2 duration_s=4
else
  warmup_s=3 duration_s=10
fi
# The scrapes: after the warm-up and the users' set-up (a second or two), and before the end.
scrape_after_s=$((warmup_s + 2))
scrape_window_s=$((duration_s - 3))

pg=${PG_URL:-postgres://postgres@127.0.0.1:5432}
# Without nats-server or a reachable Postgres there is nothing to measure. The smoke the test
# command runs (--quick) then skips, loudly, like the tests that need those services, except
# under CI=true, where their absence is a failure; a full run always fails.
missing() {
  if ((quick)) && [[ ${CI:-} != true ]]; then
    printf '\n!!! SKIPPING the stages smoke: %s\n\n' "$1" >&2
    exit 0
  fi
  echo "stages.sh: $1" >&2
  exit 2
}
command -v "${NATS_SERVER_BIN:-nats-server}" >/dev/null || [[ -x /usr/sbin/nats-server ]] || missing "it needs nats-server (NATS_SERVER_BIN)"
psql "$pg/postgres" -qAtc 'select 1' >/dev/null 2>&1 || missing "it needs Postgres at $pg (PG_URL)"
binaries "$repo"

tmp=$(mktemp -d)
tag=stages_$(date +%s)_$$
raw=$out/raw-stages
mkdir -p "$raw"
rm -f "$raw"/*.json "$raw"/*.prom "$raw/commands.txt"
echo "$command_line" >"$raw/commands.txt"
started=() # processes of the current configuration
nats_pid=
databases=()

cleanup() {
  if ((${#started[@]})); then stop_pids "${started[@]}"; fi
  if [[ -n $nats_pid ]]; then stop_pids "$nats_pid"; fi
  for db in "${databases[@]}"; do psql "$pg/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
log() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

# scrape NAME URL...: each URL's /metrics into raw-stages/NAME-<i>.prom.
scrape() {
  local name=$1 i=0 url
  shift
  for url in "$@"; do
    curl -sf "$url/metrics" >"$raw/$name-$i.prom"
    i=$((i + 1))
  done
}

start_nats "$tmp/nats"
autovacuum=$(psql "$pg/postgres" -Atc 'show autovacuum')
runs=()
for gateways in $gateway_counts; do
  label=${gateways}gw
  db=${tag}_$label
  psql "$pg/postgres" -qc "create database $db" >/dev/null
  databases+=("$db")
  export NATS_URL=$nats_url DATABASE_URL=$pg/$db?sslmode=disable CHAT_SUBJECT_PREFIX=${tag}_$label RUST_LOG=warn CHAT_WORKER_THREADS=$ROLE_WORKER_THREADS
  "$chat" migrate >"$tmp/migrate-$label.log" 2>&1
  persister_port=$(free_port) presence_port=$(free_port)
  start "$label-persister" "$chat" persister --host 127.0.0.1 --port "$persister_port"
  start "$label-presence" "$chat" presence --host 127.0.0.1 --port "$presence_port"
  urls=() url_args=()
  for ((g = 0; g < gateways; g++)); do
    port=$(free_port)
    start "$label-gw$g" env "${LOAD_LIMITS[@]}" "$chat" gateway --host 127.0.0.1 --port "$port" --gateway-id "gw$g"
    urls+=("http://127.0.0.1:$port")
    url_args+=(--url "http://127.0.0.1:$port")
  done
  for p in "$persister_port" "$presence_port"; do wait_http "http://127.0.0.1:$p/healthz" 60; done
  for u in "${urls[@]}"; do wait_http "$u/healthz" 60; done
  unset NATS_URL DATABASE_URL CHAT_SUBJECT_PREFIX RUST_LOG CHAT_WORKER_THREADS
  # Warms the database pools and the rooms' first subscriptions.
  "$loadgen" rate "${url_args[@]}" --users 20 --rate 200 --warmup 0s --duration 1s >/dev/null 2>&1 || true
  roles=("${urls[@]}" "http://127.0.0.1:$persister_port")
  for rate in $rates; do
    name=$label-$rate
    # Without autovacuum the tables are never analyzed (see inbox.sh): as autovacuum would.
    if [[ $autovacuum != on ]]; then psql "$pg/$db" -qc 'vacuum analyze'; fi
    log "$name: chat-loadgen rate at $rate msg/s"
    echo "chat-loadgen rate ${url_args[*]//http:\/\/127.0.0.1:[0-9]*/URL} --users $users --rate $rate --warmup ${warmup_s}s --duration ${duration_s}s" >>"$raw/commands.txt"
    "$loadgen" rate "${url_args[@]}" --users "$users" --rate "$rate" --warmup "${warmup_s}s" --duration "${duration_s}s" \
      --json "$raw/$name.loadgen.json" >"$tmp/$name.txt" 2>&1 &
    load=$!
    sleep "$scrape_after_s"
    scrape "$name-before" "${roles[@]}"
    sleep "$scrape_window_s"
    scrape "$name-after" "${roles[@]}"
    wait "$load" || log "$name: chat-loadgen exit $? (see raw-stages/$name.loadgen.json)"
    python3 "$here/stages.py" window "$raw/$name"-before-*.prom -- "$raw/$name"-after-*.prom >"$tmp/$name.stages.json"
    jq -n --argjson g "$gateways" --argjson rate "$rate" --slurpfile l "$raw/$name.loadgen.json" --slurpfile s "$tmp/$name.stages.json" \
      '{gateways: $g, rate: $rate, delivered_per_s: $l[0].throughput_delivered_per_s,
        delivery_p50_ms: $l[0].delivery_latency_ms.p50, delivery_p99_ms: $l[0].delivery_latency_ms.p99,
        ok: $l[0].ok, lost: $l[0].lost, duplicated: $l[0].duplicated, out_of_order: $l[0].out_of_order, stages: $s[0]}' >"$raw/$name.json"
    rm -f "$raw/$name"-*.prom
    runs+=("$raw/$name.json")
  done
  stop_configuration
done

machine() {
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit ${CHAT_COMMIT:-$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)}"
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), $(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) memory"
  echo "- nats-server: $("${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}" --version 2>&1 | head -1); Postgres $(psql "$pg/postgres" -Atc 'show server_version')"
}

log "writing $out/STAGES.md"
{
  echo "# Where a send waits, by stage"
  echo
  if ((quick)); then echo "**A --quick run: seconds of traffic, to try the script; not numbers to compare.**"; echo; fi
  machine
  echo "- command: \`$command_line\`; the loadgen commands are in raw-stages/commands.txt"
  echo "- load: $users users (pairs sharing a conversation, user i on gateway i mod N), evenly paced, warm-up ${warmup_s} s, measured ${duration_s} s; the stages over ${scrape_window_s} s inside that window"
  echo
  echo "Each stage's mean over the window and the upper bound of the histogram bucket holding its p99 (ms), from the roles' /metrics (ARCHITECTURE.md, Observability, names them; Performance reads them). The per-batch stages count once per batch, whatever it holds; \"stored to outcome\" spans the persister's stages and the outcome's way back."
  echo
  python3 "$here/stages.py" table "${runs[@]}"
  echo
  echo "Lost / duplicated / out of order, per run: $(jq -rs 'map("\(.gateways) gw \(.rate)/s: \(.lost)/\(.duplicated)/\(.out_of_order)") | join("; ")' "${runs[@]}")."
} >"$out/STAGES.md"
cat "$out/STAGES.md"

# A run whose load generator found a problem, or a stage that recorded nothing, fails the script
# (and so the smoke).
problems=$(jq -rs 'map(select(.ok != true or ([.stages[] | select(. == null or .count == 0)] | length > 0))
  | "\(.gateways) gw at \(.rate)/s") | join(", ")' "${runs[@]}")
if [[ -n $problems ]]; then
  echo "stages.sh: a failed check or a stage that recorded nothing in: $problems (see raw-stages/)" >&2
  exit 1
fi
