// End-to-end harness, cluster services: NATS and Postgres. psql, whether cluster mode can run,
// the readiness of nats-servers of the harness's own, the TCP proxy of fault injection, and
// deleting a run's JetStream streams.

import { spawn, spawnSync } from 'node:child_process';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { NATS_HOST, NATS_PORT, PG_HOST, PG_PORT, PG_USER } from './settings.mjs';
import { safeJson } from './events.mjs';

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

/** Null when a JetStream-enabled NATS answers at host:port (default: the shared one), else the problem. */
function natsProblem(timeoutMs = 3000, host = NATS_HOST, port = NATS_PORT) {
  return new Promise((resolve) => {
    const where = `NATS at ${host}:${port}`;
    let buf = '';
    let done = false;
    const s = net.connect({ host, port });
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

/** What keeps cluster mode from running: `{ nats, postgres }`, each null when it answers. */
export async function clusterDependencyProblems() {
  const [nats, pg] = await Promise.all([
    natsProblem(),
    psql('select 1', { timeoutMs: 10_000 }),
  ]);
  const postgres = pg.ok
    ? null
    : `Postgres at ${PG_HOST}:${PG_PORT} (psql -U ${PG_USER} -c 'select 1'): ${pg.stderr.trim().replace(/\s+/g, ' ') || `exit ${pg.code}`}`;
  return { nats, postgres };
}

/** The `nats-server` binary that `useServer({ ownNats: true })` runs. */
export function natsServerBinary() {
  return process.env.NATS_SERVER_BIN || 'nats-server';
}

/** Null when the nats-server binary runs, else the problem. */
export function natsServerProblem() {
  const bin = natsServerBinary();
  const r = spawnSync(bin, ['--version'], { encoding: 'utf8', timeout: 10_000 });
  if (r.error) return `${bin} cannot run (${r.error.code ?? r.error.message}); install nats-server or set NATS_SERVER_BIN`;
  if (r.status !== 0) return `${bin} --version exited ${r.status}: ${(r.stderr || r.stdout).trim()}`;
  return null;
}

/** Polls until a JetStream-enabled NATS answers on 127.0.0.1:port; fails early if `proc` exits. */
async function waitNatsReady(port, timeoutMs, proc) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc && !proc.alive) throw new Error(`nats-server exited during startup (${JSON.stringify(proc.exited)})`);
    const problem = await natsProblem(1000, '127.0.0.1', port);
    if (problem === null) return;
    if (Date.now() > deadline) throw new Error(`nats-server on port ${port} not ready within ${timeoutMs} ms (last: ${problem})`);
    await sleep(100);
  }
}

/**
 * A clustered nats-server's view of the JetStream meta group (its monitoring endpoint /jsz):
 * null when it knows a leader of a group of `size`, else the problem.
 */
async function jetStreamMetaProblem(monitorPort, size) {
  try {
    const res = await fetch(`http://127.0.0.1:${monitorPort}/jsz`, { signal: AbortSignal.timeout(1000) });
    const jsz = await res.json();
    const meta = jsz.meta_cluster ?? {};
    if (!meta.leader) return `no JetStream meta leader yet (${safeJson(meta)})`;
    if (meta.cluster_size !== size) return `JetStream meta group of ${meta.cluster_size}, not ${size}`;
    return null;
  } catch (err) {
    return `GET /jsz on :${monitorPort}: ${err.cause?.code ?? err.message}`;
  }
}

/**
 * Waits until every one of `nodes` (nats-server processes of one cluster, or a lone one)
 * accepts connections with JetStream and, clustered, knows the meta leader of the whole
 * cluster: before that, JetStream answers stream and consumer requests with errors.
 */
export async function waitNatsNodesReady(nodes, clusterSize, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  for (const node of nodes) {
    await waitNatsReady(node.port, Math.max(1000, deadline - Date.now()), node);
    if (clusterSize === 1) continue;
    for (;;) {
      if (!node.alive) throw new Error(`${node.role} exited during startup (${JSON.stringify(node.exited)})`);
      const problem = await jetStreamMetaProblem(node.monitorPort, clusterSize);
      if (problem === null) break;
      if (Date.now() > deadline) throw new Error(`${node.role}: JetStream not ready within ${timeoutMs} ms (last: ${problem})`);
      await sleep(100);
    }
  }
}

/**
 * The transaction status of the last ReadyForQuery message ('Z', length 5, then 'I' idle, 'T'
 * in a transaction, 'E' in a failed one) that the server sent before `end` in `chunk`, else
 * `before` (the status the connection had when the chunk began).
 */
function transactionStatus(chunk, end, before) {
  let status = before;
  for (let at = chunk.indexOf('Z\0\0\0\x05'); at >= 0 && at + 5 < end; at = chunk.indexOf('Z\0\0\0\x05', at + 1)) {
    status = String.fromCharCode(chunk[at + 5]);
  }
  return status;
}

/**
 * The names of the prepared statements that `chunk` (client to server) parses with an INSERT
 * in their text ('P', length, name, query): a statement that writes, whatever its top level
 * (the persister's batch is a SELECT over an `INSERT … RETURNING` in a WITH). '' is the unnamed one.
 */
