#!/usr/bin/env bash
# The two performance targets of the inbox (issue 16), measured on this machine; writes
# INBOX.md and the raw JSON of every run (raw-inbox/) to the output directory. See README.md.
#
# 1. Receipts: 1 gateway, a persister and presence (`chat gateway|persister|presence`) on a
#    nats-server of the run's own and a fresh Postgres database. The same messaging runs with
#    and without `chat-loadgen --mark-read` (every receiver marks each message of its partner
#    read, with an acknowledgement), alternating which goes first, REPEATS times: the closed
#    loop (`max`), then one open-loop step (`rate`, evenly paced) at what this configuration
#    sustains without receipts (found by a short search, p99 delivery < 100 ms as run.sh
#    means it). Delivered messages/s with receipts / without, medians over the repeats: target
#    >= 0.80. Then the same search with receipts: the sustained rates' ratio.
# 2. Inbox list: a fresh database (`chat migrate`), seeded with plain SQL: one user with 1,000
#    conversations, 1,000,000 messages spread over them, and their conversation_members rows;
#    a gateway, a persister and presence on it; `chat-loadgen inbox-list` (limit 50): first
#    pages one after another, walks of 5 pages by `before`, first pages on 4 connections at
#    once. p50 / p99 / max: target p99 < 20 ms.
#
# Usage: deploy/bench/inbox.sh [--quick] [--out DIR] [--rate MSGS_PER_S] [--repeats N]
#   --quick    1 + 3 s messaging runs, 1 repeat, 200 list requests: to try the script, not for
#              numbers (INBOX.md says so).
#   --out      where INBOX.md and raw-inbox/ go (default: this directory).
#   --rate     the open-loop step of the paired runs (default: the search's result without
#              receipts; given, that search is skipped).
#   --repeats  pairs of runs per mode (default 3).
# Env: CHAT_BIN, LOADGEN_BIN (default: built here, `cargo build --release --locked`, in
#      CARGO_TARGET_DIR), CHAT_COMMIT (the commit CHAT_BIN was built from, for INBOX.md;
#      default: this checkout's), PG_URL (default postgres://postgres@127.0.0.1:5432; fresh databases
#      are created and dropped there), NATS_SERVER_BIN.
# Needs: cargo (unless both binaries are given), node, curl, jq, psql, nats-server.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/lib.sh"

quick=0
out=$here
rate=
repeats=3
command_line="deploy/bench/inbox.sh $*"
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --out) out=$2; shift ;;
    --rate) rate=$2; shift ;;
    --repeats) repeats=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
# The command as recorded: without --out, whose value is a path of the machine that ran it.
command_line=$(sed -E 's/ --out [^ ]+//; s/ +$//' <<<"$command_line")

users=500  # simulated users of the messaging runs (250 conversations), as run.sh
window=8   # unanswered sends per user in the closed loop, as run.sh
if ((quick)); then
  warmup=1s duration=3s repeats=1 list_requests=200 list_concurrent=400 search_steps=2
else
  warmup=3s duration=10s list_requests=2000 list_concurrent=4000
fi
search_steps=5     # open-loop runs per sustained-rate search
list_connections=4 # the concurrent list run
walk_pages=5       # pages per walk in the `before` run
inbox_user=1000000 # the seeded user; its partners are inbox_user + conversation id
conversations=1000
other_conversations=100000 # of other users, without messages (see seed)
messages=1000000

