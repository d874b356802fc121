#!/usr/bin/env python3
"""Runs the README's code blocks as they are written, and checks what they print.

Every fenced block of README.md carries a marker on the line before its fence:

    <!-- snippet: NAME -->           run by this script: NAME is one of CHECKS below
    <!-- snippet: skip (reason) -->  not run, for the reason given

A block without a marker, with an unknown name, or a name of CHECKS the README no longer has
fails the run: a new block is either checked here or says why it cannot be.

The blocks run in a copy of the checkout (see copy_checkout), in the order a
newcomer would type them, with a shell environment cleared of the server's settings (a
newcomer's shell has none). Shell blocks run under `bash -euo pipefail`, so a command that
fails fails the block. A comment line `# {...}` right after a command in a shell block is that
command's expected JSON output, abridged: every key shown must be there with the value shown
(any timestamp stands for any timestamp; an array's elements are matched in order); keys not
shown may be there too.

Usage: readme_snippets.py (run by scripts/readme-snippets.sh, which sets up the environment:
CARGO_TARGET_DIR, NODE_PATH to a socket.io-client).
Env: CI=true turns a missing NATS or Postgres (the cluster block) from a loud skip into a
failure; README_SNIPPETS_KEEP=1 keeps the copy and its logs.
"""

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CI = os.environ.get("CI", "").lower() == "true"
MARKER = re.compile(r"^<!--\s*snippet:\s*(?P<name>[\w-]+)\s*(?:\((?P<why>[^)]*)\))?\s*-->\s*$")
FENCE = re.compile(r"^(?P<fence>```+|~~~+)\s*(?P<lang>[\w-]*)")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
# What the server reads from its environment: cleared so the blocks see a newcomer's shell.
SERVER_ENV = re.compile(r"^(PORT|HOST|DATABASE_URL|NATS_URL|LOG_FORMAT|RUST_LOG|CHAT_\w+|OTEL_\w+)$")
# How long the first `cargo run` may take: seconds with a warm build, minutes from cold.
BUILD_TIMEOUT = 1800


class Failure(Exception):
    pass


class Skip(Exception):
    pass


