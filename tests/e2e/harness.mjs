// End-to-end harness: runs the real `chat` binary and gives tests small helpers.
//
// Usage in a test file:
//
//   import { useServer } from './harness.mjs';
//   const srv = useServer();           // registers before/after/afterEach hooks
//   test('...', async () => {
//     const [a, b] = srv.users(2);     // user ids unique within this file
//     const conv = await srv.openConversation(a, b);
//     const sa = await srv.connect(a);
//     ...
//   });
//
// Binary: $CHAT_BIN, else ${CARGO_TARGET_DIR:-<repo>/target}/release/chat.

import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import assert from 'node:assert/strict';
import { before, after, afterEach } from 'node:test';
import { io } from 'socket.io-client';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');

const HEALTH_TIMEOUT_MS = 20_000;
const CONNECT_TIMEOUT_MS = 5_000;
const LOG_LIMIT = 256 * 1024;

export const USERID_ERROR = 'userId query parameter is required and must be a positive integer';

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

/**
 * Starts one server for the current test file and returns a helper object.
 * Registers node:test `before`, `afterEach` and `after` hooks.
 */
export function useServer() {
  const h = {
    port: 0,
    baseUrl: '',
    dataDir: '',
    proc: null,
    log: '',
    exited: null,
    sockets: new Set(),
    failed: false,
    nextUser: 1000,
  };

  function appendLog(chunk) {
    h.log += chunk.toString();
    if (h.log.length > LOG_LIMIT) h.log = h.log.slice(h.log.length - LOG_LIMIT);
  }

  function dumpLog(why) {
    process.stderr.write(
      `\n----- chat server output (${why}; port ${h.port}, data dir ${h.dataDir}) -----\n` +
      `${h.log || '(empty)'}\n----- end of chat server output -----\n`,
    );
  }

  const killOnExit = () => {
    if (h.proc && h.exited === null) {
      try { h.proc.kill('SIGKILL'); } catch { /* already gone */ }
    }
  };

  before(async () => {
    const bin = chatBinary();
    if (!existsSync(bin)) {
      throw new Error(
        `server binary not found at ${bin}; build it with \`cargo build --release\` ` +
        '(set CARGO_TARGET_DIR or CHAT_BIN to point elsewhere)',
      );
    }
    h.port = await freePort();
    h.baseUrl = `http://127.0.0.1:${h.port}`;
    h.dataDir = await mkdtemp(path.join(os.tmpdir(), 'chat-e2e-'));
    h.proc = spawn(bin, ['--port', String(h.port), '--data-dir', h.dataDir], {
      env: { ...process.env, RUST_LOG: 'warn' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    h.proc.stdout.on('data', appendLog);
    h.proc.stderr.on('data', appendLog);
    h.proc.on('exit', (code, signal) => {
      h.exited = { code, signal };
      appendLog(`\n[harness] server exited: code=${code} signal=${signal}\n`);
    });
    h.proc.on('error', (err) => appendLog(`\n[harness] spawn error: ${err.message}\n`));
    process.once('exit', killOnExit);

    const deadline = Date.now() + HEALTH_TIMEOUT_MS;
    let lastErr = 'no attempt';
    for (;;) {
      if (h.exited) {
        dumpLog('server exited during startup');
        throw new Error(`server exited during startup (${JSON.stringify(h.exited)})`);
      }
      try {
        const res = await fetch(`${h.baseUrl}/healthz`, { signal: AbortSignal.timeout(1000) });
        await res.arrayBuffer();
        if (res.status === 200) break;
        lastErr = `status ${res.status}`;
      } catch (err) {
        lastErr = err.cause?.code ?? err.message;
      }
      if (Date.now() > deadline) {
        dumpLog('health check timed out');
        throw new Error(`GET /healthz did not return 200 within ${HEALTH_TIMEOUT_MS} ms (last: ${lastErr})`);
      }
      await sleep(100);
    }
  });

  afterEach((t) => {
    if (t && t.passed === false) h.failed = true;
    for (const s of h.sockets) {
      s.removeAllListeners();
      s.offAny();
      s.disconnect();
    }
    h.sockets.clear();
  });

  after(async () => {
    if (h.proc && h.exited === null) {
      h.proc.kill('SIGTERM');
      const t0 = Date.now();
      while (h.exited === null && Date.now() - t0 < 5000) await sleep(50);
      if (h.exited === null) h.proc.kill('SIGKILL');
    }
    process.off('exit', killOnExit);
    if (h.failed) dumpLog('a test in this file failed');
    if (h.dataDir) await rm(h.dataDir, { recursive: true, force: true });
  });

  const api = async (method, urlPath, body, { raw = false, headers = {} } = {}) => {
    const init = { method, headers: { ...headers }, signal: AbortSignal.timeout(10_000) };
    if (body !== undefined) {
      init.body = raw ? body : JSON.stringify(body);
      if (!Object.keys(init.headers).some((k) => k.toLowerCase() === 'content-type')) {
        init.headers['content-type'] = 'application/json';
      }
    }
    const res = await fetch(`${h.baseUrl}${urlPath}`, init);
    const text = await res.text();
    let parsed = text;
    try { parsed = text === '' ? null : JSON.parse(text); } catch { /* keep text */ }
    return { status: res.status, body: parsed, headers: res.headers, text };
  };

  /**
   * Creates a socket for `/chat` without waiting for anything. `query` is
   * passed as-is (use `{}` for "no userId").
   */
  const socket = (query, opts = {}) => {
    const s = io(`${h.baseUrl}/chat`, {
      query,
      transports: ['websocket'],
      forceNew: true,
      reconnection: false,
      timeout: CONNECT_TIMEOUT_MS,
      ...opts,
    });
    s.__label = `socket(userId=${query?.userId ?? '-'}, ${(opts.transports ?? ['websocket']).join('+')})`;
    h.sockets.add(s);
    return s;
  };

  /** A connected socket for `userId` (rejects on connect_error / timeout). */
  const connect = (userId, opts = {}) => {
    const s = socket({ userId }, opts);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`user ${userId} did not connect within ${CONNECT_TIMEOUT_MS} ms`));
      }, CONNECT_TIMEOUT_MS);
      const onConnect = () => { cleanup(); resolve(s); };
      const onError = (err) => { cleanup(); reject(new Error(`user ${userId} connect_error: ${err.message}`)); };
      const onDisconnect = (reason) => { cleanup(); reject(new Error(`user ${userId} disconnected while connecting: ${reason}`)); };
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

  Object.assign(h, {
    api, socket, connect, users, openConversation, join, send, history,
    once, collect, expectNone, recordEvents,
    /** True while the server process is running. */
    isAlive: () => h.proc !== null && h.exited === null,
    /**
     * Writes a raw Socket.IO EVENT packet for /chat (`dataJson` is the JSON
     * text of the packet's data array), bypassing the client encoder.
     */
    rawEmit: (s, dataJson) => s.io.engine.write(`2/chat,${dataJson}`),
  });
  return h;
}
