// End-to-end harness, the `useServer` fixture: starts the whole deployment of a test file, one
// all-in-one process or a cluster (modes, and skipping: see settings.mjs), and gives its tests
// helpers.
//
// The helper API is the same in both modes, so every test file runs in both. In cluster mode
// `connect(userId)` / `socket({userId})` pick the gateway by user id parity (odd → gateway A,
// even → gateway B; consecutive ids from `users()` thus sit on different gateways; force one
// with `opts.gateway` 0 or 1), and `api()` alternates between the gateways on every call.
// `srv.mode` is 'single' or 'cluster', `srv.gateways` the gateway base URLs (one in single
// mode). Cluster-only helpers: `killGateway(i)`, `restartGateway(i)`, `killRole(role)`,
// `restartRole(role)` with role 'persister' | 'presence' (| 'presence2' …) | 'gwa' | 'gwb', and `roleUrl(role)`,
// the base URL of a role's own port (its /healthz, /metrics).
//
// Cluster-only options of useServer(), for fault-injection tests (all off by default):
//   ownNats: true  the cluster runs on a `nats-server` of its own (`nats-server -a 127.0.0.1
//                  -p <free port> -js -sd <temp dir>`, binary from PATH or $NATS_SERVER_BIN)
//                  instead of the shared one on 4222, so it may be stopped (with
//                  E2E_NATS_SERVERS=3 every file has its own three, and these work for all):
//                  `srv.restartNats({ signal, downMs })` stops it, every server of it at once
//                  (SIGTERM or SIGKILL), waits `downMs`, starts them again on the same ports with
//                  the same store directories and waits until they accept connections with
//                  JetStream and agree on a meta leader (or in two steps: `srv.stopNats(signal)`,
//                  `srv.startNats()`). One server of three: `srv.stopNatsNode(i, signal)`,
//                  `srv.startNatsNode(i)`; `await srv.natsStreamLeader(stream)` is the index of
//                  the server leading a stream (default: the work queue's). `srv.natsUrl` is
//                  what the roles get (the URLs, comma-separated), `srv.natsNodes` the
//                  processes. The store directories are removed at the end.
//   pgProxy: true  the roles reach Postgres through a TCP proxy in this process (their
//                  DATABASE_URL names the proxy's port, with sslmode=disable; `psql()` still
//                  uses the real port);
//                  `srv.pgOutage(ms)` cuts every proxied connection and refuses new ones
//                  (accepts and resets them) for `ms`, then serves again; with
//                  `{ atCommit: true }` it begins just after a write has committed in
//                  Postgres (a COMMIT, or an INSERT outside a transaction), holding back
//                  the answer (the client cannot know it was committed);
//                  `srv.pgHoldNextCommit()` holds back the answer to the next such commit
//                  until its `release()` (a role caught mid-batch, its data committed).
//   natsProxy: true each gateway reaches NATS through a TCP proxy of its own in this process
//                  (one per NATS server; the servers then do not advertise their own addresses to
//                  clients, or a gateway would learn a way around its proxies);
//                  `srv.natsPartition(i, ms)` cuts gateway i off from NATS for `ms` (its
//                  connection reset, reconnections refused), the other roles unaffected.
//   presenceReplicas: n  runs n presence replicas (roles 'presence', 'presence2', ...), each on a
//                  port of its own; one of them holds the lease and announces.
//   flags: [...]   extra command-line flags for every cluster role, after the harness's own
//                  (e.g. ['--store-timeout', '4s']; every setting is a global flag).
//   env: {...}     extra environment variables for every cluster role (e.g. the OTEL_* ones
//                  of span export).
// The server output is printed when a test of the file fails, or always with E2E_SHOW_LOG=1;
// the server processes log at RUST_LOG=warn, or at $E2E_RUST_LOG (e.g. chat_gateway=info,warn).

