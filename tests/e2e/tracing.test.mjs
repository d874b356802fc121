// Trace export (cluster only): every role exports its spans over OTLP/HTTP (JSON here) to a
// receiver in this test, and one message's spans, across both gateways and the persister,
// form one trace with the right parent/child links:
//
//   send-message (gateway, server)
//   └─ enqueue (gateway, producer)
//      └─ store-message (persister, consumer)      ← linked from the batch's persist-batch
//         ├─ publish-message (persister, producer)
//         │  └─ receive-message (each gateway with a member of the room, consumer)
//         └─ publish-outcome (persister, producer)
//            └─ message-sent (the sender's gateway, consumer)

import assert from 'node:assert/strict';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { after } from 'node:test';
import { test, useServer } from './harness.mjs';

/** Spans received, each with the service name of the process that sent it. */
const spans = [];
const bodies = { json: 0, other: 0 };

/** An OTLP/HTTP receiver: POST /v1/traces with a JSON ExportTraceServiceRequest. */
const receiver = http.createServer((req, res) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end();
      return;
    }
    if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
      bodies.other++;
      res.writeHead(415).end();
      return;
    }
    bodies.json++;
    const request = JSON.parse(Buffer.concat(chunks).toString('utf8'));
    for (const rs of request.resourceSpans ?? []) {
      const attribute = (rs.resource?.attributes ?? []).find((a) => a.key === 'service.name');
      const service = attribute?.value?.stringValue;
      for (const ss of rs.scopeSpans ?? []) for (const span of ss.spans ?? []) spans.push({ service, ...span });
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
  });
});
await new Promise((resolve) => receiver.listen(0, '127.0.0.1', resolve));
receiver.unref();
after(() => new Promise((resolve) => receiver.close(() => resolve())));

const srv = useServer({
  only: 'cluster',
  env: {
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${receiver.address().port}`,
    OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
    OTEL_BSP_SCHEDULE_DELAY: '100',
  },
});

/** OTLP JSON span kinds: a number (protobuf enum) or its name. */
const KINDS = { 1: 'internal', 2: 'server', 3: 'client', 4: 'producer', 5: 'consumer' };
const kindOf = (span) => (typeof span.kind === 'number' ? KINDS[span.kind] : String(span.kind).replace('SPAN_KIND_', '').toLowerCase());
const isRoot = (span) => !span.parentSpanId || /^0*$/.test(span.parentSpanId);
const show = (list) => list.map((s) => `${s.service}/${s.name} ${s.traceId}/${s.spanId}<-${s.parentSpanId || '-'}`).join('\n');

/** Waits until `find()` returns something truthy; fails with the spans seen so far. */
async function eventually(find, what, timeoutMs = 15_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found) return found;
    if (Date.now() > deadline) assert.fail(`${what} not exported within ${timeoutMs} ms; spans seen:\n${show(spans)}`);
    await sleep(100);
  }
}

test('one message is one trace: gateway, persister and both delivering gateways, linked parent to child', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const received = srv.once(sb, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'traced');
  await received;

  const send = await eventually(
    () => spans.find((s) => s.name === 'send-message' && s.attributes?.some((x) => x.key === 'conversation_id'
      && Number(x.value.intValue ?? x.value.stringValue) === conv.id)),
    'the send-message span',
  );
  const trace = send.traceId;
  assert.match(trace, /^[0-9a-f]{32}$/, 'trace ids are hex');
  const inTrace = () => spans.filter((s) => s.traceId === trace);
  const childOf = (parent, name, service) => () => inTrace()
    .filter((s) => s.name === name && s.parentSpanId === parent.spanId && (!service || s.service === service));
  const one = (list) => (list().length >= 1 ? list()[0] : undefined);

  assert.equal(send.service, 'chat-gateway');
  assert.equal(kindOf(send), 'server');
  assert.ok(isRoot(send), 'send-message is the root of the trace');

  const enqueue = await eventually(() => one(childOf(send, 'enqueue', 'chat-gateway')), 'enqueue under send-message');
  assert.equal(kindOf(enqueue), 'producer');

  const store = await eventually(() => one(childOf(enqueue, 'store-message', 'chat-persister')),
    'store-message (persister) under enqueue (gateway)');
  assert.equal(kindOf(store), 'consumer');

  const publishMessage = await eventually(() => one(childOf(store, 'publish-message', 'chat-persister')),
    'publish-message under store-message');
  const publishOutcome = await eventually(() => one(childOf(store, 'publish-outcome', 'chat-persister')),
    'publish-outcome under store-message');
  assert.equal(kindOf(publishMessage), 'producer');
  assert.equal(kindOf(publishOutcome), 'producer');

  // Both gateways have a member of the room: each delivers, each under the publication.
  const deliveries = await eventually(() => {
    const found = childOf(publishMessage, 'receive-message', 'chat-gateway')();
    return found.length >= 2 ? found : undefined;
  }, 'receive-message on both gateways under publish-message');
  assert.ok(deliveries.every((d) => kindOf(d) === 'consumer'));

  const ack = await eventually(() => one(childOf(publishOutcome, 'message-sent', 'chat-gateway')),
    'message-sent under publish-outcome');
  assert.equal(kindOf(ack), 'consumer');

  // The batch is a trace of its own, linked to the message's enqueue span; the insert is its child.
  const batch = await eventually(() => spans.find((s) => s.name === 'persist-batch'
    && (s.links ?? []).some((l) => l.traceId === trace && l.spanId === enqueue.spanId)), 'persist-batch linked to the trace');
  assert.equal(batch.service, 'chat-persister');
  assert.notEqual(batch.traceId, trace);
  await eventually(() => spans.find((s) => s.name === 'insert-messages' && s.parentSpanId === batch.spanId),
    'insert-messages under persist-batch');

  assert.ok(sent.id > 0);
  assert.equal(bodies.other, 0, 'every export was OTLP JSON');
  const services = new Set(inTrace().map((s) => s.service));
  assert.deepEqual([...services].sort(), ['chat-gateway', 'chat-persister']);
});
