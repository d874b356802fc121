#!/usr/bin/env bash
# The project's test command: Rust unit and integration tests, then the end-to-end suite (the
# official socket.io-client from npm against the real `chat` binary, all-in-one, as a cluster on
# NATS and Postgres, and as a cluster on three NATS servers), then the fault-injection group (on
# one NATS server, then on three).
# Needs: a Rust toolchain, Node.js >= 18 with npm, curl, jq and python3. Installs the npm packages (and
# the browser tests' headless Chromium) itself. Uses the machine's services: nats-server (on the
# PATH, and one listening at 127.0.0.1:4222) and Postgres at 127.0.0.1:5432 with psql; without
# them the cluster passes, the fault group and the scale and stages smokes skip with a loud warning, except
# under CI=true, where that is a failure. The scale smoke sets CPU limits through cgroup v1 when
# it can (root); without, it runs unlimited and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
# The build lives outside the clone so that fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chat-target}"

echo "== cargo build (release)"
cargo build --release --workspace --locked
echo "== cargo test"
cargo test --release --workspace --locked
echo "== end-to-end suite (socket.io-client): all-in-one, cluster, cluster on three NATS servers"
CHAT_BIN="$CARGO_TARGET_DIR/release/chat" bash tests/e2e/run.sh
echo "== fault injection and fuzz (cluster under load, on one NATS server and on three)"
CHAT_BIN="$CARGO_TARGET_DIR/release/chat" bash tests/e2e/run-faults.sh
echo "== load generator smoke (seconds): all-in-one server, rate and idle modes"
bash deploy/bench/smoke.sh
echo "== scale lab smoke (about a minute): 1 and 2 gateways, then persisters, each under a CPU share"
bash deploy/bench/scale.sh --quick --out "$(mktemp -d)"
echo "== stages smoke (seconds): where a send waits, from the roles' stage histograms"
python3 deploy/bench/stages.py selftest
bash deploy/bench/stages.sh --quick --out "$(mktemp -d)"
echo "== browser tests (headless Chromium): the test client page and the API docs"
CHAT_BIN="$CARGO_TARGET_DIR/release/chat" bash tests/browser/run.sh
echo "== README: its code blocks run as written, in a copy of the checkout (ports 3000-3001, 3100-3102; seconds)"
bash scripts/readme-snippets.sh
