// Operations endpoints of every role: GET /healthz (liveness), GET /readyz (readiness),
// GET /metrics (Prometheus text, with the metric names the dashboards query). Runs in both
// modes: all-in-one serves everything on its one port; in a cluster each role serves its own.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer } from './harness.mjs';
import { scrape, families, value } from './metrics.mjs';

const srv = useServer();

const COMMON = ['chat_build_info', 'chat_nats_reconnects_total', 'process_resident_memory_bytes', 'process_cpu_seconds_total'];
const GATEWAY = ['chat_gateway_connections', 'chat_gateway_rooms', 'chat_gateway_events_in_total',
  'chat_gateway_events_out_total', 'chat_gateway_errors_total', 'chat_gateway_send_ack_seconds_bucket',
  'chat_gateway_outbox_wait_seconds_bucket', 'chat_gateway_enqueue_seconds_bucket', 'chat_gateway_outcome_wait_seconds_bucket'];
const PERSISTER = ['chat_persister_messages_stored_total', 'chat_persister_consumer_pending',
  'chat_persister_batch_size_bucket', 'chat_persister_insert_seconds_bucket', 'chat_persister_queue_wait_seconds_bucket',
  'chat_persister_batch_fill_seconds_bucket'];
const PRESENCE = ['chat_presence_online_users', 'chat_presence_sockets'];

/** Base URL of each role's operations endpoints, with the metrics it must show. */
function roles() {
  if (srv.mode === 'single') {
    return [{ role: 'all', url: srv.baseUrl, names: [...COMMON, ...GATEWAY, ...PERSISTER, ...PRESENCE] }];
  }
  return [
    { role: 'gateway', url: srv.gateways[0], names: [...COMMON, ...GATEWAY] },
    { role: 'gateway', url: srv.gateways[1], names: [...COMMON, ...GATEWAY] },
    { role: 'persister', url: srv.procs.persister.baseUrl, names: [...COMMON, ...PERSISTER] },
    { role: 'presence', url: srv.procs.presence.baseUrl, names: [...COMMON, ...PRESENCE] },
  ];
}

const gatewayUrl = (i) => srv.gateways[Math.min(i, srv.gateways.length - 1)];
const persisterUrl = () => (srv.mode === 'single' ? srv.baseUrl : srv.procs.persister.baseUrl);
const presenceUrl = () => (srv.mode === 'single' ? srv.baseUrl : srv.procs.presence.baseUrl);

/** Polls `url`'s metrics until `check(series)` holds; the last series. */
async function until(url, check, what, timeoutMs = 10_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { series } = await scrape(url);
    if (check(series)) return series;
    if (Date.now() > deadline) assert.fail(`${what}: not seen within ${timeoutMs} ms at ${url}/metrics`);
    await sleep(200);
  }
}

test('GET /healthz and /readyz answer 200 on every role; /readyz names what it checked', async () => {
  for (const { role, url } of roles()) {
    const live = await fetch(`${url}/healthz`);
    assert.equal(live.status, 200, `${role} /healthz`);
    assert.deepEqual(await live.json(), { status: 'ok' });
    const ready = await fetch(`${url}/readyz`);
    const body = await ready.json();
    assert.equal(ready.status, 200, `${role} /readyz: ${JSON.stringify(body)}`);
    assert.equal(body.status, 'ready');
    const expected = {
      all: ['database', 'gateway'],
      gateway: ['nats', 'gateway'],
      persister: ['nats', 'database'],
      presence: ['nats'],
    }[role];
    assert.deepEqual(Object.keys(body.checks).sort(), expected.sort(), `${role} checks`);
    assert.ok(Object.values(body.checks).every((v) => v === 'ok'), JSON.stringify(body));
  }
});

test('GET /metrics: Prometheus text with every metric of the role, build info included', async () => {
  for (const { role, url, names } of roles()) {
    const { status, contentType, series } = await scrape(url);
    assert.equal(status, 200, `${role} /metrics`);
    assert.match(contentType, /^text\/plain/);
    const present = families(series);
    const missing = names.filter((n) => !present.has(n));
    assert.deepEqual(missing, [], `${role} (${url}) lacks metrics`);
    assert.equal(value(series, 'chat_build_info', { role }), 1, `${role} build info`);
    assert.ok(value(series, 'process_resident_memory_bytes') > 0, 'resident memory is measured');
  }
});