pg=${PG_URL:-postgres://postgres@127.0.0.1:5432}
binaries "$repo"

tmp=$(mktemp -d)
tag=inbox_$(date +%s)_$$
raw=$out/raw-inbox
mkdir -p "$raw"
rm -f "$raw"/*.json "$raw/commands.txt"
echo "$command_line" >"$raw/commands.txt"
started=() # processes of the current configuration
nats_pid=
databases=()
clk_tck=$(getconf CLK_TCK)

cleanup() {
  if ((${#started[@]})); then stop_pids "${started[@]}"; fi
  if [[ -n $nats_pid ]]; then stop_pids "$nats_pid"; fi
  for db in "${databases[@]}"; do psql "$pg/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
log() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

new_database() { # new_database SUFFIX: creates it, name in $db (no subshell: cleanup needs the list)
  db=${tag}_$1
  psql "$pg/postgres" -qc "create database $db" >/dev/null
  databases+=("$db")
}

# The Postgres backends serving database $1.
backends() { psql "$pg/postgres" -Atc "select pid from pg_stat_activity where datname = '$1'" | tr '\n' ' '; }

# cluster LABEL: a fresh database ($db, migrated) and 1 gateway, a persister and presence on
# it; sets url, gateway_pid, persister_pid, presence_pid. SEED, when set, is run between the
# migration and the start of the roles (the schema is the one `chat migrate` made).
cluster() {
  local label=$1 port persister_port presence_port
  new_database "$label"
  export NATS_URL=$nats_url DATABASE_URL=$pg/$db?sslmode=disable CHAT_SUBJECT_PREFIX=${tag}_$label RUST_LOG=warn CHAT_WORKER_THREADS=$ROLE_WORKER_THREADS
  "$chat" migrate >"$tmp/migrate-$label.log" 2>&1
  if [[ -n ${SEED:-} ]]; then $SEED; fi
  persister_port=$(free_port) presence_port=$(free_port) port=$(free_port)
  start "$label-persister" "$chat" persister --host 127.0.0.1 --port "$persister_port"
  persister_pid=$last
  start "$label-presence" "$chat" presence --host 127.0.0.1 --port "$presence_port"
  presence_pid=$last
  start "$label-gw" env "${LOAD_LIMITS[@]}" "$chat" gateway --host 127.0.0.1 --port "$port" --gateway-id gw0
  gateway_pid=$last
  url=http://127.0.0.1:$port
  for p in "$persister_port" "$presence_port"; do wait_http "http://127.0.0.1:$p/healthz" 60; done
  wait_http "$url/healthz" 60
  unset NATS_URL DATABASE_URL CHAT_SUBJECT_PREFIX RUST_LOG CHAT_WORKER_THREADS
}

# measured NAME CMD...: runs a loadgen command with --json raw-inbox/NAME.json (a failed check
# does not stop the benchmark: the JSON records it and INBOX.md shows it), and writes
# raw-inbox/NAME.cpu.json: the cores each role used on average over the whole run (set-up to
# drain) and the whole box's busy cores, to tell what bounded it.
measured() {
  local name=$1 box0 box1 t0 t1 pg_pids
  shift
  log "$name: chat-loadgen $*"
  echo "chat-loadgen $* --json raw-inbox/$name.json" >>"$raw/commands.txt"
  pg_pids=$(backends "$db")
  declare -A before
  for role in gateway persister presence nats postgres; do before[$role]=$(cpu_ticks $(role_pids $role "$pg_pids")); done
  box0=$(box_ticks) t0=$(date +%s.%N)
  "$loadgen" "$@" --json "$raw/$name.json" >&2 || log "$name: exit $? (see raw-inbox/$name.json)"
  box1=$(box_ticks) t1=$(date +%s.%N)
  local roles_json="{}" used
  for role in gateway persister presence nats postgres; do
    used=$(( $(cpu_ticks $(role_pids $role "$pg_pids")) - ${before[$role]} ))
    roles_json=$(jq -c --arg r "$role" --argjson u "$used" --argjson hz "$clk_tck" --argjson w "$(jq -n "$t1 - $t0")" \
      '. + {($r): ($u / $hz / $w * 100 | round / 100)}' <<<"$roles_json")
  done
  jq -n --argjson w "$(jq -n "$t1 - $t0")" --argjson roles "$roles_json" --arg b0 "$box0" --arg b1 "$box1" \
    --argjson cpus "$(nproc)" '($b0 | split(" ") | map(tonumber)) as $s | ($b1 | split(" ") | map(tonumber)) as $e |
      {wall_s: ($w * 10 | round / 10), cpus: $cpus,
       box_busy_cores: (($e[0] - $s[0]) / ($e[1] - $s[1]) * $cpus * 100 | round / 100), roles_cores: $roles}' \
    >"$raw/$name.cpu.json"
}

role_pids() { # role_pids ROLE BACKENDS: the pids of a role of the current configuration
  case $1 in
    gateway) echo "$gateway_pid" ;;
    persister) echo "$persister_pid" ;;
    presence) echo "$presence_pid" ;;
    nats) echo "$nats_pid" ;;
    postgres) echo "$2" ;;
  esac
}

# The machine and what else ran on it.
jq -n --arg date "$(date -u '+%Y-%m-%d %H:%M UTC')" --arg commit "${CHAT_COMMIT:-$(git -C "$repo" rev-parse HEAD 2>/dev/null || echo unknown)}" \
  --arg cpu "$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)" --argjson cpus "$(nproc)" \
  --arg mem "$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)" --arg kernel "$(uname -r)" \
  --arg nats "$("${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}" --version 2>&1 | head -1)" \
  --arg postgres "$(psql "$pg/postgres" -Atc 'show server_version')" --arg load "$(cut -d' ' -f1-3 /proc/loadavg)" \
  --argjson quick "$quick" '{date: $date, commit: $commit, cpu: $cpu, cpus: $cpus, memory: $mem, kernel: $kernel,
    nats_server: $nats, postgres: $postgres, load_at_start: $load, quick: ($quick == 1)}' >"$raw/machine.json"

start_nats "$tmp/nats"

# ---- 1. receipts: the same runs without and with --mark-read
log "receipts: 1 gateway, a persister and presence"
cluster receipts
# Warms the database pools, so that the backends exist when their pids are taken.
"$loadgen" rate --url "$url" --users 20 --rate 200 --warmup 0s --duration 1s >/dev/null 2>&1 || true
echo "$(cut -d' ' -f1-3 /proc/loadavg)" >"$tmp/load-receipts"
common=(--url "$url" --users "$users" --warmup "$warmup" --duration "$duration" --server-pid "$gateway_pid"
  --server-pid "$persister_pid" --server-pid "$presence_pid" --server-pid "$nats_pid")

# Without autovacuum (a Postgres configured so) the tables are never analyzed: the planner
# then guesses row counts from the file sizes of tables that grow by ~100,000 messages a run,
# and its plans drift from what a normally configured server runs (here: parallel plans for
# the unread counts of receipts, ~10 ms of worker start-up each). The runs then get what
# autovacuum would give them: VACUUM ANALYZE of the database before each one.
autovacuum=$(psql "$pg/postgres" -Atc 'show autovacuum')

# messaging NAME MODE VARIANT [ARGS...]: one run, VARIANT plain or read (--mark-read).
messaging() {
  local name=$1 mode=$2 variant=$3 args=("${common[@]}")
  shift 3
  if [[ $autovacuum != on ]]; then psql "$pg/$db" -qc 'vacuum analyze'; fi
  args+=(--server-database "$db")
  if [[ $variant == read ]]; then args+=(--mark-read); fi
  measured "$name" "$mode" "${args[@]}" "$@"
}

# pairs MODE ARGS...: REPEATS runs of MODE without and with receipts. Which goes first
# alternates, so that a drift of the box (the database growing, the page cache) does not
# favour one side.
pairs() {
  local mode=$1 r variant
  shift
  for ((r = 1; r <= repeats; r++)); do
    if ((r % 2)); then order=(plain read); else order=(read plain); fi
    for variant in "${order[@]}"; do messaging "receipts-$mode-$variant-$r" "$mode" "$variant" "$@"; done
  done
}

# passes FILE: a `rate` report that run.sh calls sustained: >= 95 % of the target delivered,
# p99 delivery < 100 ms, every check passed.
passes() {
  jq -e '.ok and .delivery_latency_ms.count > 0 and .delivery_latency_ms.p99 < 100
    and .throughput_delivered_per_s >= 0.95 * .rate_target' "$1" >/dev/null 2>&1
}

# search VARIANT START: the highest open-loop rate (evenly paced, a multiple of 100) that
# passes, in at most search_steps runs (raw-inbox/receipts-search-VARIANT-N.json): 20 % lower
# after a failure until one passes, 15 % higher after a pass until one fails, then halving the
# gap while it is over 5 %. Result in $found (0: none passed).
search() {
  local variant=$1 rate=$2 lo= hi= steps=0 name
  while ((steps < search_steps && rate >= 100)); do
    steps=$((steps + 1))
    name=receipts-search-$variant-$steps
    messaging "$name" rate "$variant" --rate "$rate"
    if passes "$raw/$name.json"; then lo=$rate; else hi=$rate; fi
    log "$name: $rate msg/s: $(jq -r '"delivered \(.throughput_delivered_per_s | round)/s, p99 delivery \(.delivery_latency_ms.p99 * 10 | round / 10) ms"' "$raw/$name.json" 2>/dev/null): $([[ $lo == "$rate" ]] && echo pass || echo fail)"
    if [[ -n $lo && -n $hi ]]; then
      ((hi - lo > lo / 20)) || break
      rate=$(((lo + hi) / 200 * 100))
    elif [[ -n $lo ]]; then
      rate=$((rate * 115 / 10000 * 100))
    else
      rate=$((rate * 80 / 10000 * 100))
    fi
  done
  found=${lo:-0}
}

# The first runs on fresh processes and a fresh database are slower (caches, pools, buffers):
# a closed-loop run that is not measured, so that the pairs start from a warm configuration.
"$loadgen" max --url "$url" --users "$users" --warmup 1s --duration "$duration" --window "$window" >/dev/null 2>&1 || true
log "receipts: closed loop, without and with receipts"
pairs max --window "$window"
# Open loop sustains about half the closed loop on this box (RESULTS.md): the search starts
# there.
closed=$(jq -s 'map(.throughput_delivered_per_s) | sort | .[length / 2 | floor] | floor' "$raw"/receipts-max-plain-*.json)
if [[ -z $rate ]]; then
  log "receipts: the open-loop rate sustained without receipts"
  search plain "$((closed / 2 / 100 * 100))"
  sustained_plain=$found
  rate=$found
  if ((rate == 0)); then rate=$(jq -s 'map(.rate_target) | min' "$raw"/receipts-search-plain-*.json); fi
fi
log "receipts: open loop at $rate msg/s, without and with receipts"
pairs rate --rate "$rate"
log "receipts: the open-loop rate sustained with receipts"
# The target's share of the step first: a pass there meets it.
search read "$((rate * 8 / 1000 * 100))"
sustained_read=$found
stop_configuration

# ---- 2. the inbox list on a seeded database
# seed: one user with $conversations conversations and $messages messages spread evenly over
# them (message i in conversation 1 + (i * 7919) mod 1000, so each conversation's ids step by
# 1,000 and the newest messages interleave), 100 ms apart, every third from the user; the user
# has read all but the newest (conversation id mod 7) messages of each conversation (and
# everything up to their own newest one: own messages count as read), the partners everything.
seed() {
  local t0 t1
  t0=$(date +%s.%N)
  psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -v u="$inbox_user" -v n="$messages" -v c="$conversations" -v others="$other_conversations" >"$tmp/seed.log" 2>&1 <<'SQL'
begin;
-- The rows are consistent by construction: foreign-key triggers are skipped for the bulk load
-- (a million per-row checks would take most of the time), as a restore does.
set local session_replication_role = replica;
-- The secondary indexes of messages are built once after the load instead of row by row: the
-- definitions `chat migrate` made, from the catalog, dropped here and run again below.
create temporary table seed_indexes on commit drop as
select indexname, indexdef from pg_indexes
where schemaname = current_schema() and tablename = 'messages' and indexname <> 'messages_pkey';
select format('drop index %I', indexname) from seed_indexes \gexec
insert into conversations (id, sender_id, receiver_id, user_low, user_high, created_at)
select c, case when c % 2 = 0 then :u else :u + c end, case when c % 2 = 0 then :u + c else :u end,
       :u, :u + c, date_trunc('second', now()) - interval '40 days' + c * interval '1 second'
from generate_series(1::bigint, :c) c;
insert into messages (id, conversation_id, sender_id, message_type, content, created_at)
select i, 1 + (i * 7919) % :c, case when i % 3 = 0 then :u else :u + 1 + (i * 7919) % :c end, 'text',
       'seeded message ' || i, date_trunc('second', now()) - interval '30 days' + i * interval '100 milliseconds'
from generate_series(1::bigint, :n) i;
select indexdef from seed_indexes \gexec
select setval(pg_get_serial_sequence('messages', 'id'), :n);
-- Per conversation: the newest message and the user's own newest one.
create temporary table seed_last on commit drop as
select conversation_id, max(id) as last_id, max(created_at) as last_at,
       coalesce(max(id) filter (where sender_id = :u), 0) as own_id
from messages group by conversation_id;
-- The user's read position: all but the newest (id mod 7) messages (a conversation's ids step
-- by :c), and at least their own newest one.
insert into conversation_members (conversation_id, user_id, last_read_message_id, read_at,
  last_delivered_message_id, delivered_at, unread_count, last_message_id, last_activity_at)
select r.conversation_id, :u, r.read_id, (select created_at from messages where id = r.read_id), r.last_id, r.last_at,
       (select count(*) from messages m where m.conversation_id = r.conversation_id and m.id > r.read_id
          and m.sender_id <> :u),
       r.last_id, r.last_at
from (select *, greatest(last_id - :c * (conversation_id % 7), own_id) as read_id from seed_last) r
union all
select l.conversation_id, :u + l.conversation_id, l.last_id, l.last_at, l.last_id, l.last_at, 0, l.last_id, l.last_at
from seed_last l;
-- Other users' conversations (no messages), so that the members table is not the user's alone
-- and its queries take the indexes, as in a database of many users.
insert into conversations (id, sender_id, receiver_id, user_low, user_high, created_at)
select :c + k, :u + :c + 2 * k - 1, :u + :c + 2 * k, :u + :c + 2 * k - 1, :u + :c + 2 * k,
       date_trunc('second', now()) - interval '50 days' + k * interval '1 second'
from generate_series(1::bigint, :others) k;
insert into conversation_members (conversation_id, user_id, last_activity_at)
select c.id, m.user_id, c.created_at from conversations c
cross join lateral (values (c.sender_id), (c.receiver_id)) m(user_id) where c.id > :c;
select setval(pg_get_serial_sequence('conversations', 'id'), :c + :others);
commit;
-- Planner statistics, as autovacuum would have them on a database this size.
vacuum analyze;
SQL
  t1=$(date +%s.%N)
  # total_unread recounted from the messages themselves (the definition), for the list check.
  expected_unread=$(psql "$DATABASE_URL" -Atc "select count(*) from messages m join conversation_members cm
    on cm.conversation_id = m.conversation_id and cm.user_id = $inbox_user
    where m.id > cm.last_read_message_id and m.sender_id <> $inbox_user")
  jq -n --argjson s "$(jq -n "$t1 - $t0")" --argjson u "$inbox_user" --argjson unread "$expected_unread" \
    --argjson counts "$(psql "$DATABASE_URL" -Atc "select json_build_object('conversations', (select count(*) from conversations),
      'user_conversations', (select count(*) from conversation_members where user_id = $inbox_user),
      'messages', (select count(*) from messages), 'conversation_members', (select count(*) from conversation_members),
      'database_bytes', pg_database_size(current_database()))")" \
    '{seconds: ($s * 10 | round / 10), user: $u, expected_total_unread: $unread} + $counts' >"$raw/seed.json"
  log "seeded in $(jq -r .seconds "$raw/seed.json") s: $(jq -c 'del(.seconds)' "$raw/seed.json")"
}
log "inbox list: seeding a fresh database"
SEED=seed cluster list
# Warms the database pool (all its connections, so that the backends exist when their pids
# are taken) and the caches, as on a server that has been answering for a while.
"$loadgen" inbox-list --url "$url" --user "$inbox_user" --requests 200 --concurrency "$list_connections" >/dev/null 2>&1 || true
echo "$(cut -d' ' -f1-3 /proc/loadavg)" >"$tmp/load-list"
jq -n --argjson g "$gateway_pid" --argjson p "$persister_pid" '{gateway: $g, persister: $p}' >"$raw/list-pids.json"
list=(inbox-list --url "$url" --user "$inbox_user" --limit 50 --expect-conversations "$conversations"
  --expect-total-unread "$expected_unread" --server-pid "$gateway_pid" --server-pid "$persister_pid")
pg_args=()
for p in $(backends "$db"); do pg_args+=(--server-pid "$p"); done
measured list-first "${list[@]}" --requests "$list_requests" "${pg_args[@]}"
measured list-walk "${list[@]}" --requests "$list_requests" --pages "$walk_pages" "${pg_args[@]}"
measured list-concurrent "${list[@]}" --requests "$list_concurrent" --concurrency "$list_connections" "${pg_args[@]}"
stop_configuration

jq -n --arg receipts "$(cat "$tmp/load-receipts")" --arg list "$(cat "$tmp/load-list")" \
  --arg at_end "$(cut -d' ' -f1-3 /proc/loadavg)" --argjson repeats "$repeats" --argjson rate "$rate" --argjson users "$users" \
  --argjson window "$window" --arg warmup "$warmup" --arg duration "$duration" --argjson pages "$walk_pages" \
  --argjson connections "$list_connections" --arg command "$command_line" \
  --argjson sustained_plain "${sustained_plain:-null}" --argjson sustained_read "${sustained_read:-null}" \
  --arg autovacuum "$autovacuum" --argjson worker_threads "$ROLE_WORKER_THREADS" \
  '{command: $command, load_before_receipts: $receipts, load_before_list: $list, load_at_end: $at_end, repeats: $repeats,
    rate: $rate, users: $users, window: $window, warmup: $warmup, duration: $duration, walk_pages: $pages,
    list_connections: $connections, sustained_plain: $sustained_plain, sustained_read: $sustained_read,
    autovacuum: $autovacuum, worker_threads: $worker_threads}' >"$raw/settings.json"

log "writing $out/INBOX.md"
RAW=$raw bash "$here/inbox-report.sh" >"$out/INBOX.md"
cat "$out/INBOX.md"