def log(msg):
    print(f"readme: {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# The README's blocks


class Block:
    def __init__(self, line, lang, marker, why, text):
        self.line, self.lang, self.marker, self.why, self.text = line, lang, marker, why, text

    def __str__(self):
        return f"README.md:{self.line} ({self.lang or 'no language'}, {self.marker or 'no marker'})"


def parse_blocks(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    blocks, i, previous = [], 0, None
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            if lines[i].strip():
                previous = lines[i].strip()
            i += 1
            continue
        start, fence, lang = i + 1, m["fence"], m["lang"]
        body, i = [], i + 1
        while i < len(lines) and not lines[i].startswith(fence):
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise Failure(f"README.md:{start}: the code block is never closed")
        mm = MARKER.match(previous or "")
        name, why = (mm["name"], (mm["why"] or "").strip()) if mm else (None, "")
        blocks.append(Block(start, lang, name, why, "\n".join(body) + "\n"))
        previous, i = None, i + 1
    return blocks


def expected_outputs(block):
    """The `# {...}` lines of a shell block, parsed, in order."""
    found = []
    for raw in block.text.split("\n"):
        s = raw.strip()
        if s.startswith("# {"):
            try:
                found.append(json.loads(s[2:]))
            except json.JSONDecodeError as e:
                raise Failure(f"{block}: the expected output {s!r} is not JSON: {e}")
    return found


def matches(expected, actual, where="$"):
    """None when `actual` has everything `expected` shows, else the first difference."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return f"{where}: expected an object, got {json.dumps(actual)}"
        for k, v in expected.items():
            if k not in actual:
                return f"{where}: no key {k!r} in {json.dumps(actual)}"
            d = matches(v, actual[k], f"{where}.{k}")
            if d:
                return d
        return None
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return f"{where}: expected at least {len(expected)} elements, got {json.dumps(actual)}"
        for n, v in enumerate(expected):
            d = matches(v, actual[n], f"{where}[{n}]")
            if d:
                return d
        return None
    if isinstance(expected, str) and TIMESTAMP.match(expected):
        if isinstance(actual, str) and TIMESTAMP.match(actual):
            return None
        return f"{where}: expected a timestamp, got {json.dumps(actual)}"
    if expected != actual or type(expected) is not type(actual):
        return f"{where}: expected {json.dumps(expected)}, got {json.dumps(actual)}"
    return None


def check_json_output(block, stdout):
    """Every `# {...}` of the block against the JSON lines the block printed, in order."""
    expected = expected_outputs(block)
    if not expected:
        raise Failure(f"{block}: no expected output (`# {{...}}`) to check")
    # A JSON value at the start of a line; `curl -s` ends it without a newline, so a server
    # log line may follow on the same line.
    printed, decoder = [], json.JSONDecoder()
    for raw in stdout.split("\n"):
        if raw.startswith("{"):
            try:
                printed.append(decoder.raw_decode(raw)[0])
            except json.JSONDecodeError:
                pass
    if len(printed) != len(expected):
        raise Failure(f"{block}: printed {len(printed)} JSON lines, the README shows {len(expected)}:\n{stdout}")
    for want, got in zip(expected, printed):
        d = matches(want, got)
        if d:
            raise Failure(f"{block}: the output is not what the README shows: {d}")


# ---------------------------------------------------------------------------------------------
# Processes: every block runs in a session of its own, killed as a whole at the end.


class Runner:
    def __init__(self, workdir, env):
        self.workdir, self.env = workdir, env
        self.sessions = []  # (name, Popen)
        self.logs = os.path.join(workdir, ".snippet-logs")
        os.makedirs(self.logs, exist_ok=True)

    def start(self, name, argv, env=None, stdin_text=None):
        out = open(os.path.join(self.logs, f"{name}.log"), "w")
        p = subprocess.Popen(
            argv,
            cwd=self.workdir,
            env=env or self.env,
            stdin=subprocess.PIPE if stdin_text is not None else subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            text=True,
        )
        if stdin_text is not None:
            p.stdin.write(stdin_text)
            p.stdin.close()
        self.sessions.append((name, p))
        return p

    def output(self, name):
        with open(os.path.join(self.logs, f"{name}.log"), encoding="utf-8", errors="replace") as f:
            return f.read()

    def bash(self, name, block, env=None):
        """Starts a shell block; its background jobs stay in its session after it ends."""
        return self.start(name, ["bash", "-euo", "pipefail", "-c", block.text], env=env)

    def wait(self, name, p, timeout):
        try:
            code = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise Failure(f"{name}: still running after {timeout} s:\n{self.tail(name)}")
        if code != 0:
            raise Failure(f"{name}: exit {code}:\n{self.tail(name)}")

    def tail(self, name, chars=4000):
        text = self.output(name)
        return text[-chars:]

    def stop(self, name=None):
        """SIGTERM to each session's processes (all, or `name`'s), SIGKILL to what is left."""
        chosen = [(n, p) for n, p in self.sessions if name is None or n == name]
        for _, p in chosen:
            signal_group(p.pid, signal.SIGTERM)
        deadline = time.time() + 15
        for _, p in chosen:
            while session_alive(p) and time.time() < deadline:
                time.sleep(0.1)
            signal_group(p.pid, signal.SIGKILL)
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        self.sessions = [(n, p) for n, p in self.sessions if (n, p) not in chosen]


def signal_group(pgid, sig):
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def session_alive(p):
    """Whether a process of p's session is left; p itself is reaped first, so that an ended
    block's shell (a zombie until then) does not count."""
    p.poll()
    return group_alive(p.pid)


def session_commands(pgid):
    """The command names (Linux's /proc/PID/comm) of the live processes of a process group."""
    names = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            names.add(comm)
    return names


def group_alive(pgid):
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def port_free(port):
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) != 0


def require_free(*ports):
    busy = [p for p in ports if not port_free(p)]
    if busy:
        raise Failure(f"port(s) {busy} already in use: the README's snippets need them free")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_status(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, OSError):
        return None


