# Helpers shared by the benchmark (run.sh) and the CI smoke (smoke.sh); source it.

# The server limits lifted for load: one load generator is many users on one address, each
# sending faster than a person would.
LOAD_LIMITS=(CHAT_SEND_RATE=100000 CHAT_SEND_BURST=100000 CHAT_JOIN_RATE=100000
  CHAT_MAX_CONNECTIONS_PER_ADDRESS=100000 CHAT_MAX_CONNECTIONS_PER_USER=100)

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
