// End-to-end harness: runs the real `chat` binary and gives tests small helpers.
//
// Usage in a test file:
//
//   import { test, useServer } from './harness.mjs';   // `test`: see "Skipping" below
//   const srv = useServer();           // registers before/after/afterEach hooks
//   test('...', async () => {
//     const [a, b] = srv.users(2);     // user ids unique within this file
//     const conv = await srv.openConversation(a, b);
//     const sa = await srv.connect(a);
//     ...
//   });
//
// Binary: $CHAT_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/release/chat.
//
// Modes (env E2E_MODE):
//   single  (default) one all-in-one process: `chat --port P --data-dir D`.
//   cluster the same binary as separate processes over NATS JetStream and Postgres:
//           `chat persister`, `chat presence`, and two gateways (`gwa`, `gwb`), each with
//           its own port; a fresh database `chat_e2e_<hex>` and subject prefix `e2e_<hex>`
//           per test file, dropped / deleted (streams) after the file.
//           Needs NATS (JetStream) at 127.0.0.1:4222 and Postgres at 127.0.0.1:5432
//           (user postgres, trust auth, `psql` on PATH).
// The helper API is the same in both modes, so every test file runs in both. In cluster mode
// `connect(userId)` / `socket({userId})` pick the gateway by user id parity (odd → gateway A,
// even → gateway B; consecutive ids from `users()` thus sit on different gateways; force one
// with `opts.gateway` 0 or 1), and `api()` alternates between the gateways on every call.
// `srv.mode` is 'single' or 'cluster', `srv.gateways` the gateway base URLs (one in single
// mode). Cluster-only helpers: `killGateway(i)`, `restartGateway(i)`, `killRole(role)`,
// `restartRole(role)` with role 'persister' | 'presence' | 'gwa' | 'gwb'.
//
// Skipping: a file's tests are skipped (shown as "# SKIP <reason>" by the runner) when
//   - E2E_MODE=cluster and NATS or Postgres is not reachable (unless CI=true: then the
//     file fails loudly instead), or
//   - the file asked for one mode only, `useServer({ only: 'cluster' })`, and runs in the other.
// node:test cannot skip a test from a hook, so the decision is made when the file calls
// useServer() (NATS and Postgres are checked when this module loads, in cluster mode only) and
// reaches the tests through the `test` exported here: node:test's own `test` while the file
// runs, one that adds `{ skip: reason }` once it is skipped. So test files import `test` from
// './harness.mjs' (not 'node:test') and call useServer() before their first test().

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { test as nodeTest, before, after, afterEach } from 'node:test';
import { io } from 'socket.io-client';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');

const HEALTH_TIMEOUT_MS = 20_000;
const CLUSTER_HEALTH_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 5_000;
const LOG_LIMIT = 256 * 1024;

/** Where cluster mode expects its services (fixed: see the header). */
export const NATS_HOST = '127.0.0.1';
export const NATS_PORT = 4222;
export const PG_HOST = '127.0.0.1';
export const PG_PORT = 5432;
export const PG_USER = 'postgres';
/** Flags given to every cluster process: fast failure detection for the tests. */
const CLUSTER_FLAGS = ['--gateway-timeout', '3s', '--heartbeat-interval', '1s'];
/** Gateway ids, by index: connect(..., { gateway: 0 }) is `gwa`. */
const GATEWAY_IDS = ['gwa', 'gwb'];

export const USERID_ERROR = 'userId query parameter is required and must be a positive integer';

/** 'single' | 'cluster', from E2E_MODE. */
export const MODE = (() => {
  const raw = (process.env.E2E_MODE ?? '').trim();
  if (raw === '' || raw === 'single') return 'single';
  if (raw === 'cluster') return 'cluster';
  throw new Error(`E2E_MODE must be "single" or "cluster", not ${JSON.stringify(raw)}`);
})();

/** Why this file's tests are skipped, or null (see skipFile()). */
let skipReason = null;

/**
 * node:test's `test` itself, as long as the file runs; once useServer() decided to skip the
 * file, a `test` that registers every test with `{ skip: reason }` (the body never runs).
 * Exported as a live binding, so the switch reaches the test file, which must call
 * useServer() before its first test().
 */
