#!/usr/bin/env bash
# The scale lab: does adding gateways add capacity, and adding persister replicas? On one box,
# more processes only add contention, so every replica of the tier under test gets the same
# small CPU share (a cgroup v1 CFS quota: what a container CPU limit is in Kubernetes), and the
# rest (the other tier, NATS, Postgres, the load generator) runs unlimited. Writes SCALE.md and
# the raw JSON of every step (raw-scale/) to the output directory. See README.md here.
#
# Usage: deploy/bench/scale.sh [--quick] [--out DIR] [--gateway-cpu CORES] [--persister-cpu CORES]
#                              [--gateways "1 2 4 8"] [--persisters "1 2 4"]
#   --quick          gateways "1 2", persisters "1 2", 2-second steps, at most 3 steps per
#                    configuration: proves the script runs (CI), not for numbers. Without a
#                    writable cgroup v1 cpu controller it runs without limits (loudly).
#   --out DIR        where SCALE.md and raw-scale/ go (default: this directory).
#   --gateway-cpu    CPU share of each gateway in experiment 1, in cores (default 0.03).
#   --persister-cpu  CPU share of each persister replica in experiment 2 (default 0.05).
#   --gateways       gateway counts of experiment 1 (an empty list skips it).
#   --persisters     persister counts of experiment 2 (an empty list skips it).
# Experiment 1: for each N, N limited gateways carrying users (200 each), plus one limited
# gateway with no socket (its CPU per cluster message is the "foreign cost"), one persister and
# presence unlimited. Experiment 2: P limited persister replicas, 2 unlimited gateways (400
# users). Each configuration: a fresh database and NATS server, then open-loop steps of
# `chat-loadgen rate` searching the highest rate delivered with p99 < 100 ms and nothing lost.
# Exit status: 0; 1 when a step lost, duplicated or reordered a message, or a configuration
# could not be measured at all; 2 on bad usage, no cgroup limits outside --quick, or no
# nats-server or Postgres (--quick outside CI=true skips then, with a warning, and exits 0).
# Env: PG_URL (default postgres://postgres@127.0.0.1:5432; fresh databases are created and
#      dropped there), NATS_SERVER_BIN, CARGO_TARGET_DIR, SCALE_ARRIVAL (default even: the
#      loadgen's --arrival, used when the loadgen has it), CHAT_BATCH_MAX, CHAT_BATCH_LINGER and
#      the persister's other settings (passed to the roles as they are; SCALE.md lists them),
#      SCALE_NO_BUILD=1 (use the binaries as built), SCALE_START_GATEWAYS and
#      SCALE_START_PERSISTERS (msg/s: the first configuration's first step, instead of a
#      closed-loop estimate), SCALE_CGROUP_ROOT (default /sys/fs/cgroup; a path without cgroups
#      tries the no-limits path).
# Needs: root (cgroup v1 cpu and cpuacct at /sys/fs/cgroup), cargo, node, curl, jq, awk, psql,
#        nats-server.
set -euo pipefail
export LC_ALL=C # decimal points in $EPOCHREALTIME and awk
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
source "$here/lib.sh"

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
quick=0
out=$here
gateway_cpu=0.03
persister_cpu=0.05
gateway_counts=
persister_counts=
args_given=("$@")
while (($#)); do
  case $1 in
    --quick) quick=1 ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --gateway-cpu) gateway_cpu=${2:?--gateway-cpu needs a number}; shift ;;
    --persister-cpu) persister_cpu=${2:?--persister-cpu needs a number}; shift ;;
    --gateways) gateway_counts=${2?--gateways needs a list}; gateways_set=1; shift ;;
    --persisters) persister_counts=${2?--persisters needs a list}; persisters_set=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument $1 (see -h)" >&2; exit 2 ;;
  esac
  shift
done
# As JSON numbers (".1" is not one).
gateway_cpu=$(awk -v c="$gateway_cpu" 'BEGIN { printf "%g", c }')
persister_cpu=$(awk -v c="$persister_cpu" 'BEGIN { printf "%g", c }')
if ((quick)); then
  [[ -n ${gateways_set:-} ]] || gateway_counts="1 2"
  [[ -n ${persisters_set:-} ]] || persister_counts="1 2"
  warmup=1s duration=2s drain=3s max_steps=3 idle_probe_s=1 closed_window=2
else
  [[ -n ${gateways_set:-} ]] || gateway_counts="1 2 4 8"
  [[ -n ${persisters_set:-} ]] || persister_counts="1 2 4"
  warmup=3s duration=8s drain=5s max_steps=8 idle_probe_s=3 closed_window=8
fi
nproc=$(nproc)
for v in "$gateway_cpu" "$persister_cpu"; do
  if ! awk -v c="$v" -v n="$nproc" 'BEGIN { exit !(c ~ /^[0-9]*\.?[0-9]+$/ && c > 0 && c <= n) }'; then
    echo "a CPU share must be a number of cores in (0, $nproc]: $v" >&2
    exit 2
  fi
done
for n in $gateway_counts $persister_counts; do
  [[ $n =~ ^[1-9][0-9]?$ ]] || { echo "a replica count must be 1..99: $n" >&2; exit 2; }
done