import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { before, after, afterEach } from 'node:test';
import { io } from 'socket.io-client';
import {
  NATS_HOST, NATS_PORT, PG_HOST, PG_PORT, PG_USER, NATS_SERVERS, STREAM_REPLICAS, MODE,
  HEALTH_TIMEOUT_MS, CLUSTER_HEALTH_TIMEOUT_MS, CONNECT_TIMEOUT_MS, LOG_LIMIT, CLUSTER_FLAGS, GATEWAY_IDS,
  skipReason, skipFile, chatBinary,
} from './settings.mjs';
import { once, firstOf, collect, expectNone, recordEvents, label, safeJson } from './events.mjs';
import { ServerProcess, waitHealthy, freePort } from './processes.mjs';
import {
  psql, clusterDependencyProblems, natsServerBinary, natsServerProblem, waitNatsNodesReady,
  startTcpProxy, deleteStreams,
} from './services.mjs';

/**
 * Starts the server (one process, or a cluster: see settings.mjs) for the current test file
 * and returns a helper object. Registers node:test `before`, `afterEach` and `after` hooks.
 * `only: 'single' | 'cluster'` skips the file's tests in the other mode. `ownNats` and
 * `pgProxy` (cluster mode only, so use them with `only: 'cluster'`): see the header.
 */