export let test = nodeTest;

function skippingTest(name, options, fn) {
  if (typeof name === 'function') {
    fn = name;
    name = fn.name;
    options = {};
  } else if (typeof options === 'function') {
    fn = options;
    options = {};
  }
  return nodeTest(name, { ...options, skip: skipReason }, fn);
}
skippingTest.skip = skippingTest;
skippingTest.only = skippingTest;
skippingTest.todo = skippingTest;

function skipFile(reason) {
  skipReason = reason;
  test = skippingTest;
}

/** Path of the server binary under test. */
export function chatBinary() {
  if (process.env.CHAT_BIN) return path.resolve(process.env.CHAT_BIN);
  const target = process.env.CARGO_TARGET_DIR
    ? path.resolve(REPO, process.env.CARGO_TARGET_DIR)
    : path.join(REPO, 'target');
  return path.join(target, 'release', 'chat');
}

/** Asks the OS for a free TCP port on 127.0.0.1. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close((err) => (err ? reject(err) : resolve(port)));
    });
  });
}

/**
 * Resolves with the first argument of the next `event` on `socket`
 * (optionally the next one for which `filter(payload)` is true).
 */
export function once(socket, event, timeoutMs = 3000, filter = () => true) {
  return new Promise((resolve, reject) => {
    const onEvent = (...args) => {
      if (!filter(args[0])) return;
      cleanup();
      resolve(args[0]);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for "${event}" on ${label(socket)}`));
    }, timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      socket.off(event, onEvent);
    }
    socket.on(event, onEvent);
  });
}

/** Resolves with the first arguments of the next `count` `event`s on `socket`, in arrival order. */
export function collect(socket, event, count, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const onEvent = (payload) => {
      got.push(payload);
      if (got.length === count) {
        cleanup();
        resolve(got);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(
        `timed out after ${timeoutMs} ms: got ${got.length}/${count} "${event}" events on ${label(socket)}`,
      ));
    }, timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      socket.off(event, onEvent);
    }
    socket.on(event, onEvent);
  });
}

/** Fails if `event` (matching `filter`) arrives on `socket` within `ms`. */
export function expectNone(socket, event, ms = 300, filter = () => true) {
  return new Promise((resolve, reject) => {
    const onEvent = (payload) => {
      if (!filter(payload)) return;
      cleanup();
      reject(new assert.AssertionError({
        message: `unexpected "${event}" on ${label(socket)}: ${safeJson(payload)}`,
        actual: payload,
        expected: undefined,
        operator: 'expectNone',
      }));
    };
    const timer = setTimeout(() => {
      cleanup();
      resolve();
    }, ms);
    function cleanup() {
      clearTimeout(timer);
      socket.off(event, onEvent);
    }
    socket.on(event, onEvent);
  });
}

/** Records every incoming event on `socket` (name + first arg) until stopped. */
export function recordEvents(socket) {
  const events = [];
  const listener = (name, payload) => events.push({ name, payload });
  socket.onAny(listener);
  return {
    events,
    names: () => events.map((e) => e.name),
    stop: () => socket.offAny(listener),
  };
}

export function label(socket) {
  return socket?.__label ?? 'socket';
}

export function safeJson(v) {
  try {
    const s = JSON.stringify(v);
    return s && s.length > 500 ? `${s.slice(0, 500)}…` : s;
  } catch {
    return String(v);
  }
}

// ---------------------------------------------------------------------------------------------
// Server processes

/** Splits a stream into lines and hands each one to `sink` with `prefix` in front. */
function lineSplitter(prefix, sink) {
  let partial = '';
  return {
    write(chunk) {
      partial += chunk.toString();
      const lines = partial.split('\n');
      partial = lines.pop();
      for (const line of lines) sink(`${prefix}${line}\n`);
    },
    flush() {
      if (partial !== '') sink(`${prefix}${partial}\n`);
      partial = '';
    },
  };
}

/** One `chat` process (a role); can be killed and started again with the same arguments. */
class ServerProcess {
  constructor({ role, bin, args, env, port, log, onUnexpectedExit }) {
    Object.assign(this, { role, bin, args, env, port, log, onUnexpectedExit });
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.proc = null;
    this.exited = null;
    this.exitPromise = Promise.resolve();
    this.expectExit = false;
  }

  get alive() {
    return this.proc !== null && this.exited === null;
  }

  start() {
    this.exited = null;
    this.expectExit = false;
    const proc = spawn(this.bin, this.args, { env: this.env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const out = lineSplitter(`[${this.role}] `, this.log);
    const err = lineSplitter(`[${this.role}] `, this.log);
    proc.stdout.on('data', (c) => out.write(c));
    proc.stderr.on('data', (c) => err.write(c));
    this.log(`[harness] ${this.role}: started pid ${proc.pid}: chat ${this.args.join(' ')}\n`);
    this.exitPromise = new Promise((resolve) => {
      const onGone = (exited) => {
        if (this.proc !== proc || this.exited !== null) return resolve();
        out.flush();
        err.flush();
        this.exited = exited;
        this.log(`[harness] ${this.role}: exited ${JSON.stringify(exited)}${this.expectExit ? '' : ' (unexpected)'}\n`);
        resolve();
        if (!this.expectExit) this.onUnexpectedExit?.(this);
      };
      // 'close', not 'exit': by then the process's output has all been read.
      proc.on('close', (code, signal) => onGone({ code, signal }));
      proc.on('error', (e) => onGone({ error: e.message }));
    });
  }

  /** Sends `signal` and waits for the exit. */
  async kill(signal = 'SIGKILL') {
    if (!this.alive) return;
    this.expectExit = true;
    this.proc.kill(signal);
    await this.exitPromise;
  }

  /** SIGTERM, then SIGKILL after `graceMs`. */
  async stop(graceMs) {
    if (!this.alive) return;
    this.expectExit = true;
    this.proc.kill('SIGTERM');
    let timer;
    await Promise.race([this.exitPromise, new Promise((r) => { timer = setTimeout(r, graceMs); })]);
    clearTimeout(timer);
    if (this.alive) {
      this.log(`[harness] ${this.role}: still running ${graceMs} ms after SIGTERM; SIGKILL\n`);
      this.proc.kill('SIGKILL');
      await this.exitPromise;
    }
  }

  /** Synchronous last resort (process exit handler). */
  killNow() {
    if (this.alive) {
      try { this.proc.kill('SIGKILL'); } catch { /* already gone */ }
    }
  }
}

/** Polls GET /healthz of every process until each answers 200; fails early if one exits. */
async function waitHealthy(procs, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let stop = false;
  const one = async (p) => {
    let lastErr = 'no attempt';
    while (!stop) {
      if (!p.alive) throw new Error(`${p.role} exited during startup (${JSON.stringify(p.exited)})`);
      try {
        const res = await fetch(`${p.baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) return;
        lastErr = `status ${res.status}`;
      } catch (err) {
        lastErr = err.cause?.code ?? err.message;
      }
      if (Date.now() > deadline) {
        throw new Error(`${p.role}: GET ${p.baseUrl}/healthz did not return 200 within ${timeoutMs} ms (last: ${lastErr})`);
      }
      await sleep(100);
    }
  };
  try {
    await Promise.all(procs.map(one));
  } finally {
    stop = true;
  }
}

