# Helpers shared by the benchmarks (run.sh, inbox.sh) and the CI smoke (smoke.sh); source it.

# The server limits lifted for load: one load generator is many users on one address, each
# sending faster than a person would.
LOAD_LIMITS=(CHAT_SEND_RATE=100000 CHAT_SEND_BURST=100000 CHAT_JOIN_RATE=100000
  CHAT_MAX_CONNECTIONS_PER_ADDRESS=100000 CHAT_MAX_CONNECTIONS_PER_USER=100)

# Worker threads of each cluster role (`--worker-threads`): on the benchmark box two cores are
# shared by five or more processes, none of which needs a whole core, and every thread more
# costs wake-ups (ARCHITECTURE.md, Performance). The all-in-one process keeps its default, one
# per core: it carries every role. Override with BENCH_WORKER_THREADS.
ROLE_WORKER_THREADS=${BENCH_WORKER_THREADS:-1}

# binaries REPO: sets chat and loadgen to $CHAT_BIN and $LOADGEN_BIN, building in REPO
# (`cargo build --release --locked`, in $CARGO_TARGET_DIR, default ~/.cache/chat-target, which
# it exports) whichever of the two is not given.
binaries() {
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}
  chat=${CHAT_BIN:-}
  loadgen=${LOADGEN_BIN:-}
  if [[ -z $chat || -z $loadgen ]]; then
    local packages=()
    if [[ -z $chat ]]; then packages+=(-p chat); chat=$CARGO_TARGET_DIR/release/chat; fi
    if [[ -z $loadgen ]]; then packages+=(-p chat-loadgen); loadgen=$CARGO_TARGET_DIR/release/chat-loadgen; fi
    echo "== build ${packages[*]}" >&2
    (cd "$1" && cargo build --release --locked "${packages[@]}")
  fi
}

# Prints a TCP port that is free on 127.0.0.1 right now.
free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

# wait_http URL SECONDS: waits until URL answers 2xx; fails after SECONDS.
wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null "$url"; do
    if ((SECONDS >= deadline)); then
      echo "no answer from $url after $2 s" >&2
      return 1
    fi
    sleep 0.2
  done
}

# stop_pids PID...: SIGTERM, then SIGKILL after 10 s, for processes this script started.
stop_pids() {
  local pid
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "$@"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}

# start NAME CMD...: a background process of the caller's current configuration, its output in
# $tmp/NAME.log; its pid in $last and added to the caller's `started` array.
start() {
  local name=$1
  shift
  "$@" >"$tmp/$name.log" 2>&1 &
  last=$!
  started+=("$last")
}

# stop_configuration: stops every process `start` started, and empties `started`.
stop_configuration() {
  if ((${#started[@]})); then stop_pids "${started[@]}"; fi
  started=()
}

# start_nats DIR: a `nats-server -js` of the caller's own on a free port, its store in DIR (a
# shared NATS is left alone); sets nats_pid and nats_url. NATS_SERVER_BIN picks the binary.
start_nats() {
  local bin=${NATS_SERVER_BIN:-$(command -v nats-server || echo /usr/sbin/nats-server)} port
  port=$(free_port)
  mkdir -p "$1"
  "$bin" -a 127.0.0.1 -p "$port" -js -sd "$1" >"$1.log" 2>&1 &
  nats_pid=$!
  for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.2; done
  nats_url=nats://127.0.0.1:$port
}

# cpu_ticks PID...: user + system clock ticks the processes have used so far, summed over those
# still alive (getconf CLK_TCK per second).
cpu_ticks() {
  local files=() pid
  for pid in "$@"; do [[ -r /proc/$pid/stat ]] && files+=("/proc/$pid/stat"); done
  if ((${#files[@]} == 0)); then echo 0; return; fi
  # The command name (field 2) may hold spaces: fields are counted after its ")".
  awk '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }' "${files[@]}" 2>/dev/null || echo 0
}

# box_ticks: "busy total" clock ticks of the whole machine so far (/proc/stat).
box_ticks() {
  awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9; exit }' /proc/stat
}