function writingStatements(chunk) {
  const names = [];
  const text = chunk.toString('latin1');
  for (const m of text.matchAll(/P[\s\S]{4}([^\0]*)\0([^\0]*)\0/g)) {
    if (/\bINSERT\s+INTO\b/i.test(m[2])) names.push(m[1]);
  }
  return names;
}

/** The statement names that `chunk` (client to server) binds ('B', length, portal, statement). */
function boundStatements(chunk) {
  return [...chunk.toString('latin1').matchAll(/B[\s\S]{4}[^\0]*\0([^\0]*)\0/g)].map((m) => m[1]);
}

/**
 * A TCP proxy on 127.0.0.1 to `host:port` (for Postgres faults): `outage(ms)` resets every
 * proxied connection and, for `ms`, accepts and resets new ones (the listening port stays
 * ours); then it proxies again. `holdNextCommit()` waits for a write to commit (a client's
 * `COMMIT` reaching the server, or the server completing an `INSERT`, or a statement with one
 * in its WITH, outside a transaction, which commits on its own at the Sync the client sent
 * with it) and holds back the
 * server's answers on that connection until `release()`. With `{ atCommit: true }` the outage
 * begins 100 ms after such a commit: the client cannot know whether its write was committed
 * (it was).
 */
export async function startTcpProxy(host, port) {
  const pairs = new Set();
  let refusing = false;
  let outages = 0;
  let onCommit = null; // armed by holdNextCommit()
  const reset = (s) => {
    if (typeof s.resetAndDestroy === 'function') s.resetAndDestroy();
    else s.destroy();
  };
  const server = net.createServer((client) => {
    client.on('error', () => {});
    if (refusing) {
      reset(client);
      return;
    }
    const upstream = net.connect({ host, port });
    // held: answers kept back, while holding; status: the server's last transaction status;
    // writers: this connection's prepared statements that write; writing: the last bound one does.
    const pair = { client, upstream, held: null, status: 'I', writers: new Set(), writing: false };
    pairs.add(pair);
    const close = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    upstream.on('error', close);
    client.on('error', close);
    client.on('close', close);
    upstream.on('close', close);
    client.on('data', (chunk) => {
      for (const name of writingStatements(chunk)) pair.writers.add(name);
      const bound = boundStatements(chunk);
      if (bound.length > 0) pair.writing = bound.some((name) => pair.writers.has(name));
      if (!upstream.write(chunk)) client.pause();
      if (onCommit !== null && chunk.includes('COMMIT')) {
        pair.held = [];
        onCommit(pair);
      }
    });
    upstream.on('drain', () => client.resume());
    upstream.on('data', (chunk) => {
      if (pair.held !== null) {
        pair.held.push(chunk);
        return;
      }
      // CommandComplete of an INSERT ("INSERT 0 <rows>") outside a transaction: its answer is
      // held from here on. Inside one (BEGIN … COMMIT) it commits nothing: the client's COMMIT
      // is the commit.
      // So is the CommandComplete of a SELECT whose statement writes (an INSERT in its WITH).
      let insert = chunk.indexOf('INSERT 0 ');
      if (insert < 0 && pair.writing) insert = chunk.toString('latin1').search(/C[\s\S]{4}SELECT \d+\0/);
      const inTransaction = insert >= 0 && transactionStatus(chunk, insert, pair.status) !== 'I';
      pair.status = transactionStatus(chunk, chunk.length, pair.status);
      if (onCommit !== null && insert >= 0 && !inTransaction) {
        pair.held = [chunk];
        onCommit(pair);
        return;
      }
      if (!client.write(chunk)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  return {
    port: server.address().port,
    get refusing() { return refusing; },
    get outages() { return outages; },
    /** Connections proxied now. */
    get connections() { return pairs.size; },
    /**
     * Resolves once a write has committed (a client's COMMIT forwarded to the server, or an
     * INSERT completed by it), with `{ held: true, release }`: that connection's answers are
     * kept back until release(); or with `{ held: false }` when none came within `timeoutMs`.
     */
    holdNextCommit(timeoutMs = 5000) {
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          onCommit = null;
          resolve({ held: false, release: () => {} });
        }, timeoutMs);
        onCommit = (pair) => {
          clearTimeout(timer);
          onCommit = null;
          resolve({
            held: true,
            release: () => {
              const chunks = pair.held ?? [];
              pair.held = null;
              for (const c of chunks) if (!pair.client.destroyed) pair.client.write(c);
            },
          });
        };
      });
    },
    /** Resolves when the outage is over; `{ atCommit }`: whether it began at a COMMIT. */
    async outage(ms, { atCommit = false } = {}) {
      outages++;
      let committed = false;
      if (atCommit) {
        committed = (await this.holdNextCommit()).held;
        if (committed) await sleep(100); // the server applies the COMMIT; its answer stays here
      }
      refusing = true;
      for (const pair of [...pairs]) {
        pairs.delete(pair);
        reset(pair.client);
        reset(pair.upstream);
      }
      try {
        await sleep(ms);
      } finally {
        refusing = false;
      }
      return { atCommit: committed };
    },
    close() {
      refusing = true;
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream.destroy();
      }
      pairs.clear();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Deletes the JetStream streams of a test run's subject prefix (stream, KV, object buckets). */
export async function deleteStreams(prefix) {
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