test('/metrics: a message moves the counters and histograms of every role it crosses', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const before = {
    gwA: (await scrape(gatewayUrl(0))).series,
    gwB: (await scrape(gatewayUrl(1))).series,
    persister: (await scrape(persisterUrl())).series,
  };
  const sa = await srv.connect(a, { gateway: 0 }); // in a cluster: a on gateway A, b on gateway B
  const sb = await srv.connect(b, { gateway: 1 });
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);
  const received = srv.once(sb, 'receive-message');
  await srv.send(sa, a, conv.id, 'counted');
  await received;

  const delta = (series, old, name, labels) => value(series, name, labels) - value(old, name, labels);
  // The lane times its wait for the outcome once the outcome is in, just after the ack.
  const gwA = await until(gatewayUrl(0), (s) => delta(s, before.gwA, 'chat_gateway_send_ack_seconds_count') >= 1
    && delta(s, before.gwA, 'chat_gateway_outcome_wait_seconds_count') >= 1, 'send-to-ack and outcome wait recorded');
  // The stages of the send on its gateway: in the lane, onto the work queue, the persister's answer.
  assert.ok(delta(gwA, before.gwA, 'chat_gateway_outbox_wait_seconds_count') >= 1, 'wait in the lane timed');
  assert.ok(delta(gwA, before.gwA, 'chat_gateway_enqueue_seconds_count') >= 1, 'enqueue timed');
  assert.ok(delta(gwA, before.gwA, 'chat_gateway_events_in_total', { event: 'send-message' }) >= 1);
  assert.ok(delta(gwA, before.gwA, 'chat_gateway_events_in_total', { event: 'join-conversation' }) >= 1);
  assert.ok(delta(gwA, before.gwA, 'chat_gateway_events_out_total', { event: 'message-sent' }) >= 1);
  assert.ok(gwA.some((s) => s.name === 'chat_gateway_send_ack_seconds_bucket' && s.labels.le === '+Inf'),
    'the latency histogram has buckets');
  assert.ok(value(gwA, 'chat_gateway_connections') >= 1, 'the open connection is counted');
  assert.ok(value(gwA, 'chat_gateway_rooms') >= 1, 'the joined room is counted');

  const gwB = (await scrape(gatewayUrl(1))).series;
  assert.ok(delta(gwB, before.gwB, 'chat_gateway_events_out_total', { event: 'receive-message' }) >= 1);

  const persister = (await scrape(persisterUrl())).series;
  assert.ok(delta(persister, before.persister, 'chat_persister_messages_stored_total') >= 1, 'stored counted');
  assert.ok(delta(persister, before.persister, 'chat_persister_batch_size_count') >= 1, 'batch size recorded');
  assert.ok(delta(persister, before.persister, 'chat_persister_insert_seconds_count') >= 1, 'insert timed');
  assert.ok(persister.some((s) => s.name === 'chat_persister_insert_seconds_bucket'), 'insert histogram buckets');
  assert.ok(delta(persister, before.persister, 'chat_persister_queue_wait_seconds_count') >= 1, 'wait in the queue timed');
  assert.ok(delta(persister, before.persister, 'chat_persister_batch_fill_seconds_count') >= 1, 'batch fill timed');

  await until(presenceUrl(), (s) => value(s, 'chat_presence_online_users') >= 2
    && value(s, 'chat_presence_sockets') >= 2, 'both users online');
});

test('/metrics: refused requests are counted as errors by kind', async () => {
  const [a, b] = srv.users(2);
  await srv.openConversation(a, b);
  const sa = await srv.connect(a, { gateway: 0 });
  const errorsOf = async (kind) => value((await scrape(gatewayUrl(0))).series, 'chat_gateway_errors_total', { kind });
  const validation = await errorsOf('validation');
  const unauthorized = await errorsOf('unauthorized');
  const refused = srv.once(sa, 'message-error');
  sa.emit('send-message', { sender_id: a, conversation_id: 1, message_type: 'text', content: '' });
  await refused;
  const impostor = srv.once(sa, 'message-error');
  sa.emit('send-message', { sender_id: b, conversation_id: 1, message_type: 'text', content: 'x' });
  await impostor;
  assert.equal(await errorsOf('validation'), validation + 1);
  assert.equal(await errorsOf('unauthorized'), unauthorized + 1);
});