users_per_gateway=200     # experiment 1: users per loaded gateway (user i on gateway i mod N)
persister_gateways=2      # experiment 2: unlimited gateways in front of the persisters
persister_users=400       # experiment 2: users
# --quick: half as many (opening conversations asks a limited persister, ~25 ms each).
if ((quick)); then users_per_gateway=100 persister_users=200; fi
p99_limit_ms=100          # "sustained": p99 delivery under this ...
min_delivered=0.95        # ... and at least this share of the target delivered
step_down=0.88            # a failed step: the next one 12 % lower
step_up=1.10              # after the first pass: one step 10 % higher
# The first open-loop step, as a share of the closed loop's throughput (closed_window
# unanswered sends per user; 2 in --quick, whose drain is then short): a throttled tier
# delivers the closed loop's thousands of unanswered sends in huge batches at seconds of
# latency. What gateways sustain under 100 ms measured ~0.35 of it here; persisters ~0.15 (an
# overloaded step then brings the next one down to what it delivered).
estimate_factor=0.4
min_rate=20               # msg/s; the search stops below it
setup_parallel=4          # conversations opened, and users joined, at once (see run_step)
# The default shares, measured on the 2-vCPU benchmark box. Gateways, 0.03 core: one limited to
# 0.1 core sustained ~2,200 msg/s, so 8 would ask ~18,000 msg/s of NATS, Postgres, the
# persister and the load generator, more than the box has; at 0.05 core ~980 msg/s, and 8
# gateways at 4,800 msg/s already took 1.64 cores; at 0.03 core ~360-470 msg/s each, and 8 at
# 2,900 msg/s took 1.13-1.23 cores (everything included). Persisters, 0.05 core: at 0.1 core
# (10 ms period) one replica sustained 5,800 msg/s, and 4 of them saturated the box (1.95
# cores) at any rate from 9,400 msg/s up; at 0.03 core (33 ms) the throttling alone kept the
# p99 over 100 ms at every rate tried; 0.05 (20 ms) keeps 4 replicas at 8,300 msg/s in 1.43
# cores, with a p99 floor of ~100-250 ms set by the throttling (see README.md).
secs() { echo "${1%s}"; }
step_timeout=$(($(secs "$warmup") + $(secs "$duration") + 150)) # setup, drain and margin included

# The CFS period. The kernel's default, 100 ms, would let a throttled replica spend its whole
# quota in a burst and then stall for most of 100 ms: stalls of that size land directly in the
# p99 delivery latency that decides "sustained" (100 ms), so the lab would measure the
# throttling instead of the capacity. With 10 ms, a replica waits at most ~10 ms for its next
# slice. The kernel refuses quotas under 1 ms, so a share below 0.1 core gets a longer period
# (1 ms / share): with the defaults, 1 ms every 33 ms for gateways (0.03 core) and every 20 ms
# for persisters (0.05 core).
period_us() { awk -v c="$1" 'BEGIN { p = 10000; if (c * p < 1000) p = int(1000 / c + 0.999); print p }'; }
quota_us() { awk -v c="$1" -v p="$2" 'BEGIN { printf "%d", c * p + 0.5 }'; }

pg=${PG_URL:-postgres://postgres@127.0.0.1:5432}
nats_server=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}
chat=$CARGO_TARGET_DIR/release/chat
loadgen=$CARGO_TARGET_DIR/release/chat-loadgen
for tool in jq awk curl psql node timeout; do
  command -v "$tool" >/dev/null || { echo "scale.sh needs $tool" >&2; exit 2; }
done
# Without nats-server or a reachable Postgres there is nothing to measure. The smoke the test
# command runs (--quick) then skips, loudly, like the tests that need those services, except
# under CI=true, where their absence is a failure; a full run always fails.
missing() {
  if ((quick)) && [[ ${CI:-} != true ]]; then
    printf '\n!!! SKIPPING the scale lab smoke: %s\n\n' "$1" >&2
    exit 0
  fi
  echo "scale.sh: $1" >&2
  exit 2
}
[[ -x $nats_server ]] || missing "it needs nats-server (NATS_SERVER_BIN)"
psql "$pg/postgres" -qAtc 'select 1' >/dev/null 2>&1 || missing "it needs Postgres at $pg (PG_URL)"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