// ---------------------------------------------------------------------------------------------
// Cluster services: NATS and Postgres

/** Runs one SQL command with psql; resolves with { ok, code, stdout, stderr }. */
export function psql(sql, { database = 'postgres', timeoutMs = 15_000 } = {}) {
  return new Promise((resolve) => {
    let stdout = '';
    let stderr = '';
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      resolve({ stdout, stderr, ...r });
    };
    const child = spawn('psql', [
      '-h', PG_HOST, '-p', String(PG_PORT), '-U', PG_USER, '-d', database,
      '-X', '-q', '-t', '-v', 'ON_ERROR_STOP=1', '-c', sql,
    ], { env: { ...process.env, PGCONNECT_TIMEOUT: '5' }, stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish({ ok: false, code: null, stderr: `${stderr}psql timed out after ${timeoutMs} ms` });
    }, timeoutMs);
    child.stdout.on('data', (c) => { stdout += c; });
    child.stderr.on('data', (c) => { stderr += c; });
    child.on('error', (e) => finish({ ok: false, code: null, stderr: `cannot run psql: ${e.message}` }));
    child.on('exit', (code) => finish({ ok: code === 0, code }));
  });
}

/** Null when a JetStream-enabled NATS answers at NATS_HOST:NATS_PORT, else the problem. */
function natsProblem(timeoutMs = 3000) {
  return new Promise((resolve) => {
    const where = `NATS at ${NATS_HOST}:${NATS_PORT}`;
    let buf = '';
    let done = false;
    const s = net.connect({ host: NATS_HOST, port: NATS_PORT });
    const finish = (problem) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      s.destroy();
      resolve(problem);
    };
    const timer = setTimeout(() => finish(`${where}: no INFO line within ${timeoutMs} ms`), timeoutMs);
    s.on('error', (e) => finish(`${where}: ${e.code ?? e.message}`));
    s.on('data', (c) => {
      buf += c.toString();
      const nl = buf.indexOf('\r\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      if (!line.startsWith('INFO ')) return finish(`${where}: not a NATS server (got ${JSON.stringify(line.slice(0, 80))})`);
      let info = {};
      try { info = JSON.parse(line.slice(5)); } catch { /* checked below */ }
      return finish(info.jetstream ? null : `${where}: JetStream is not enabled (nats-server -js)`);
    });
  });
}