def wait_ready(runner, name, p, ports, timeout):
    """Waits until /readyz answers 200 on every port; fails early if the block's session died."""
    deadline = time.time() + timeout
    pending = list(ports)
    while pending:
        pending = [port for port in pending if http_status(f"http://127.0.0.1:{port}/readyz") != 200]
        if not pending:
            return
        if not session_alive(p):
            raise Failure(f"{name}: its processes ended before port(s) {pending} were ready:\n{runner.tail(name)}")
        if time.time() > deadline:
            raise Failure(f"{name}: port(s) {pending} not ready after {timeout} s:\n{runner.tail(name)}")
        time.sleep(0.5)


def wait_output(runner, name, p, patterns, timeout):
    """Waits until the output of `name` matches every regular expression of `patterns`."""
    deadline = time.time() + timeout
    while True:
        text = runner.output(name)
        missing = [pat for pat in patterns if not re.search(pat, text, re.M)]
        if not missing:
            return text
        if p.poll() is not None or time.time() > deadline:
            why = f"exit {p.returncode}" if p.poll() is not None else f"{timeout} s"
            raise Failure(f"{name}: after {why}, no line matching {missing}; it printed:\n{text[-4000:]}")
        time.sleep(0.2)


# ---------------------------------------------------------------------------------------------
# The checks, one per marker name, in the order they run.


def check_server(runner, block, state):
    """The first command: the all-in-one server on port 3000, its SQLite database in ./data."""
    require_free(3000)
    p = runner.bash("server", block)
    wait_ready(runner, "server", p, [3000], BUILD_TIMEOUT)
    data = os.path.join(runner.workdir, "data")
    if not os.path.isdir(data) or not os.listdir(data):
        raise Failure(f"{block}: the server is ready but ./data holds no database")
    runner.stop("server")
    state["built"] = True
    if not port_free(3000):
        raise Failure(f"{block}: port 3000 still in use after the server was stopped")


def check_shell(runner, block, state):
    """`cargo run --release &`, then the curl that opens a conversation; the server stays up."""
    require_free(3000)
    p = runner.bash("shell", block)
    # The block's wait for the port never ends if the server does not start (a build that
    # fails, a port taken): fail as soon as neither cargo nor the server is left.
    timeout = 300 if state.get("built") else BUILD_TIMEOUT
    deadline = time.time() + timeout
    missing = 0  # polls in a row without them: a moment at the start, before bash forks
    while p.poll() is None:
        missing = 0 if {"cargo", "chat"} & session_commands(p.pid) else missing + 1
        if missing >= 6:
            raise Failure(f"the server of `cargo run --release &` ended:\n{runner.tail('shell')}")
        if time.time() > deadline:
            raise Failure(f"still running after {timeout} s:\n{runner.tail('shell')}")
        time.sleep(0.5)
    runner.wait("shell", p, 0)
    check_json_output(block, runner.output("shell"))
    state["server"] = True


def check_client(runner, block, state):
    """The Node.js snippet in two shells: as written (user 1), then as its comment says (user 2)."""
    if not state.get("server"):
        raise Failure(f"{block}: runs against the server the shell block starts, which failed or did not run")
    first = block.text
    second, n = re.subn(r"^const me = 1;", "const me = 2;", first, flags=re.M)
    if n != 1:
        raise Failure(f"{block}: no line `const me = 1;` to change for the second shell")
    node = ["node", "--input-type=commonjs", "-"]
    one = runner.start("client-1", node, stdin_text=first)
    wait_output(runner, "client-1", one, [r"^ack \{ success: true, conversationId: 1 \}", r"^message-sent "], 20)
    two = runner.start("client-2", node, stdin_text=second)
    wait_output(runner, "client-2", two, [r"^ack \{ success: true, conversationId: 1 \}", r"^message-sent "], 20)
    # The first shell sees the second's arrival, typing and message.
    wait_output(
        runner,
        "client-1",
        one,
        [r"^user:online \{ userId: 2 \}", r"^user-typing \{ conversationId: 1, userId: 2, isTyping: true \}",
         r"^receive-message \{[^}]*content: 'Hello from 2!'"],
        20,
    )
    for name in ("client-1", "client-2"):
        if re.search(r"^(error|message-error) ", runner.output(name), re.M):
            raise Failure(f"{block}: {name} got an error:\n{runner.output(name)}")
    runner.stop("client-1")
    runner.stop("client-2")


