// Replication of the JetStream state (E2E_MODE=cluster only). The harness gives the roles one
// replica per NATS server (CHAT_STREAM_REPLICAS: 1 on one server, 3 with E2E_NATS_SERVERS=3) and
// every server's URL (NATS_URL, comma-separated). Here:
//   - the work queue's stream, each of its partition consumers and the presence bucket are kept
//     in that many copies, one on each server;
//   - a role asking for more replicas than NATS can keep does not start, says which setting to
//     fix, and leaves the stream as it was;
//   - with three servers, a role started with another count updates the existing stream,
//     consumers and bucket (3 → 1 → 3), and messages keep flowing meanwhile.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { test, useServer, chatBinary, freePort, safeJson, NATS_SERVERS, STREAM_REPLICAS } from './harness.mjs';

const srv = useServer({ only: 'cluster' });

/** The harness runs every role with the binary's default partitions. */
const PARTITIONS = 32;

async function withJetStream(fn) {
  const { connect } = await import('nats');
  const servers = srv.natsUrls.map((u) => u.replace(/^nats:\/\//, ''));
  const nc = await connect({ servers, timeout: 5000, name: 'chat-e2e-replication' });
  try {
    return await fn(await nc.jetstreamManager());
  } finally {
    await nc.close();
  }
}

/** The replica counts JetStream holds now, and on how many servers the copies are. */
function replicaCounts() {
  return withJetStream(async (jsm) => {
    const stream = `${srv.prefix}_inbound`;
    const queue = await jsm.streams.info(stream);
    const consumers = new Set();
    for (let p = 0; p < PARTITIONS; p++) consumers.add((await jsm.consumers.info(stream, `persister-${p}`)).config.num_replicas);
    const bucket = await jsm.streams.info(`KV_${srv.prefix}_presence`);
    // `cluster.replicas` lists the copies besides the leader's (no `cluster` on a lone server).
    const copies = (info) => 1 + (info.cluster?.replicas?.length ?? 0);
    return {
      stream: queue.config.num_replicas,
      streamCopies: copies(queue),
      consumers: [...consumers],
      bucket: bucket.config.num_replicas,
      bucketCopies: copies(bucket),
    };
  });
}

/** Polls replicaCounts() until `expected` holds (scaling a stream takes a moment). */
async function expectCounts(expected, why, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  let counts;
  for (;;) {
    counts = await replicaCounts().catch((err) => ({ error: err.message }));
    const matches = Object.entries(expected).every(([k, v]) => JSON.stringify(counts[k]) === JSON.stringify(v));
    if (matches || Date.now() > deadline) break;
    await new Promise((r) => setTimeout(r, 200));
  }
  for (const [k, v] of Object.entries(expected)) assert.deepEqual(counts[k], v, `${why}: ${k} (all: ${safeJson(counts)})`);
}

/** Sends one message from a gateway-A user to a gateway-B user and checks it arrives. */
async function messageGoesThrough(text) {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const received = srv.once(sb, 'receive-message', 10_000);
  const sent = await srv.send(sa, a, conv.id, text, 'text', 10_000);
  assert.deepEqual(await received, sent);
}

/** Runs `chat <args>` with `env` until it exits (or `timeoutMs`); its code and output. */
function runChat(args, env, timeoutMs) {
  return new Promise((resolve) => {
    const child = spawn(chatBinary(), args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c) => { output += c; });
    child.stderr.on('data', (c) => { output += c; });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, output });
    });
  });
}

test(`the work queue, each partition consumer and the presence bucket are kept in CHAT_STREAM_REPLICAS (${STREAM_REPLICAS}) copies, one per NATS server`, async () => {
  assert.equal(srv.natsUrls.length, NATS_SERVERS, `the roles were given every server: ${srv.natsUrl}`);
  assert.equal(srv.procs.gwa.env.NATS_URL.split(',').length, NATS_SERVERS);
  await expectCounts({
    stream: STREAM_REPLICAS,
    streamCopies: NATS_SERVERS,
    consumers: [STREAM_REPLICAS],
    bucket: STREAM_REPLICAS,
    bucketCopies: NATS_SERVERS,
  }, 'as started');
});

test('a role asking for more replicas than NATS can keep does not start, names CHAT_STREAM_REPLICAS, and leaves the stream as it was', async () => {
  const wanted = NATS_SERVERS + 2; // 3 on one server, 5 on three
  const port = await freePort();
  const env = { ...srv.procs.gwa.env, CHAT_STREAM_REPLICAS: String(wanted), RUST_LOG: 'warn' };
  const started = Date.now();
  const run = await runChat(['gateway', '--port', String(port), '--gateway-id', 'gw-too-many', '--startup-timeout', '2s'], env, 30_000);
  const tookMs = Date.now() - started;
  assert.equal(run.signal, null, `it exited on its own (took ${tookMs} ms): ${run.output}`);
  assert.notEqual(run.code, 0, `exit status: ${run.output}`);
  assert.match(run.output, /--stream-replicas \/ CHAT_STREAM_REPLICAS/, run.output);
  assert.match(run.output, new RegExp(`stream ${srv.prefix}_inbound cannot have ${wanted} replicas`), run.output);
  if (NATS_SERVERS === 1) assert.match(run.output, /not part of a NATS cluster/, run.output);
  await expectCounts({ stream: STREAM_REPLICAS, streamCopies: NATS_SERVERS }, 'after the refused start');
  await messageGoesThrough('the cluster is unaffected');
});

test('with three NATS servers, a role started with another CHAT_STREAM_REPLICAS updates the stream, its consumers and the bucket (3 → 1 → 3); messages keep flowing', {
  skip: NATS_SERVERS < 3 ? 'needs a NATS cluster (E2E_NATS_SERVERS=3: run.sh runs the cluster3 pass)' : false,
}, async () => {
  let current = STREAM_REPLICAS;
  const withReplicas = async (replicas) => {
    for (const role of ['persister', 'presence']) {
      srv.procs[role].env = { ...srv.procs[role].env, CHAT_STREAM_REPLICAS: String(replicas) };
      await srv.restartRole(role);
    }
    current = replicas;
  };
  try {
    await withReplicas(1);
    await expectCounts({ stream: 1, streamCopies: 1, consumers: [1], bucket: 1, bucketCopies: 1 }, 'restarted with 1');
    await messageGoesThrough('on one replica');
    await withReplicas(3);
    await expectCounts({ stream: 3, streamCopies: 3, consumers: [3], bucket: 3, bucketCopies: 3 }, 'restarted with 3 again');
    await messageGoesThrough('on three replicas again');
  } finally {
    if (current !== STREAM_REPLICAS) await withReplicas(STREAM_REPLICAS);
  }
});