/** Problems that prevent cluster mode (empty when NATS and Postgres both answer). */
async function clusterDependencyProblems() {
  const [nats, pg] = await Promise.all([
    natsProblem(),
    psql('select 1', { timeoutMs: 10_000 }),
  ]);
  const problems = [];
  if (nats) problems.push(nats);
  if (!pg.ok) {
    problems.push(`Postgres at ${PG_HOST}:${PG_PORT} (psql -U ${PG_USER} -c 'select 1'): ${pg.stderr.trim().replace(/\s+/g, ' ') || `exit ${pg.code}`}`);
  }
  return problems;
}

/** Deletes the JetStream streams of a test run's subject prefix (stream, KV, object buckets). */
async function deleteStreams(prefix) {
  const { connect } = await import('nats');
  const nc = await connect({ servers: `${NATS_HOST}:${NATS_PORT}`, timeout: 5000, name: 'chat-e2e-cleanup' });
  const deleted = [];
  try {
    const jsm = await nc.jetstreamManager();
    const names = new Set([`${prefix}_inbound`, `KV_${prefix}_presence`]);
    for await (const si of jsm.streams.list()) {
      const n = si.config.name;
      if (n.startsWith(`${prefix}_`) || n.startsWith(`KV_${prefix}_`) || n.startsWith(`OBJ_${prefix}_`)) names.add(n);
    }
    for (const name of names) {
      try {
        await jsm.streams.delete(name);
        deleted.push(name);
      } catch (err) {
        const notFound = String(err.code) === '404' || err.api_error?.err_code === 10059;
        if (!notFound) throw err;
      }
    }
  } finally {
    await nc.close();
  }
  return deleted;
}

// ---------------------------------------------------------------------------------------------
// useServer

/**
 * Starts the server (one process, or a cluster: see the header) for the current test file
 * and returns a helper object. Registers node:test `before`, `afterEach` and `after` hooks.
 * `only: 'single' | 'cluster'` skips the file's tests in the other mode.
 */