export function useServer({
  only, ownNats = false, pgProxy = false, natsProxy = false, presenceReplicas = 1, flags = [], env: extraEnv = {},
} = {}) {
  if (only !== undefined && only !== 'single' && only !== 'cluster') {
    throw new Error(`useServer({ only }) must be 'single' or 'cluster', not ${JSON.stringify(only)}`);
  }
  if ((ownNats || pgProxy || natsProxy || presenceReplicas !== 1 || flags.length > 0 || Object.keys(extraEnv).length > 0) && only !== 'cluster') {
    throw new Error("useServer({ ownNats, pgProxy, natsProxy, presenceReplicas, flags, env }) are cluster options: add only: 'cluster'");
  }
  const roleFlags = [...CLUSTER_FLAGS, ...flags];
  // Three NATS servers are always the file's own.
  const ownCluster = ownNats || NATS_SERVERS > 1;
  // With a NATS server of its own, the shared one is not needed, but the nats-server binary is.
  const problems = MODE !== 'cluster' || (only !== undefined && only !== MODE)
    ? []
    : ownCluster
      ? [clusterDeps.postgres, natsServerProblem()].filter(Boolean)
      : clusterProblems;
  const needs = ownCluster ? 'Postgres and the nats-server binary' : 'NATS (JetStream) and Postgres';
  if (only !== undefined && only !== MODE) {
    skipFile(`${only}-only tests; this run is E2E_MODE=${MODE} (run with E2E_MODE=${only})`);
  } else if (problems.length > 0 && process.env.CI !== 'true') {
    skipFile(ownCluster
      ? `SKIPPING cluster e2e: Postgres or nats-server not available (${problems.join('; ')})`
      : `SKIPPING cluster e2e: NATS/Postgres not reachable (${problems.join('; ')})`);
    const bar = '!'.repeat(78);
    process.stderr.write(
      `\n${bar}\n!!! ${skipReason}\n` +
      `!!! every test of ${path.basename(process.argv[1] ?? 'this file')} is skipped; ` +
      `${ownCluster ? 'provide' : 'start'} ${needs}, or set CI=true to fail instead\n${bar}\n\n`,
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
    natsUrl: '', // cluster: the NATS URL(s) the roles use (comma-separated)
    natsUrls: [], // cluster: the same, one per NATS server
    natsNodes: [], // ownNats (or three servers): the nats-server processes
    natsDir: '', // ownNats: their JetStream store directories, one under it per server
    pgProxy: null, // pgProxy: the proxy in front of Postgres
    natsProxies: [], // natsProxy: per gateway, the proxies between it and each NATS server
  };
  let dbCreated = false;
  let streamsPending = false;

  function appendLog(text) {
    h.log += text;
    if (h.log.length > LOG_LIMIT) h.log = h.log.slice(h.log.length - LOG_LIMIT);
  }

  function where() {
    return MODE === 'cluster'
      ? `cluster; ${Object.values(h.procs).map((p) => `${p.role} :${p.port}`).join(', ')}; database ${h.dbName}, prefix ${h.prefix}` +
        `${h.natsNodes.length > 0 ? `; own nats-server ${h.natsNodes.map((n) => `:${n.port}`).join(' ')}` : ''}` +
        `${h.pgProxy ? `; Postgres proxy :${h.pgProxy.port}` : ''}`
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
    for (const n of h.natsNodes) n.killNow();
    if (h.natsDir) rmSync(h.natsDir, { recursive: true, force: true });
    if (dbCreated) {
      spawnSync('psql', ['-h', PG_HOST, '-p', String(PG_PORT), '-U', PG_USER, '-d', 'postgres', '-X', '-q',
        '-c', `drop database if exists ${h.dbName} with (force)`], { stdio: 'ignore', timeout: 5000 });
    }
  };

  function childEnv(extra) {
    const env = { ...process.env, RUST_LOG: process.env.E2E_RUST_LOG || 'warn', NO_COLOR: '1', ...extra };
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

  /**
   * ownNats: NATS_SERVERS nats-servers with JetStream on free ports, each with its store in a
   * directory of its own; three are one cluster (routes to each other, a server name each, a
   * monitoring port for /jsz).
   */
  async function startOwnNats(rand) {
    h.natsDir = await mkdtemp(path.join(os.tmpdir(), 'chat-e2e-nats-'));
    const n = NATS_SERVERS;
    const ports = await distinctPorts(n === 1 ? 1 : 3 * n);
    const [clientPorts, routePorts, monitorPorts] = [0, 1, 2].map((k) => ports.slice(k * n, (k + 1) * n));
    for (let i = 0; i < n; i++) {
      const args = ['-a', '127.0.0.1', '-p', String(clientPorts[i]), '-js', '-sd', path.join(h.natsDir, `n${i}`)];
      if (n > 1) {
        const routes = routePorts.filter((_, j) => j !== i).map((p) => `nats://127.0.0.1:${p}`).join(',');
        args.push('--name', `nats-${i}`, '-m', String(monitorPorts[i]),
          '--cluster', `nats://127.0.0.1:${routePorts[i]}`, '--routes', routes, '--cluster_name', `chat-e2e-${rand}`);
        // A gateway behind its proxies must not learn the servers' own addresses (natsPartition).
        if (natsProxy) args.push('--no_advertise');
      }
      const node = new ServerProcess({
        role: n > 1 ? `nats-${i}` : 'nats',
        bin: natsServerBinary(),
        args,
        env: process.env,
        port: clientPorts[i],
        log: appendLog,
        onUnexpectedExit,
      });
      Object.assign(node, { serverName: n > 1 ? `nats-${i}` : null, monitorPort: monitorPorts[i] });
      h.natsNodes.push(node);
    }
    h.natsUrls = clientPorts.map((p) => `nats://127.0.0.1:${p}`);
    h.natsUrl = h.natsUrls.join(',');
    for (const node of h.natsNodes) node.start();
    await waitNatsNodesReady(h.natsNodes, n, CLUSTER_HEALTH_TIMEOUT_MS);
  }

  async function startCluster(bin) {
    const rand = randomBytes(4).toString('hex');
    h.dbName = `chat_e2e_${rand}`;
    h.prefix = `e2e_${rand}`;
    const created = await psql(`create database ${h.dbName}`);
    if (!created.ok) throw new Error(`cannot create database ${h.dbName}: ${created.stderr.trim()}`);
    dbCreated = true;
    if (ownCluster) await startOwnNats(rand);
    else {
      h.natsUrls = [`nats://${NATS_HOST}:${NATS_PORT}`];
      h.natsUrl = h.natsUrls[0];
      streamsPending = true;
    }
    if (pgProxy) h.pgProxy = await startTcpProxy(PG_HOST, PG_PORT);
    if (natsProxy) {
      const targets = ownCluster ? h.natsNodes.map((n) => ['127.0.0.1', n.port]) : [[NATS_HOST, NATS_PORT]];
      for (let i = 0; i < GATEWAY_IDS.length; i++) {
        const proxies = [];
        for (const target of targets) proxies.push(await startTcpProxy(...target));
        h.natsProxies.push(proxies);
      }
    }
    const env = childEnv({
      NATS_URL: h.natsUrl,
      CHAT_STREAM_REPLICAS: String(STREAM_REPLICAS),
      // Through the proxy without TLS, so that it sees the protocol (pgOutage's atCommit).
      DATABASE_URL: h.pgProxy
        ? `postgres://${PG_USER}@127.0.0.1:${h.pgProxy.port}/${h.dbName}?sslmode=disable`
        : `postgres://${PG_USER}@${PG_HOST}:${PG_PORT}/${h.dbName}`,
      CHAT_SUBJECT_PREFIX: h.prefix,
      ...extraEnv,
    });
    const [pPers, pA, pB, ...pPres] = await distinctPorts(3 + presenceReplicas);
    const persister = addProc('persister', bin, ['persister', '--port', String(pPers), ...roleFlags], env, pPers);
    // Presence replicas: 'presence', then 'presence2', ...
    const presences = pPres.map((port, i) => addProc(
      i === 0 ? 'presence' : `presence${i + 1}`, bin, ['presence', '--port', String(port), ...roleFlags], env, port,
    ));
    const gws = [[GATEWAY_IDS[0], pA], [GATEWAY_IDS[1], pB]].map(([id, port], i) => addProc(
      id, bin, ['gateway', '--port', String(port), '--gateway-id', id, ...roleFlags],
      natsProxy ? { ...env, NATS_URL: h.natsProxies[i].map((p) => `nats://127.0.0.1:${p.port}`).join(',') } : env, port,
    ));
    h.gateways = gws.map((g) => g.baseUrl);
    h.port = pA;
    h.baseUrl = h.gateways[0];

    const deadline = Date.now() + CLUSTER_HEALTH_TIMEOUT_MS;
    persister.start();
    for (const p of presences) p.start();
    await waitHealthy([persister, ...presences], deadline - Date.now());
    for (const g of gws) g.start();
    await waitHealthy(gws, Math.max(1000, deadline - Date.now()));
  }

  async function teardown() {
    const graceMs = MODE === 'cluster' ? 3000 : 5000;
    await Promise.all(procList().map((p) => p.stop(graceMs)));
    await Promise.all(h.natsNodes.map((n) => n.stop(graceMs)));
    if (h.natsDir) {
      await rm(h.natsDir, { recursive: true, force: true });
      h.natsDir = '';
    }
    if (h.pgProxy) await h.pgProxy.close();
    for (const p of h.natsProxies.splice(0).flat()) await p.close();
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
    if (MODE === 'cluster' && problems.length > 0) {
      // Not skipped above, so CI=true: fail loudly.
      throw new Error(
        `cluster e2e cannot run: ${ownCluster ? `${needs} not available` : 'NATS/Postgres not reachable'} (${problems.join('; ')}). ` +
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
    else if (process.env.E2E_SHOW_LOG === '1' && h.log !== '') dumpLog('E2E_SHOW_LOG=1');
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
    return firstOf(s, {
      connect: () => s,
      connect_error: (err) => { throw new Error(`user ${userId} connect_error: ${err.message} (${label(s)})`); },
      disconnect: (reason) => { throw new Error(`user ${userId} disconnected while connecting: ${reason} (${label(s)})`); },
    }, CONNECT_TIMEOUT_MS, `user ${userId} did not connect within ${CONNECT_TIMEOUT_MS} ms (${label(s)})`);
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

  /**
   * Two new users sharing a new conversation, `a` connected to gateway A and `b` to gateway B
   * (the same server in single mode), both joined: `{ a, b, conv, sa, sb }`.
   */
  const pairAcrossGateways = async () => {
    const [a, b] = users(2);
    const conv = await openConversation(a, b);
    const sa = await connect(a, { gateway: 0 });
    const sb = await connect(b, { gateway: 1 });
    await join(sa, conv.id);
    await join(sb, conv.id);
    return { a, b, conv, sa, sb };
  };

  /** Sends a message and resolves with the `message-sent` payload (fails on `message-error`). */
  const send = (s, senderId, conversationId, content, messageType = 'text', timeoutMs = 3000) => {
    const answered = firstOf(s, {
      'message-sent': (m) => m,
      'message-error': (e) => { throw new Error(`unexpected message-error on ${label(s)}: ${safeJson(e)}`); },
    }, timeoutMs, `no message-sent within ${timeoutMs} ms on ${label(s)}`);
    s.emit('send-message', {
      sender_id: senderId, conversation_id: conversationId, message_type: messageType, content,
    });
    return answered;
  };

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

  /** Cluster: sends `signal` (default SIGKILL) to a role and waits for its exit; returns `{code, signal}`. */
  const killRole = async (role, signal = 'SIGKILL') => {
    requireCluster('killRole');
    const p = roleProc(role);
    await p.kill(signal);
    return p.exited;
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

  /**
   * ownNats: stops the cluster's nats-server (all of them, at once) with `signal` ('SIGTERM':
   * waits up to 5 s for each to exit, then SIGKILL; 'SIGKILL': at once), waits `downMs`,
   * starts them again on the same ports with the same JetStream stores, and waits until they
   * accept connections (and, three, agree on a JetStream meta leader).
   */
  const restartNats = async ({ signal = 'SIGTERM', downMs = 0 } = {}) => {
    await stopNats(signal);
    if (downMs > 0) await sleep(downMs);
    await startNats();
  };

  const requireOwnNats = (what) => {
    requireCluster(what);
    if (h.natsNodes.length === 0) throw new Error(`${what} needs useServer({ only: 'cluster', ownNats: true }) or E2E_NATS_SERVERS=3`);
  };

  /** NATS server `i` of the cluster's own (0-based). */
  const ownNatsNode = (what, i) => {
    requireOwnNats(what);
    const node = h.natsNodes[i];
    if (!node) throw new Error(`${what}: no NATS server ${JSON.stringify(i)} (have ${h.natsNodes.length})`);
    return node;
  };

  const stopNode = (node, signal) => (signal === 'SIGTERM' ? node.stop(5000) : node.kill(signal));

  /** ownNats: stops every nats-server (see restartNats) and leaves them stopped. */
  const stopNats = async (signal = 'SIGTERM') => {
    requireOwnNats('stopNats');
    await Promise.all(h.natsNodes.map((n) => stopNode(n, signal)));
  };

  /** Starts the stopped ones of `nodes` again (same ports, same stores); waits until ready. */
  const startNodes = async (nodes) => {
    for (const node of nodes) if (!node.alive) node.start();
    try {
      await waitNatsNodesReady(nodes, h.natsNodes.length, CLUSTER_HEALTH_TIMEOUT_MS);
    } catch (err) {
      dumpLog(`restart of nats-server failed: ${err.message}`);
      throw err;
    }
  };

  /** ownNats: starts the stopped nats-servers again (same ports, same stores); waits until ready. */
  const startNats = async () => {
    requireOwnNats('startNats');
    await startNodes(h.natsNodes);
  };

  /** ownNats: stops NATS server `i` only (as stopNats) and leaves it stopped. */
  const stopNatsNode = async (i, signal = 'SIGTERM') => {
    const node = ownNatsNode('stopNatsNode', i);
    appendLog(`[harness] ${node.role} stopped (${signal})\n`);
    await stopNode(node, signal);
  };

  /** ownNats: starts NATS server `i` again; waits until it is back in its cluster. */
  const startNatsNode = async (i) => {
    const node = ownNatsNode('startNatsNode', i);
    await startNodes([node]);
  };

  /**
   * ownNats: the index in `natsNodes` of the NATS server leading JetStream stream `stream`
   * (default: this run's work queue), asked of any running server; 0 with one server. Rejects
   * when the stream has no leader, or no answer comes within `timeoutMs`.
   */
  const natsStreamLeader = async (stream = `${h.prefix}_inbound`, { timeoutMs = 5000 } = {}) => {
    requireOwnNats('natsStreamLeader');
    if (h.natsNodes.length === 1) return 0;
    const { connect } = await import('nats');
    const servers = h.natsNodes.filter((n) => n.alive).map((n) => `127.0.0.1:${n.port}`);
    const nc = await connect({ servers, timeout: timeoutMs, name: 'chat-e2e-leader' });
    try {
      const info = await (await nc.jetstreamManager({ timeout: timeoutMs })).streams.info(stream);
      const index = h.natsNodes.findIndex((n) => n.serverName === info.cluster?.leader);
      if (index < 0) throw new Error(`stream ${stream}: no known leader (${safeJson(info.cluster)})`);
      return index;
    } finally {
      await nc.close();
    }
  };

  /**
   * pgProxy: resolves once a role's COMMIT has reached Postgres, whose answer is held back
   * until `release()` (so the role is mid-transaction, its data committed): `{ held, release }`,
   * `held` false when no COMMIT came within `timeoutMs`.
   */
  const pgHoldNextCommit = async (timeoutMs = 5000) => {
    requireCluster('pgHoldNextCommit');
    if (!h.pgProxy) throw new Error("pgHoldNextCommit needs useServer({ only: 'cluster', pgProxy: true })");
    const hold = await h.pgProxy.holdNextCommit(timeoutMs);
    appendLog(`[harness] Postgres proxy: ${hold.held ? 'a COMMIT reached Postgres; its answer is held back' : `no COMMIT within ${timeoutMs} ms`}\n`);
    return hold;
  };

  /**
   * natsProxy: gateway `i` (0 = A, 1 = B) cut off from NATS for `ms`: its connection is reset
   * and new ones refused meanwhile (the other roles keep theirs); resolves after.
   */
  const natsPartition = async (i, ms) => {
    requireCluster('natsPartition');
    const proxies = h.natsProxies[i];
    if (!proxies) throw new Error(`natsPartition needs useServer({ only: 'cluster', natsProxy: true }) and a gateway index 0 or 1, not ${JSON.stringify(i)}`);
    appendLog(`[harness] ${GATEWAY_IDS[i]} cut off from NATS for ${ms} ms\n`);
    await Promise.all(proxies.map((p) => p.outage(ms)));
    appendLog(`[harness] ${GATEWAY_IDS[i]} may reach NATS again\n`);
  };

  /**
   * pgProxy: Postgres unreachable for the roles for `ms` (see the header); resolves after, with
   * `{ atCommit }`. `{ atCommit: true }`: the outage begins right after a COMMIT has reached
   * Postgres, whose answer never gets back (waits up to 5 s for one; else begins anyway).
   */
  const pgOutage = async (ms, { atCommit = false } = {}) => {
    requireCluster('pgOutage');
    if (!h.pgProxy) throw new Error("pgOutage needs useServer({ only: 'cluster', pgProxy: true })");
    appendLog(`[harness] Postgres proxy: outage of ${ms} ms ${atCommit ? 'at the next COMMIT ' : ''}begins (${h.pgProxy.connections} connections)\n`);
    const outcome = await h.pgProxy.outage(ms, { atCommit });
    appendLog(`[harness] Postgres proxy: outage over${atCommit ? ` (began ${outcome.atCommit ? 'just after a COMMIT' : 'without a COMMIT seen in 5 s'})` : ''}\n`);
    return outcome;
  };

  Object.assign(h, {
    api, socket, connect, users, openConversation, join, pairAcrossGateways, send, history,
    once, collect, expectNone, recordEvents,
    /** Gateway index (0 = A, 1 = B) that connect(userId) uses in cluster mode. */
    gatewayOf,
    /** True while every server process is running. */
    isAlive: () => procList().length > 0 && procList().every((p) => p.alive),
    killRole,
    restartRole,
    /** Cluster: the base URL of a role's port ('persister' | 'presence' | 'gwa' | 'gwb'). */
    roleUrl: (role) => {
      requireCluster('roleUrl');
      return roleProc(role).baseUrl;
    },
    restartNats,
    stopNats,
    startNats,
    stopNatsNode,
    startNatsNode,
    natsStreamLeader,
    pgOutage,
    pgHoldNextCommit,
    natsPartition,
    /** Appends a line to the server output shown on failure (marks what a test did when). */
    note: (text) => appendLog(`[test] ${new Date().toISOString()} ${text}\n`),
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
const clusterDeps = MODE === 'cluster' ? await clusterDependencyProblems() : { nats: null, postgres: null };
const clusterProblems = [clusterDeps.nats, clusterDeps.postgres].filter(Boolean);