def check_history(runner, block, state):
    """The history of the conversation the two shells wrote in."""
    if not state.get("server"):
        raise Failure(f"{block}: runs against the server the shell block starts, which failed or did not run")
    p = runner.bash("history", block)
    runner.wait("history", p, 30)
    check_json_output(block, runner.output("history"))
    runner.stop("shell")  # the server of `cargo run --release &`
    state["server"] = False
    if not port_free(3000):
        raise Failure("port 3000 still in use after the README's server was stopped")


CLUSTER_PORTS = [3000, 3001, 3100, 3101, 3102]


def check_cluster(runner, block, state):
    """The local cluster: five roles ready, and a message across the two gateways.

    On a NATS server of its own and a database of its own, through the NATS_URL and
    DATABASE_URL the block honours, so it neither needs nor touches a `chat` database or the
    shared NATS server's streams."""
    nats_bin = shutil.which("nats-server") or ("/usr/sbin/nats-server" if os.access("/usr/sbin/nats-server", os.X_OK) else None)
    if not nats_bin:
        raise Skip("no nats-server binary")
    pg_base = "postgres://postgres@127.0.0.1:5432"
    if not shutil.which("psql"):
        raise Skip("no psql")
    probe = subprocess.run(["psql", f"{pg_base}/postgres", "-Atqc", "select 1"], capture_output=True, text=True, timeout=15)
    if probe.returncode != 0:
        raise Skip(f"Postgres at 127.0.0.1:5432 (user postgres, no password) is not reachable: {probe.stderr.strip()}")
    require_free(*CLUSTER_PORTS)

    nats_port = free_port()
    store = os.path.join(runner.workdir, ".snippet-nats")
    nats = runner.start("nats", [nats_bin, "-js", "-a", "127.0.0.1", "-p", str(nats_port), "-sd", store])
    deadline = time.time() + 20
    while port_free(nats_port):
        if nats.poll() is not None or time.time() > deadline:
            raise Failure(f"private nats-server did not start:\n{runner.tail('nats')}")
        time.sleep(0.1)
    db = f"chat_readme_{secrets.token_hex(4)}"
    subprocess.run(["psql", f"{pg_base}/postgres", "-qc", f"create database {db}"], check=True, capture_output=True)
    state["database"] = (pg_base, db)

    env = dict(runner.env, NATS_URL=f"nats://127.0.0.1:{nats_port}", DATABASE_URL=f"{pg_base}/{db}")
    p = runner.bash("cluster", block, env=env)
    runner.wait("cluster", p, BUILD_TIMEOUT)  # the block starts the roles in the background and ends
    wait_ready(runner, "cluster", p, CLUSTER_PORTS, 90)
    probe = runner.start("cluster-check", ["node", "--input-type=module", "-"], stdin_text=CROSS_GATEWAY_CHECK)
    wait_output(runner, "cluster-check", probe, [r"^delivered across gateways: Hello across$"], 30)
    runner.stop("cluster-check")
    runner.stop("cluster")


# User 1 on the gateway at 3000, user 2 on the one at 3001: 2 gets what 1 sends.
CROSS_GATEWAY_CHECK = r"""
import { createRequire } from 'node:module';
const { io } = createRequire(process.cwd() + '/')('socket.io-client');
const post = await fetch('http://127.0.0.1:3001/api/chats/conversations', {
  method: 'POST', headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ sender_id: 1, receiver_id: 2 }),
});
const conversation = await post.json();
if (!post.ok) throw new Error(`POST: ${post.status} ${JSON.stringify(conversation)}`);
const join = (port, userId) => new Promise((resolve, reject) => {
  const s = io(`http://127.0.0.1:${port}/chat`, { query: { userId } });
  s.on('error', (e) => reject(new Error(JSON.stringify(e))));
  s.emit('join-conversation', { conversationId: conversation.id }, (ack) =>
    ack.success ? resolve(s) : reject(new Error(JSON.stringify(ack))));
});
const a = await join(3000, 1);
const b = await join(3001, 2);
const got = new Promise((resolve) => b.on('receive-message', resolve));
a.on('message-error', (e) => { console.error('message-error', e); process.exit(1); });
a.emit('send-message', { sender_id: 1, conversation_id: conversation.id, message_type: 'text', content: 'Hello across' });
const message = await got;
console.log(`delivered across gateways: ${message.content}`);
a.close(); b.close();
"""