export function useServer({ only } = {}) {
  if (only !== undefined && only !== 'single' && only !== 'cluster') {
    throw new Error(`useServer({ only }) must be 'single' or 'cluster', not ${JSON.stringify(only)}`);
  }
  if (only !== undefined && only !== MODE) {
    skipFile(`${only}-only tests; this run is E2E_MODE=${MODE} (run with E2E_MODE=${only})`);
  } else if (MODE === 'cluster' && clusterProblems.length > 0 && process.env.CI !== 'true') {
    skipFile(`SKIPPING cluster e2e: NATS/Postgres not reachable (${clusterProblems.join('; ')})`);
    const bar = '!'.repeat(78);
    process.stderr.write(
      `\n${bar}\n!!! ${skipReason}\n` +
      `!!! every test of ${path.basename(process.argv[1] ?? 'this file')} is skipped; ` +
      `start NATS (JetStream) and Postgres, or set CI=true to fail instead\n${bar}\n\n`,
    );
  }

  const h = {
    mode: MODE,
    port: 0, // single: the server's port; cluster: gateway A's
    baseUrl: '', // single: the server; cluster: gateway A
    gateways: [], // base URLs: one in single mode, [gwa, gwb] in cluster mode
    dataDir: '',
    dbName: '',
    prefix: '',
    procs: {}, // role → ServerProcess
    log: '',
    started: false,
    sockets: new Set(),
    failed: false,
    nextUser: 1000,
    rr: 0,
  };
  let dbCreated = false;
  let streamsPending = false;

  function appendLog(text) {
    h.log += text;
    if (h.log.length > LOG_LIMIT) h.log = h.log.slice(h.log.length - LOG_LIMIT);
  }

  function where() {
    return MODE === 'cluster'
      ? `cluster; ${Object.values(h.procs).map((p) => `${p.role} :${p.port}`).join(', ')}; database ${h.dbName}, prefix ${h.prefix}`
      : `port ${h.port}, data dir ${h.dataDir}`;
  }

  function dumpLog(why) {
    process.stderr.write(
      `\n----- chat server output (${why}; ${where()}) -----\n` +
      `${h.log || '(empty)'}\n----- end of chat server output -----\n`,
    );
  }

  const procList = () => Object.values(h.procs);

  /** Processes that died on their own since the last afterEach, reported there as a failure. */
  const deaths = [];
  const onUnexpectedExit = (p) => {
    if (!h.started) return; // startup reports it itself
    h.failed = true;
    deaths.push(`${p.role} ${JSON.stringify(p.exited)}`);
    dumpLog(`${p.role} exited unexpectedly`);
  };

  const killOnExit = () => {
    for (const p of procList()) p.killNow();
    if (dbCreated) {
      spawnSync('psql', ['-h', PG_HOST, '-p', String(PG_PORT), '-U', PG_USER, '-d', 'postgres', '-X', '-q',
        '-c', `drop database if exists ${h.dbName} with (force)`], { stdio: 'ignore', timeout: 5000 });
    }
  };

  function childEnv(extra) {
    const env = { ...process.env, RUST_LOG: 'warn', NO_COLOR: '1', ...extra };
    // The all-in-one mode must not pick up a cluster configuration from the environment.
    if (MODE === 'single') {
      for (const k of ['NATS_URL', 'DATABASE_URL', 'CHAT_SUBJECT_PREFIX', 'CHAT_GATEWAY_ID']) delete env[k];
    }
    return env;
  }

  async function distinctPorts(n) {
    const ports = new Set();
    while (ports.size < n) ports.add(await freePort());
    return [...ports];
  }

  function addProc(role, bin, args, env, port) {
    h.procs[role] = new ServerProcess({ role, bin, args, env, port, log: appendLog, onUnexpectedExit });
    return h.procs[role];
  }

  async function startSingle(bin) {
    [h.port] = await distinctPorts(1);
    h.baseUrl = `http://127.0.0.1:${h.port}`;
    h.gateways = [h.baseUrl];
    h.dataDir = await mkdtemp(path.join(os.tmpdir(), 'chat-e2e-'));
    const p = addProc('chat', bin, ['--port', String(h.port), '--data-dir', h.dataDir], childEnv(), h.port);
    p.start();
    await waitHealthy([p], HEALTH_TIMEOUT_MS);
  }

  async function startCluster(bin) {
    const rand = randomBytes(4).toString('hex');
    h.dbName = `chat_e2e_${rand}`;
    h.prefix = `e2e_${rand}`;
    const created = await psql(`create database ${h.dbName}`);
    if (!created.ok) throw new Error(`cannot create database ${h.dbName}: ${created.stderr.trim()}`);
    dbCreated = true;
    streamsPending = true;
    const env = childEnv({
      NATS_URL: `nats://${NATS_HOST}:${NATS_PORT}`,
      DATABASE_URL: `postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${h.dbName}`,
      CHAT_SUBJECT_PREFIX: h.prefix,
    });
    const [pPers, pPres, pA, pB] = await distinctPorts(4);
    const persister = addProc('persister', bin, ['persister', '--port', String(pPers), ...CLUSTER_FLAGS], env, pPers);
    const presence = addProc('presence', bin, ['presence', '--port', String(pPres), ...CLUSTER_FLAGS], env, pPres);
    const gws = [[GATEWAY_IDS[0], pA], [GATEWAY_IDS[1], pB]].map(([id, port]) => addProc(
      id, bin, ['gateway', '--port', String(port), '--gateway-id', id, ...CLUSTER_FLAGS], env, port,
    ));
    h.gateways = gws.map((g) => g.baseUrl);
    h.port = pA;
    h.baseUrl = h.gateways[0];

    const deadline = Date.now() + CLUSTER_HEALTH_TIMEOUT_MS;
    persister.start();
    presence.start();
    await waitHealthy([persister, presence], deadline - Date.now());
    for (const g of gws) g.start();
    await waitHealthy(gws, Math.max(1000, deadline - Date.now()));
  }

  async function teardown() {
    const graceMs = MODE === 'cluster' ? 3000 : 5000;
    await Promise.all(procList().map((p) => p.stop(graceMs)));
    if (dbCreated) {
      const dropped = await psql(`drop database if exists ${h.dbName} with (force)`);
      if (dropped.ok) dbCreated = false;
      else process.stderr.write(`[harness] warning: cannot drop database ${h.dbName}: ${dropped.stderr.trim()}\n`);
    }
    if (streamsPending) {
      try {
        await deleteStreams(h.prefix);
        streamsPending = false;
      } catch (err) {
        process.stderr.write(`[harness] warning: cannot delete the NATS streams of prefix ${h.prefix}: ${err.message}\n`);
      }
    }
    if (h.dataDir) await rm(h.dataDir, { recursive: true, force: true });
  }

  before(async () => {
    if (skipReason !== null) return;
    const bin = chatBinary();
    if (!existsSync(bin)) {
      throw new Error(
        `server binary not found at ${bin}; build it with \`cargo build --release\` ` +
        '(set CARGO_TARGET_DIR or CHAT_BIN to point elsewhere)',
      );
    }
    if (MODE === 'cluster' && clusterProblems.length > 0) {
      // Not skipped above, so CI=true: fail loudly.
      throw new Error(
        `cluster e2e cannot run: NATS/Postgres not reachable (${clusterProblems.join('; ')}). ` +
        'CI=true, so this fails instead of skipping.',
      );
    }
    process.once('exit', killOnExit);
    try {
      if (MODE === 'cluster') await startCluster(bin);
      else await startSingle(bin);
    } catch (err) {
      dumpLog(`startup failed: ${err.message}`);
      await teardown();
      throw err;
    }
    h.started = true;
  });

  afterEach((t) => {
    if (t && t.passed === false) h.failed = true;
    for (const s of h.sockets) {
      s.removeAllListeners();
      s.offAny();
      s.disconnect();
    }
    h.sockets.clear();
    if (deaths.length > 0) {
      const gone = deaths.splice(0);
      throw new Error(`server process exited unexpectedly during this test: ${gone.join(', ')}`);
    }
  });

  after(async () => {
    h.started = false;
    await teardown();
    process.off('exit', killOnExit);
    if (h.failed && h.log !== '') dumpLog('a test in this file failed');
  });

  function ensureStarted() {
    if (skipReason !== null) {
      throw new Error(
        `this file is skipped (${skipReason}), but this test still ran: import { test } from ` +
        "'./harness.mjs' (not 'node:test') and call useServer() before the first test()",
      );
    }
    if (h.gateways.length === 0) throw new Error('the server is not running (did the before hook fail?)');
  }

  function requireCluster(what) {
    if (MODE !== 'cluster') throw new Error(`${what} needs E2E_MODE=cluster`);
    ensureStarted();
  }

  /** Gateway index of `userId` in cluster mode: odd → 0 (A), even → 1 (B); else 0. */
  const gatewayOf = (userId) => {
    if (userId === undefined || userId === null || userId === '') return 0;
    const n = Number(userId);
    if (!Number.isInteger(n)) return 0;
    return Math.abs(n) % 2 === 1 ? 0 : 1;
  };

  function gatewayUrl(i) {
    if (i !== 0 && i !== 1) throw new Error(`gateway must be 0 or 1, not ${JSON.stringify(i)}`);
    return h.gateways[Math.min(i, h.gateways.length - 1)];
  }

  /**
   * One HTTP request. In cluster mode the gateway alternates on every call (round-robin)
   * unless `gateway` (0 or 1) is given.
   */
  const api = async (method, urlPath, body, { raw = false, headers = {}, gateway } = {}) => {
    ensureStarted();
    const base = gateway === undefined ? h.gateways[h.rr++ % h.gateways.length] : gatewayUrl(gateway);
    const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(10_000) };
    if (body !== undefined) {
      init.body = raw ? body : JSON.stringify(body);
      if (!Object.keys(init.headers).some((k) => k.toLowerCase() === 'content-type')) {
        init.headers['content-type'] = 'application/json';
      }
    }
    const res = await fetch(`${base}${urlPath}`, init);
    const text = await res.text();
    let parsed = text;
    try { parsed = text === '' ? null : JSON.parse(text); } catch { /* keep text */ }
    return { status: res.status, body: parsed, headers: res.headers, text, url: `${base}${urlPath}` };
  };

  /**
   * Creates a socket for `/chat` without waiting for anything. `query` is
   * passed as-is (use `{}` for "no userId"). `opts.gateway` (0 or 1) picks the gateway in
   * cluster mode (default: by the parity of a numeric query.userId, else gateway A); the
   * other options go to socket.io-client.
   */
  const socket = (query, opts = {}) => {
    ensureStarted();
    const { gateway, ...ioOpts } = opts;
    const gi = gateway ?? gatewayOf(query?.userId);
    const base = gatewayUrl(gi);
    const s = io(`${base}/chat`, {
      query,
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      ...ioOpts,
    });
    const via = MODE === 'cluster' ? `, ${GATEWAY_IDS[gi]}` : '';
    s.__label = `socket(userId=${query?.userId ?? '-'}, ${(ioOpts.transports ?? ['websocket']).join('+')}${via})`;
    s.__gateway = gi;
    h.sockets.add(s);
    return s;
  };

  /** A connected socket for `userId` (rejects on connect_error / timeout). Options: see socket(). */
  const connect = (userId, opts = {}) => {
    const s = socket({ userId }, opts);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`user ${userId} did not connect within ${CONNECT_TIMEOUT_MS} ms (${label(s)})`));
      }, CONNECT_TIMEOUT_MS);
      const onConnect = () => { cleanup(); resolve(s); };
      const onError = (err) => { cleanup(); reject(new Error(`user ${userId} connect_error: ${err.message} (${label(s)})`)); };
      const onDisconnect = (reason) => { cleanup(); reject(new Error(`user ${userId} disconnected while connecting: ${reason} (${label(s)})`)); };
      function cleanup() {
        clearTimeout(timer);
        s.off('connect', onConnect);
        s.off('connect_error', onError);
        s.off('disconnect', onDisconnect);
      }
      s.on('connect', onConnect);
      s.on('connect_error', onError);
      s.on('disconnect', onDisconnect);
    });
  };

  /** `n` user ids never used before in this file. */
  const users = (n) => Array.from({ length: n }, () => h.nextUser++);

  /** POST /api/chats/conversations; asserts 200/201 and returns the conversation. */
  const openConversation = async (a, b) => {
    const res = await api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: b });
    assert.ok(
      res.status === 201 || res.status === 200,
      `POST /api/chats/conversations {${a}, ${b}} → ${res.status} ${safeJson(res.body)}`,
    );
    return res.body;
  };

  /** Joins `conversationId` with an ack; asserts success. */
  const join = async (s, conversationId) => {
    const ack = await s.timeout(3000).emitWithAck('join-conversation', { conversationId });
    assert.deepEqual(ack, { success: true, conversationId }, `join-conversation ack on ${label(s)}`);
  };

  /** Sends a message and resolves with the `message-sent` payload (fails on `message-error`). */
  const send = (s, senderId, conversationId, content, messageType = 'text', timeoutMs = 3000) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no message-sent within ${timeoutMs} ms on ${label(s)}`));
      }, timeoutMs);
      const onSent = (m) => { cleanup(); resolve(m); };
      const onError = (e) => { cleanup(); reject(new Error(`unexpected message-error on ${label(s)}: ${safeJson(e)}`)); };
      function cleanup() {
        clearTimeout(timer);
        s.off('message-sent', onSent);
        s.off('message-error', onError);
      }
      s.on('message-sent', onSent);
      s.on('message-error', onError);
      s.emit('send-message', {
        sender_id: senderId, conversation_id: conversationId, message_type: messageType, content,
      });
    });

  /** GET the message history of a conversation; asserts 200. */
  const history = async (conversationId, query = '') => {
    const res = await api('GET', `/api/chats/conversations/${conversationId}/messages${query}`);
    assert.equal(res.status, 200, `history of ${conversationId}: ${res.status} ${safeJson(res.body)}`);
    return res.body;
  };

  const roleProc = (role) => {
    const p = h.procs[role];
    if (!p) throw new Error(`unknown role ${JSON.stringify(role)} (have: ${Object.keys(h.procs).join(', ')})`);
    return p;
  };

  /** Cluster: sends `signal` (default SIGKILL) to a role's process and waits for it to exit. */
  const killRole = async (role, signal = 'SIGKILL') => {
    requireCluster('killRole');
    await roleProc(role).kill(signal);
  };

  /**
   * Cluster: restarts a role with the same arguments (port, gateway id), SIGKILLing it first
   * if it is still running, and waits for its /healthz.
   */
  const restartRole = async (role) => {
    requireCluster('restartRole');
    const p = roleProc(role);
    await p.kill('SIGKILL');
    p.start();
    try {
      await waitHealthy([p], CLUSTER_HEALTH_TIMEOUT_MS);
    } catch (err) {
      dumpLog(`restart of ${role} failed: ${err.message}`);
      throw err;
    }
  };

  Object.assign(h, {
    api, socket, connect, users, openConversation, join, send, history,
    once, collect, expectNone, recordEvents,
    /** Gateway index (0 = A, 1 = B) that connect(userId) uses in cluster mode. */
    gatewayOf,
    /** True while every server process is running. */
    isAlive: () => procList().length > 0 && procList().every((p) => p.alive),
    killRole,
    restartRole,
    /** Cluster: SIGKILLs gateway `i` (0 = A, 1 = B). */
    killGateway: (i) => killRole(GATEWAY_IDS[i] ?? `gateway ${i}`, 'SIGKILL'),
    /** Cluster: restarts gateway `i` on the same port with the same id; waits for health. */
    restartGateway: (i) => restartRole(GATEWAY_IDS[i] ?? `gateway ${i}`),
    /** Role names of the gateways, by index. */
    gatewayIds: MODE === 'cluster' ? [...GATEWAY_IDS] : [],
    /**
     * Writes a raw Socket.IO EVENT packet for /chat (`dataJson` is the JSON
     * text of the packet's data array), bypassing the client encoder.
     */
    rawEmit: (s, dataJson) => s.io.engine.write(`2/chat,${dataJson}`),
  });
  return h;
}

/** What keeps cluster mode from running here (checked once per test file, in cluster mode). */
const clusterProblems = MODE === 'cluster' ? await clusterDependencyProblems() : [];