run_id=$(date +%s)_$$
tag=scale_$run_id
tmp=$(mktemp -d)
raw=$out/raw-scale
mkdir -p "$raw"
rm -f "$raw"/*.json "$raw/commands.txt"
command="deploy/bench/scale.sh${args_given[*]:+ ${args_given[*]}}"
echo "$command" >"$raw/commands.txt"
log() { echo "== $(date -u +%H:%M:%S) $*" >&2; }

# ---- cgroup v1: one cpu group (the quota) and one cpuacct group (CPU time in ns) per replica,
# under the cgroups this script runs in, named chat-scale-<run>/<label>-<replica>.
cg_path() { awk -F: -v c="$1" '{ n = split($2, a, ","); for (i = 1; i <= n; i++) if (a[i] == c) { print $3; exit } }' /proc/self/cgroup; }
cg_mount=${SCALE_CGROUP_ROOT:-/sys/fs/cgroup}
cpu_root=$cg_mount/cpu$(cg_path cpu)
acct_root=$cg_mount/cpuacct$(cg_path cpuacct)
cpu_root=${cpu_root%/}/chat-scale-$run_id
acct_root=${acct_root%/}/chat-scale-$run_id
limits=0
cg_probe() { # true when a quota can be set and a process moved; leaves the run's roots behind
  mkdir -p "$cpu_root/probe" "$acct_root" 2>/dev/null &&
    echo 10000 >"$cpu_root/probe/cpu.cfs_period_us" 2>/dev/null &&
    echo 1000 >"$cpu_root/probe/cpu.cfs_quota_us" 2>/dev/null &&
    [[ -w $cpu_root/probe/cgroup.procs && -r $acct_root/cpuacct.usage ]]
}
if cg_probe; then
  rmdir "$cpu_root/probe"
  limits=1
else
  rmdir "$cpu_root/probe" "$cpu_root" "$acct_root" 2>/dev/null || true
  cat >&2 <<EOF
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
!! scale.sh: cannot set CPU limits: cgroup v1 cpu/cpuacct is not writable at
!!   $cpu_root
!! (not root, or a cgroup v2-only machine). Without limits, replicas on one box only compete
!! for the same CPUs, and the lab proves nothing.
!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!
EOF
  if ((!quick)); then
    echo "scale.sh: refusing a full run without limits (--quick runs without them)" >&2
    exit 2
  fi
  echo "scale.sh: --quick: running WITHOUT CPU limits; SCALE.md says so" >&2
fi

# ---- state, and the cleanup of everything this script started
started=()   # processes of the current configuration
nats_pid=
sampler_pid=
loadgen_pid=
databases=()
cleanup() {
  if [[ -n $loadgen_pid ]]; then stop_pids "$loadgen_pid"; fi
  if [[ -n $sampler_pid ]]; then stop_pids "$sampler_pid"; fi
  if ((${#started[@]})); then stop_pids "${started[@]}"; fi
  if [[ -n $nats_pid ]]; then stop_pids "$nats_pid"; fi
  for db in "${databases[@]}"; do psql "$pg/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true; done
  for root in "$cpu_root" "$acct_root"; do
    if [[ -d $root ]]; then find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true; fi
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- the processes of a configuration
# start NAME CORES CMD...: a background process of the current configuration, named NAME (its
# log: $tmp/$label-NAME.log), in a cpuacct group of its own and, when CORES is not "-", in a
# cpu group limited to CORES. The wrapper joins the groups before it execs the command, so the
# process never runs outside them (and its pid, in $last, is the command's).
# Sets cpu_src[NAME]: where the sampler reads its CPU time (a cpuacct file, or pid:PID).
declare -A cpu_src=() limited_group=()
names=()
start() {
  local name=$1 cores=$2 files=()
  shift 2
  if ((limits)); then
    local acct=$acct_root/$label-$name
    mkdir "$acct"
    files+=("$acct/cgroup.procs")
    if [[ $cores != - ]]; then
      local cg=$cpu_root/$label-$name period
      period=$(period_us "$cores")
      mkdir "$cg"
      echo "$period" >"$cg/cpu.cfs_period_us"
      quota_us "$cores" "$period" >"$cg/cpu.cfs_quota_us"
      files+=("$cg/cgroup.procs")
      limited_group[$name]=$cg
    fi
  fi
  sh -c 'while [ "$1" != -- ]; do echo $$ >"$1" || exit 97; shift; done; shift; exec "$@"' sh "${files[@]}" -- "$@" \
    >"$tmp/$label-$name.log" 2>&1 &
  last=$!
  started+=("$last")
  names+=("$name")
  if ((limits)); then cpu_src[$name]=$acct_root/$label-$name/cpuacct.usage; else cpu_src[$name]=pid:$last; fi
}

stop_configuration() {
  if ((${#started[@]})); then stop_pids "${started[@]}"; fi
  started=()
  if [[ -n $nats_pid ]]; then stop_pids "$nats_pid"; nats_pid=; fi
  psql "$pg/postgres" -qc "drop database if exists $db with (force)" >/dev/null 2>&1 || true
  local d
  for d in "$cpu_root/$label-"* "$acct_root/$label-"*; do if [[ -d $d ]]; then rmdir "$d" 2>/dev/null || true; fi; done
  rm -rf "$tmp/nats-$label"
  names=()
  cpu_src=()
  limited_group=()
}

# start_nats: a private nats-server -js on free ports with a fresh store (a shared NATS is left
# alone), accounted like the roles.
start_nats() {
  nats_port=$(free_port)
  nats_mon=$(free_port)
  mkdir -p "$tmp/nats-$label"
  start nats - "$nats_server" -a 127.0.0.1 -p "$nats_port" -m "$nats_mon" -js -sd "$tmp/nats-$label"
  nats_pid=$last
  started=("${started[@]:0:${#started[@]}-1}") # stopped last, by stop_configuration
  wait_http "http://127.0.0.1:$nats_mon/healthz" 30
  nats_url=nats://127.0.0.1:$nats_port
}

# Messages waiting in the work queue (the stream inbound); empty when the cluster has drained.
queue_depth() {
  curl -sf "http://127.0.0.1:$nats_mon/jsz?streams=true" |
    jq '[.account_details[]?.stream_detail[]? | select(.name | endswith("inbound")) | .state.messages] | add // 0' 2>/dev/null || echo -1
}
wait_drained() { # up to 30 s, so that a step does not start behind the last one's backlog
  local deadline=$((SECONDS + 30)) d first
  first=$(queue_depth)
  while d=$(queue_depth); ((d > 0)); do
    if ((SECONDS >= deadline)); then log "work queue still holds $d messages after 30 s; going on"; return 0; fi
    sleep 0.5
  done
  if ((first > 0)); then log "waited $((30 - deadline + SECONDS)) s for $first messages in the work queue"; fi
  if ((first < 0)); then log "could not read the work queue's depth from NATS monitoring"; fi
  return 0
}

# ---- CPU sampling: every 100 ms, a line "time box-busy box-total cpu(name1) cpu(name2) ..."
# (box: jiffies of /proc/stat; names: ns). The loadgen's measured window is known only after
# it has run (setup time + 100 ms + warm-up, from its start), so the samples are interpolated
# to that window afterwards.
tick_ns=$((1000000000 / $(getconf CLK_TCK)))
# Sources: a cpuacct file, pid:PID PID... (summed), or db:NAME, the Postgres backends serving
# database NAME: their list is read again every second (a pool opens connections as the load
# grows), and a backend's CPU stays counted after it exits, so the sum never goes down.
sampler() {
  local srcs=("$@") line s v u n sy i w irq sirq st a p sum rounds=0
  declare -A lastv=() backend_ns=()
  while :; do
    if ((rounds++ % 10 == 0)); then
      for s in "${srcs[@]}"; do
        if [[ $s == db:* ]]; then
          for p in $(psql "$pg/postgres" -Atc "select pid from pg_stat_activity where datname = '${s#db:}'" 2>/dev/null); do
            backend_ns[$p]=${backend_ns[$p]:-0}
          done
        fi
      done
    fi
    read -r _ u n sy i w irq sirq st _ </proc/stat
    line="$EPOCHREALTIME $((u + n + sy + irq + sirq + st)) $((u + n + sy + irq + sirq + st + i + w))"
    for s in "${srcs[@]}"; do
      v=
      if [[ $s == pid:* ]]; then # pid:PID,PID...: summed
        sum=0
        for p in ${s#pid:}; do
          if read -r -a a <"/proc/$p/stat" 2>/dev/null; then sum=$((sum + (a[13] + a[14]) * tick_ns)); fi
        done
        v=$sum
      elif [[ $s == db:* ]]; then # one database's backends (a sampler serves one database)
        sum=0
        for p in "${!backend_ns[@]}"; do
          if read -r -a a <"/proc/$p/stat" 2>/dev/null; then backend_ns[$p]=$(((a[13] + a[14]) * tick_ns)); fi
          sum=$((sum + backend_ns[$p]))
        done
        v=$sum
      else
        read -r v <"$s" 2>/dev/null || v=
      fi
      [[ -n $v ]] || v=${lastv[$s]:-0}
      lastv[$s]=$v
      line+=" $v"
    done
    echo "$line"
    sleep 0.1
  done
}
# window_deltas FILE START END: the interpolated increase of every column over [START, END];
# prints "ok" or "short" (samples do not cover the window) first.
window_deltas() {
  awk -v ws="$2" -v we="$3" '
    NR == 1 { nf = NF }
    NF != nf { next } # the line the sampler was writing when it was stopped
    { n++; t[n] = $1; for (i = 2; i <= NF; i++) v[n, i] = $i }
    function at(x, i,   k) {
      if (x <= t[1]) return v[1, i]
      for (k = 2; k <= n; k++) if (t[k] >= x) return v[k-1, i] + (v[k, i] - v[k-1, i]) * (x - t[k-1]) / (t[k] - t[k-1])
      return v[n, i]
    }
    END {
      if (n < 2) { print "short"; exit }
      printf "%s", (t[1] <= ws && t[n] >= we) ? "ok" : "short"
      for (i = 2; i <= nf; i++) printf " %.0f", at(we, i) - at(ws, i)
      print ""
    }' "$1"
}
# throttle_sum GROUP...: "periods throttled throttled_ns" summed over the groups' cpu.stat.
throttle_sum() {
  local g p=0 t=0 ns=0 k v
  for g in "$@"; do
    while read -r k v; do
      case $k in nr_periods) p=$((p + v)) ;; nr_throttled) t=$((t + v)) ;; throttled_time) ns=$((ns + v)) ;; esac
    done <"$g/cpu.stat"
  done
  echo "$p $t $ns"
}

# cpu_ns NAME: the CPU time a started process has used so far, in ns.
cpu_ns() {
  local s=${cpu_src[$1]} a v
  if [[ $s == pid:* ]]; then
    read -r -a a <"/proc/${s#pid:}/stat" && echo $(((a[13] + a[14]) * tick_ns))
  else
    read -r v <"$s" && echo "$v"
  fi
}
# idle_rate NAME SECONDS: its CPU in ms per second over SECONDS of an idle cluster.
idle_rate() {
  local a b
  a=$(cpu_ns "$1")
  sleep "$2"
  b=$(cpu_ns "$1")
  awk -v a="$a" -v b="$b" -v s="$2" 'BEGIN { printf "%.4f", (b - a) / 1e6 / s }'
}

# ---- one step
ublock=0
bad=0 # a step lost, duplicated or reordered a message

# run_step NAME MODE RATE: one loadgen run (MODE rate at RATE msg/s, or max: the closed loop)
# against the current configuration; writes raw-scale/NAME.json (the loadgen's report) and
# NAME.cpu.json (CPU of every process, the box, throttling). True when the step passed.
run_step() {
  local name=$1 mode=$2 rate=$3 f=$raw/$1.json rc=0
  ublock=$((ublock + 1))
  # The set-up (conversations opened, users connected and joined: a query to the persisters
  # each) goes a few at a time: a throttled tier asked for dozens at once answers some after
  # the gateway's query timeout (5 s), and the step fails before it sends anything.
  local a=("$mode" "${url_args[@]}" --users "$users" --warmup "$warmup" --duration "$duration" --drain "$drain"
    --rest-parallel "$setup_parallel" --connect-concurrency "$setup_parallel" --user-base "$((ublock * 1000000))")
  if [[ $mode == rate ]]; then a+=(--rate "$rate" "${arrival_args[@]}"); else a+=(--window "$closed_window"); fi
  local p
  for p in "${tier_pids[@]}"; do a+=(--server-pid "$p"); done
  echo "chat-loadgen ${a[*]} --json raw-scale/$name.json" >>"$raw/commands.txt"
  wait_drained
  log "$label $name: $mode${rate:+ at $rate msg/s}"

  # Also the load generator (its own cpuacct group) and the Postgres backends of the database
  # (read from /proc: they belong to the shared server, whose processes are left where they are).
  local step_names=("${names[@]}" postgres) srcs=() n lg_wrap=()
  cpu_src[postgres]=db:$db
  if ((limits)); then
    mkdir -p "$acct_root/$label-loadgen"
    cpu_src[loadgen]=$acct_root/$label-loadgen/cpuacct.usage
    step_names+=(loadgen)
    lg_wrap=(sh -c 'echo $$ >"$1" && shift && exec "$@"' sh "$acct_root/$label-loadgen/cgroup.procs")
  fi
  for n in "${step_names[@]}"; do srcs+=("${cpu_src[$n]}"); done
  local groups=()
  for n in "${tier[@]}"; do if [[ -n ${limited_group[$n]:-} ]]; then groups+=("${limited_group[$n]}"); fi; done
  local th0=(0 0 0) th1=(0 0 0)
  if ((${#groups[@]})); then read -r -a th0 <<<"$(throttle_sum "${groups[@]}")"; fi
  sampler "${srcs[@]}" >"$tmp/samples" &
  sampler_pid=$!
  sleep 0.15
  local t0=$EPOCHREALTIME
  rm -f "$f"
  timeout -k 5 "$step_timeout" "${lg_wrap[@]}" "$loadgen" "${a[@]}" --json "$f" >"$tmp/$name.out" 2>&1 &
  loadgen_pid=$!
  wait "$loadgen_pid" || rc=$?
  loadgen_pid=
  sleep 0.25 # a sample after the window's end: the loadgen may exit right at it
  stop_pids "$sampler_pid"
  sampler_pid=
  if ((${#groups[@]})); then read -r -a th1 <<<"$(throttle_sum "${groups[@]}")"; fi
  if [[ ! -s $f ]]; then
    log "$label $name: loadgen exit $rc, no report:"
    tail -5 "$tmp/$name.out" >&2
    jq -n --arg name "$name" --argjson rc "$rc" '{name: $name, loadgen_exit: $rc, measured: false, pass: false}' >"$raw/$name.cpu.json"
    return 1
  fi

  # The measured window, and what every process spent in it.
  local ws we deltas
  ws=$(jq -r --argjson t0 "$t0" '$t0 + .setup_s + 0.1 + .warmup_s' "$f")
  we=$(jq -r --argjson ws "$ws" '$ws + .duration_s' "$f")
  read -r -a deltas <<<"$(window_deltas "$tmp/samples" "$ws" "$we")"
  local cpu_json='{}' i=3
  for n in "${step_names[@]}"; do
    cpu_json=$(jq -c --arg n "$n" --argjson ns "${deltas[$i]:-0}" '. + {($n): ($ns / 1e6)}' <<<"$cpu_json")
    i=$((i + 1))
  done
  jq -n --arg name "$name" --arg mode "$mode" --argjson rc "$rc" --arg covered "${deltas[0]}" \
    --argjson busy "${deltas[1]:-0}" --argjson total "${deltas[2]:-1}" --argjson nproc "$nproc" \
    --argjson cpu "$cpu_json" --argjson tier "$(printf '%s\n' "${tier[@]}" | jq -R . | jq -sc .)" \
    --arg foreign "$foreign" --argjson share "$tier_share" --argjson limits "$limits" \
    --argjson th0 "[$(IFS=,; echo "${th0[*]}")]" --argjson th1 "[$(IFS=,; echo "${th1[*]}")]" \
    --argjson p99 "$p99_limit_ms" --argjson min "$min_delivered" --slurpfile r "$f" '
    $r[0] as $r | ($r.throughput_delivered_per_s * $r.duration_s) as $msgs |
    ([$tier[] as $t | $cpu[$t] // 0] | add) as $own |
    (if $foreign == "" then null else $cpu[$foreign] end) as $fcpu |
    {
      name: $name, mode: $mode, loadgen_exit: $rc, measured: true,
      window_covered: ($covered == "ok"),
      rate_target: $r.rate_target, delivered_per_s: $r.throughput_delivered_per_s,
      messages_in_window: $msgs,
      p99_delivery_ms: $r.delivery_latency_ms.p99, p99_ack_ms: $r.ack_latency_ms.p99,
      lost: $r.lost, duplicated: $r.duplicated, out_of_order: $r.out_of_order,
      errors: ($r.errors + $r.message_errors + $r.unanswered),
      cpu_ms: $cpu,
      cores: ($cpu | map_values(. / ($r.duration_s * 1000) * 1000 | round / 1000)),
      others_cores: ([$cpu | to_entries[] | select(.key as $k | ($tier | index($k) | not) and $k != $foreign) | .value] | add / ($r.duration_s * 1000)),
      box_cores: (if $total > 0 then $busy / $total * $nproc else null end),
      tier_cpu_ms: $own,
      tier_cpu_ms_loadgen: (if $r.server_cpu_s == null then null else $r.server_cpu_s * 1000 end),
      own_ms_per_1000: (if $msgs > 0 then $own / $msgs * 1000 else null end),
      foreign_cpu_ms: $fcpu,
      foreign_ms_per_1000: (if $fcpu != null and $msgs > 0 then $fcpu / $msgs * 1000 else null end),
      tier_quota_used: (if $limits == 1 then $own / ($r.duration_s * 1000 * ($tier | length) * $share) else null end),
      throttled_periods_pct: (if ($th1[0] - $th0[0]) > 0 then ($th1[1] - $th0[1]) / ($th1[0] - $th0[0]) * 100 else null end),
      throttled_ms: (($th1[2] - $th0[2]) / 1e6),
      pass: ($mode == "rate" and $r.ok and $r.lost == 0 and $r.duplicated == 0 and $r.out_of_order == 0
             and $r.delivery_latency_ms.p99 < $p99 and $r.throughput_delivered_per_s >= $min * $r.rate_target)
    }' >"$raw/$name.cpu.json"
  local c=$raw/$name.cpu.json
  if jq -e '.lost + .duplicated + .out_of_order > 0' "$c" >/dev/null; then
    log "$label $name: LOST / DUPLICATED / OUT OF ORDER: $(jq -r '"\(.lost) / \(.duplicated) / \(.out_of_order)"' "$c")"
    bad=1
  fi
  log "$label $name: $(jq -r '"delivered \(.delivered_per_s | floor)/s, p99 delivery \(.p99_delivery_ms) ms, ack \(.p99_ack_ms) ms, box \(.box_cores * 100 | round / 100) cores, tier quota used \(if .tier_quota_used then (.tier_quota_used * 100 | round | tostring) + " %" else "–" end), " + (if .pass then "PASS" else "fail" end)' "$c")"
  jq -e .pass "$c" >/dev/null
}

# search KEY GUESS: open-loop steps from GUESS msg/s (0: first a closed-loop run, and
# estimate_factor of what it delivered), 12 % lower after each failure (lower still when the
# step delivered less) until one passes, then once 10 % higher; when the first step passes,
# 10 % higher each step until one fails. At most max_steps runs, the closed loop included.
# Writes raw-scale/KEY.summary.json.
search() {
  local key=$1 rate=$2 steps=0 s=0 best= up_tried=0 failed=0 bound=
  if ((rate <= 0)); then
    steps=1
    run_step "$key-estimate" max "" || true
    if [[ -s $raw/$key-estimate.json ]]; then
      rate=$(jq --argjson f "$estimate_factor" '.throughput_delivered_per_s * $f | floor' "$raw/$key-estimate.json")
    fi
    if ((rate <= 0)); then rate=$min_rate; fi
  fi
  while ((steps < max_steps)) && ((rate >= min_rate)); do
    steps=$((steps + 1)) s=$((s + 1))
    if run_step "$key-s$s" rate "$rate"; then
      best=$key-s$s
      if ((failed)); then # after stepping down: one step up, then stop
        ((up_tried)) && break
        up_tried=1
      fi # nothing failed yet: the guess was low, climb until a step fails
      rate=$(awk -v r="$rate" -v f="$step_up" 'BEGIN { printf "%d", r * f + 0.5 }')
    else
      failed=1
      bound=$key-s$s
      [[ -n $best ]] && break # the step up failed: the one below stands
      # 12 % lower, or lower still when the step delivered less than that: an overloaded open
      # loop delivers about what the configuration carries (at whatever latency).
      local delivered
      delivered=$(jq '.delivered_per_s // 0' "$raw/$key-s$s.cpu.json")
      rate=$(awk -v r="$rate" -v f="$step_down" -v d="$delivered" 'BEGIN { x = r * f; if (d > 0 && d * 0.95 < x) x = d * 0.95; printf "%d", x }')
    fi
  done
  jq -n --arg key "$key" --arg exp "$experiment" --argjson n "$count" --arg best "$best" --arg bound "$bound" \
    --argjson steps "$steps" --argjson share "$tier_share" --argjson replicas "${#tier[@]}" \
    --argjson users "$users" --argjson idle "${foreign_idle:-null}" --slurpfile all <(cat "$raw/$key"-*.cpu.json) '
    ($all | map(select(.name == $best)) | first) as $b |
    ($all | map(select(.name == $bound)) | first) as $f |
    {
      key: $key, experiment: $exp, n: $n, replicas: $replicas, share: $share, users: $users, steps: $steps,
      sustained_step: (if $best == "" then null else $best end),
      sustained_per_s: $b.delivered_per_s, rate_target: $b.rate_target,
      p99_delivery_ms: $b.p99_delivery_ms, p99_ack_ms: $b.p99_ack_ms,
      own_ms_per_1000: $b.own_ms_per_1000, foreign_ms_per_1000: $b.foreign_ms_per_1000,
      foreign_cpu_ms_per_s: (if $b.foreign_cpu_ms == null then null else $b.foreign_cpu_ms / ($b.messages_in_window / $b.delivered_per_s) end),
      foreign_idle_cpu_ms_per_s: $idle,
      tier_quota_used: $b.tier_quota_used, box_cores: $b.box_cores, throttled_periods_pct: $b.throttled_periods_pct,
      lost: ($all | map(.lost // 0) | add), duplicated: ($all | map(.duplicated // 0) | add),
      out_of_order: ($all | map(.out_of_order // 0) | add),
      measured_steps: ($all | map(select(.measured)) | length),
      # The most any open-loop step delivered intact, whatever its latency: a lower bound of what
      # the tier carries when the latency criterion is out of reach (a throttling floor, say).
      most_delivered: ($all | map(select(.measured and .mode == "rate" and .lost + .duplicated + .out_of_order + .errors == 0))
        | max_by(.delivered_per_s) | if . == null then null else {step: .name, delivered_per_s, rate_target, p99_delivery_ms} end),
      bounded_by: (if $f == null then (if $best == "" then "no step ran" else "no step failed within the step limit" end)
        elif ($f.measured | not) then "\($f.name): no report (loadgen exit \($f.loadgen_exit))"
        else "\($f.rate_target | floor)/s: " + ([
          (if $f.p99_delivery_ms >= 100 then "p99 \($f.p99_delivery_ms | round) ms" else empty end),
          (if $f.delivered_per_s < 0.95 * $f.rate_target then "delivered \($f.delivered_per_s / $f.rate_target * 100 | round) %" else empty end),
          (if ($f.lost + $f.duplicated + $f.out_of_order) > 0 then "lost/dup/ooo" else empty end),
          (if $f.errors > 0 then "\($f.errors) errors" else empty end)] | join(", ")) end)
    }' >"$raw/$key.summary.json"
  if [[ -z $best ]]; then log "$label: no step passed"; fi
  if jq -e '.measured_steps == 0' "$raw/$key.summary.json" >/dev/null; then
    log "$label: not one step could be measured"
    bad=1
  fi
  sustained_target=$(jq '.rate_target // 0 | floor' "$raw/$key.summary.json")
}

# start_cluster: fresh database and NATS, migrate, then the roles; the tier under test limited.
start_cluster() { # start_cluster GATEWAYS GATEWAY_CORES IDLE_GATEWAY(0/1) PERSISTERS PERSISTER_CORES
  local gateways=$1 gw_cores=$2 idle=$3 persisters=$4 ps_cores=$5 g
  db=${tag}_$label
  psql "$pg/postgres" -qc "create database $db" >/dev/null
  databases+=("$db")
  start_nats
  export NATS_URL=$nats_url DATABASE_URL=$pg/$db?sslmode=disable RUST_LOG=warn
  "$chat" migrate >"$tmp/$label-migrate.log" 2>&1 || { cat "$tmp/$label-migrate.log" >&2; return 1; }
  local health=()
  for ((g = 0; g < persisters; g++)); do
    local port
    port=$(free_port)
    start "persister$g" "$ps_cores" "$chat" persister --host 127.0.0.1 --port "$port"
    health+=("http://127.0.0.1:$port/readyz")
    persister_pids+=("$last")
  done
  port=$(free_port)
  start presence - "$chat" presence --host 127.0.0.1 --port "$port"
  health+=("http://127.0.0.1:$port/readyz")
  urls=()
  for ((g = 0; g < gateways + idle; g++)); do
    port=$(free_port)
    local name=gw$g
    ((g < gateways)) || name=gw-idle
    start "$name" "$gw_cores" env "${LOAD_LIMITS[@]}" "$chat" gateway --host 127.0.0.1 --port "$port" --gateway-id "$name"
    health+=("http://127.0.0.1:$port/readyz")
    if ((g < gateways)); then urls+=("http://127.0.0.1:$port"); gateway_pids+=("$last"); fi
  done
  unset NATS_URL DATABASE_URL RUST_LOG
  local h
  for h in "${health[@]}"; do wait_http "$h" 60; done
  url_args=()
  for h in "${urls[@]}"; do url_args+=(--url "$h"); done
  # Warm the connection pools and caches (not recorded).
  "$loadgen" rate "${url_args[@]}" --users 20 --rate 50 --warmup 0s --duration 1s --drain 2s \
    --user-base 999000000 >/dev/null 2>&1 || true
}

# ---- build
if [[ -z ${SCALE_NO_BUILD:-} ]]; then
  log "build"
  (cd "$repo" && cargo build --release -p chat -p chat-loadgen)
fi

# The binaries are copied, so that a build meanwhile (the target directory may be shared) does
# not change them between configurations.
mkdir -p "$tmp/bin"
cp "$chat" "$loadgen" "$tmp/bin/"
chat=$tmp/bin/chat loadgen=$tmp/bin/chat-loadgen
# Even arrivals (the loadgen's --arrival; SCALE_ARRIVAL=poisson for bursts), when it has them.
arrival=${SCALE_ARRIVAL:-even}
arrival_args=()
if "$loadgen" rate --help 2>/dev/null | grep -q -- '--arrival'; then
  arrival_args=(--arrival "$arrival")
else
  echo "scale.sh: this chat-loadgen has no --arrival; running without it" >&2
fi

# ---- experiment 1: gateways
log "cgroup limits: $( ((limits)) && echo "on, under $cpu_root" || echo OFF)"
experiment=gateways
sustained_target=0
first=0
for count in $gateway_counts; do
  label=gw$count
  log "configuration $label: N=$count gateways of $gateway_cpu core + 1 with no socket; persister, presence unlimited"
  persister_pids=() gateway_pids=()
  start_cluster "$count" "$gateway_cpu" 1 1 -
  tier=() tier_pids=("${gateway_pids[@]}")
  for ((g = 0; g < count; g++)); do tier+=("gw$g"); done
  foreign=gw-idle tier_share=$gateway_cpu users=$((users_per_gateway * count))
  # What the gateway with no socket spends with no traffic at all (heartbeats, timers): the
  # floor under its foreign cost.
  foreign_idle=$(idle_rate gw-idle "$idle_probe_s")
  guess=${SCALE_START_GATEWAYS:-0}
  if ((first > 0)); then guess=$((first * count)); fi
  search "$label" "$guess"
  if ((first == 0 && sustained_target > 0)); then first=$((sustained_target / count)); fi
  stop_configuration
done

# ---- experiment 2: persister replicas
experiment=persisters
first=0
for count in $persister_counts; do
  label=ps$count
  log "configuration $label: P=$count persisters of $persister_cpu core; $persister_gateways gateways, presence unlimited"
  persister_pids=() gateway_pids=()
  start_cluster "$persister_gateways" - 0 "$count" "$persister_cpu"
  tier=() tier_pids=("${persister_pids[@]}")
  for ((g = 0; g < count; g++)); do tier+=("persister$g"); done
  foreign= tier_share=$persister_cpu users=$persister_users foreign_idle=
  guess=${SCALE_START_PERSISTERS:-0}
  if ((first > 0)); then guess=$((first * count)); fi
  search "$label" "$guess"
  if ((first == 0 && sustained_target > 0)); then first=$((sustained_target / count)); fi
  stop_configuration
done

# ---- the report
# The persister's batching settings as this binary has them: its defaults (from --help) or the
# environment's values (passed through to every persister).
persister_settings() {
  local name def json='{}'
  while read -r name def; do
    if [[ -n ${!name:-} ]]; then
      json=$(jq -c --arg k "$name" --arg v "${!name} (set)" '. + {($k): $v}' <<<"$json")
    else
      json=$(jq -c --arg k "$name" --arg v "$def (default)" '. + {($k): $v}' <<<"$json")
    fi
  done < <("$chat" persister --help | grep -oE '\[env: (CHAT_BATCH[A-Z_]*|CHAT_PARTITIONS|CHAT_STORE_TIMEOUT)=[^]]*\] \[default: [^]]*\]' |
    sed -E 's/^\[env: ([A-Z_]+)=[^]]*\] \[default: ([^]]*)\]$/\1 \2/')
  echo "$json"
}
jq -n --argjson quick "$quick" --argjson limits "$limits" --arg gw "$gateway_cpu" --arg ps "$persister_cpu" \
  --argjson gwp "$(period_us "$gateway_cpu")" --argjson psp "$(period_us "$persister_cpu")" \
  --arg warmup "$warmup" --arg duration "$duration" --argjson steps "$max_steps" \
  --argjson upg "$users_per_gateway" --argjson pg "$persister_gateways" --argjson pu "$persister_users" \
  --arg arrival "${arrival_args[1]:-none (loadgen without --arrival)}" \
  --argjson persister "$(persister_settings)" \
  --argjson p99 "$p99_limit_ms" --arg command "$command" '
  {quick: ($quick == 1), limits: ($limits == 1), gateway_cpu: ($gw | tonumber), persister_cpu: ($ps | tonumber),
   gateway_period_us: $gwp, persister_period_us: $psp, warmup: $warmup, duration: $duration, max_steps: $steps,
   users_per_gateway: $upg, persister_gateways: $pg, persister_users: $pu, arrival: $arrival,
   persister_settings: $persister, p99_limit_ms: $p99, command: $command}' >"$raw/meta.json"
log "writing $out/SCALE.md"
RAW=$raw REPO=$repo bash "$here/scale-report.sh" >"$out/SCALE.md"
cat "$out/SCALE.md"
if ((bad)); then
  log "FAILED: a step lost, duplicated or reordered messages, or a configuration was not measured (see above)"
  exit 1
fi