CHECKS = {"server": check_server, "shell": check_shell, "client": check_client, "history": check_history, "cluster": check_cluster}


# ---------------------------------------------------------------------------------------------


def copy_checkout(dest):
    """The checkout's files as the working tree has them, the ones git ignores (target/,
    data/, node_modules/) left out: in CI, HEAD, what a fresh clone holds. Untracked files
    are kept so that a local run compiles what scripts/test.sh compiled. Modification times
    are kept too: cargo's fingerprints then match that build, and the README's `cargo`
    commands reuse it instead of rebuilding every crate of the workspace (minutes) into the
    shared target directory."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout
    for rel in files.decode().split("\0"):
        if not rel:
            continue
        src = os.path.join(REPO, rel)
        if not os.path.lexists(src):
            continue  # deleted in the working tree
        dst = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst, follow_symlinks=False)


def clean_env(workdir):
    env = {k: v for k, v in os.environ.items() if not SERVER_ENV.match(k)}
    env["PWD"] = workdir
    return env


def main():
    readme = os.path.join(REPO, "README.md")
    blocks = parse_blocks(readme)
    problems = []
    for b in blocks:
        if b.marker is None:
            problems.append(f"{b}: no `<!-- snippet: NAME -->` or `<!-- snippet: skip (why) -->` before the fence")
        elif b.marker == "skip" and not b.why:
            problems.append(f"{b}: a skipped block says why: `<!-- snippet: skip (why) -->`")
        elif b.marker != "skip" and b.marker not in CHECKS:
            problems.append(f"{b}: no check named {b.marker!r} (known: {', '.join(CHECKS)})")
    named = [b.marker for b in blocks if b.marker in CHECKS]
    for name in CHECKS:
        if named.count(name) != 1:
            problems.append(f"README.md has {named.count(name)} blocks marked `snippet: {name}`, not one")
    if problems:
        for p in problems:
            log(f"FAIL {p}")
        log("FAILED: every code block of the README is run here or marked as skipped, with why")
        return 1

    workdir = tempfile.mkdtemp(prefix="chat-readme-")
    runner = Runner(workdir, clean_env(workdir))
    state = {}
    results, status = [], 0

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    try:
        copy_checkout(workdir)
        log(f"running the README's blocks in a copy of the checkout ({len(blocks)} blocks)")
        for b in blocks:
            if b.marker == "skip":
                results.append(f"skip  {b} ({b.why})")
                continue
            started = time.time()
            log(f"== {b}")
            try:
                CHECKS[b.marker](runner, b, state)
                results.append(f"ok    {b} ({time.time() - started:.0f} s)")
            except Skip as e:
                if CI:
                    status = 1
                    results.append(f"FAIL  {b}: {e} (CI=true: a missing service is a failure)")
                else:
                    results.append(f"SKIP  {b}: {e}")
                    log("!" * 80)
                    log(f"!! {b} SKIPPED: {e}")
                    log("!" * 80)
            except Failure as e:
                status = 1
                results.append(f"FAIL  {b}")
                log(f"FAIL {e}" if str(e).startswith(str(b)) else f"FAIL {b}: {e}")
                runner.stop()  # a block that failed may leave a server that the next would meet
                state["server"] = False
    except KeyboardInterrupt as e:
        status = 130
        results.append(f"interrupted ({e})")
    finally:
        runner.stop()
        if "database" in state:
            base, db = state["database"]
            subprocess.run(["psql", f"{base}/postgres", "-qc", f"drop database if exists {db} with (force)"], capture_output=True)
        if os.environ.get("README_SNIPPETS_KEEP") == "1":
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    for r in results:
        log(r)
    log("passed" if status == 0 else "FAILED")
    return status


if __name__ == "__main__":
    sys.exit(main())
