// End-to-end harness, test-run settings: what the environment asks for (the binary, the mode,
// the NATS servers), the constants, and skipping a file whose dependencies are absent.
// Imports nothing of the harness; every other module of it may import this one.
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
// NATS servers of cluster mode (env E2E_NATS_SERVERS):
//   1       (default) one NATS server: the shared one at 127.0.0.1:4222, or the file's own with
//           `ownNats` (server.mjs); the roles keep one replica of the work queue and the bucket.
//   3       every cluster file runs a NATS cluster of its own, whatever its options: three
//           `nats-server` processes on loopback (JetStream, each with its store in a temp
//           directory, its own client, route and monitoring ports, a distinct server name),
//           joined by cluster routes; the roles get the three URLs (NATS_URL, comma-separated)
//           and CHAT_STREAM_REPLICAS=3. The roles start once JetStream has elected its meta
//           leader. Needs the `nats-server` binary, not the shared server.
// `NATS_SERVERS` and `STREAM_REPLICAS` (exported) say which.
//
// Skipping: a file's tests are skipped (shown as "# SKIP <reason>" by the runner) when
//   - E2E_MODE=cluster and NATS or Postgres is not reachable (with ownNats or three NATS
//     servers: Postgres or the nats-server binary) (unless CI=true: then the file fails loudly
//     instead), or
//   - the file asked for one mode only, `useServer({ only: 'cluster' })`, and runs in the other.
// node:test cannot skip a test from a hook, so the decision is made when the file calls
// useServer() (NATS and Postgres are checked when server.mjs loads, in cluster mode only) and
// reaches the tests through the `test` exported here (and by ../harness.mjs): node:test's own
// `test` while the file runs, one that adds `{ skip: reason }` once it is skipped. So test
// files import `test` from './harness.mjs' (not 'node:test') and call useServer() before their
// first test().

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { test as nodeTest } from 'node:test';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..', '..');

export const HEALTH_TIMEOUT_MS = 20_000;
export const CLUSTER_HEALTH_TIMEOUT_MS = 30_000;
export const CONNECT_TIMEOUT_MS = 5_000;
export const LOG_LIMIT = 256 * 1024;

/** Where cluster mode expects its services (fixed: see the header). */
export const NATS_HOST = '127.0.0.1';
export const NATS_PORT = 4222;
export const PG_HOST = '127.0.0.1';
export const PG_PORT = 5432;
export const PG_USER = 'postgres';
/** Flags given to every cluster process: fast failure detection for the tests. */
export const CLUSTER_FLAGS = ['--gateway-timeout', '3s', '--heartbeat-interval', '1s'];
/** Gateway ids, by index: connect(..., { gateway: 0 }) is `gwa`. */
export const GATEWAY_IDS = ['gwa', 'gwb'];

export const USERID_ERROR = 'userId query parameter is required and must be a positive integer';

/** NATS servers of cluster mode, from E2E_NATS_SERVERS: 1 or 3 (see the header). */
export const NATS_SERVERS = (() => {
  const raw = (process.env.E2E_NATS_SERVERS ?? '').trim();
  if (raw === '' || raw === '1') return 1;
  if (raw === '3') return 3;
  throw new Error(`E2E_NATS_SERVERS must be 1 or 3, not ${JSON.stringify(raw)}`);
})();
/** CHAT_STREAM_REPLICAS of the cluster roles: a copy on every NATS server. */
export const STREAM_REPLICAS = NATS_SERVERS;

/** 'single' | 'cluster', from E2E_MODE. */
export const MODE = (() => {
  const raw = (process.env.E2E_MODE ?? '').trim();
  if (raw === '' || raw === 'single') return 'single';
  if (raw === 'cluster') return 'cluster';
  throw new Error(`E2E_MODE must be "single" or "cluster", not ${JSON.stringify(raw)}`);
})();

/** Why this file's tests are skipped, or null (see skipFile()). */
export let skipReason = null;

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

export function skipFile(reason) {
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
