// Delivery guarantees seen by a client: idempotent sends (client_msg_id), per-conversation
// order under concurrent senders, replay of missed messages on join (lastMessageId), and
// cursor pagination of history. Runs all-in-one and as a cluster (users alternate gateways).

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test, useServer, firstOf } from './harness.mjs';

const srv = useServer();

/** Emits a send and resolves with the first message-sent or message-error that follows. */
function sendRaw(s, payload, timeoutMs = 5000) {
  const answered = firstOf(s, {
    'message-sent': (m) => ({ sent: m }),
    'message-error': (e) => ({ error: e.error }),
  }, timeoutMs, 'no answer to send-message');
  s.emit('send-message', payload);
  return answered;
}

test('a retried send with the same client_msg_id is stored once and confirmed with the same message', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const first = await srv.connect(a, { gateway: 0 });
  const id = randomUUID();
  const payload = { sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'once', client_msg_id: id };
  const original = await sendRaw(first, payload);
  assert.ok(original.sent, `first send: ${JSON.stringify(original)}`);
  const again = await sendRaw(first, payload);
  assert.deepEqual(again.sent, original.sent, 'same socket, same id: the original message');
  // The retry through another socket (in cluster mode: the other gateway), upper-case spelling.
  const second = await srv.connect(a, { gateway: srv.gateways.length - 1 });
  const retried = await sendRaw(second, { ...payload, client_msg_id: id.toUpperCase() });
  assert.deepEqual(retried.sent, original.sent, 'other socket: the original message');
  const page = await srv.history(conv.id);
  assert.equal(page.total, 1, 'stored once');
  // Without client_msg_id, two equal sends are two messages (the spec's behaviour).
  const plain = { sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'twice' };
  const [x, y] = [await sendRaw(first, plain), await sendRaw(first, plain)];
  assert.notEqual(x.sent.id, y.sent.id);
  assert.equal((await srv.history(conv.id)).total, 3);
});

test('client_msg_id must be a UUID', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const s = await srv.connect(a);
  for (const bad of ['abc', 42, {}, '']) {
    const answer = await sendRaw(s, { sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'x', client_msg_id: bad });
    assert.deepEqual(answer, { error: 'client_msg_id must be a UUID' }, `client_msg_id = ${JSON.stringify(bad)}`);
  }
  assert.equal((await srv.history(conv.id)).total, 0);
});

test('concurrent senders: every client receives the conversation in increasing id order', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);
  const perSender = 40;
  const got = { a: [], b: [] };
  const done = new Promise((resolve) => {
    const check = () => got.a.length >= 2 * perSender && got.b.length >= 2 * perSender && resolve();
    sa.on('receive-message', (m) => { got.a.push(m.id); check(); });
    sb.on('receive-message', (m) => { got.b.push(m.id); check(); });
  });
  for (let i = 0; i < perSender; i++) {
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `a${i}` });
    sb.emit('send-message', { sender_id: b, conversation_id: conv.id, message_type: 'text', content: `b${i}` });
  }
  await Promise.race([done, new Promise((_, reject) => setTimeout(() => reject(new Error(
    `timed out: a got ${got.a.length}, b got ${got.b.length} of ${2 * perSender}`)), 15_000))]);
  for (const [who, ids] of Object.entries(got)) {
    assert.equal(ids.length, 2 * perSender, `${who}: no duplicates`);
    for (let i = 1; i < ids.length; i++) assert.ok(ids[i - 1] < ids[i], `${who}: id ${ids[i]} after ${ids[i - 1]}`);
  }
  assert.deepEqual(got.a, got.b, 'both clients see one order');
});

test('join with lastMessageId replays what was missed, in order, before live messages', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  await srv.join(sa, conv.id);
  const seen = await srv.send(sa, a, conv.id, 'seen');
  const missed = [];
  for (let i = 0; i < 25; i++) missed.push((await srv.send(sa, a, conv.id, `missed ${i}`)).id);

  const sb = await srv.connect(b);
  const received = [];
  sb.on('receive-message', (m) => received.push(m.id));
  const joined = sb.timeout(5000).emitWithAck('join-conversation', { conversationId: conv.id, lastMessageId: seen.id });
  // Live messages race with the replay.
  const live = [];
  for (let i = 0; i < 5; i++) live.push((await srv.send(sa, a, conv.id, `live ${i}`)).id);
  assert.deepEqual(await joined, { success: true, conversationId: conv.id });
  const deadline = Date.now() + 5000;
  while (new Set(received).size < missed.length + live.length && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const distinct = [...new Set(received)];
  assert.deepEqual(distinct, [...missed, ...live], 'every missed and live message, in id order');
  for (let i = 1; i < received.length; i++) {
    assert.ok(received[i - 1] <= received[i], `ids never go backwards: ${received[i]} after ${received[i - 1]}`);
  }
  assert.ok(!received.includes(seen.id), 'the message already seen is not replayed');
});

test('join with lastMessageId 0 replays the whole conversation; a bad one is refused', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await srv.send(sa, a, conv.id, `m${i}`)).id);
  const sb = await srv.connect(b);
  const received = [];
  sb.on('receive-message', (m) => received.push(m.id));
  const ack = await sb.timeout(3000).emitWithAck('join-conversation', { conversationId: conv.id, lastMessageId: 0 });
  assert.equal(ack.success, true);
  assert.deepEqual(received, ids);
  const bad = await sb.timeout(3000).emitWithAck('join-conversation', { conversationId: conv.id, lastMessageId: -1 });
  assert.deepEqual(bad, { success: false, conversationId: conv.id, error: 'lastMessageId must be a non-negative integer' });
});

test('history pages by cursor: after and before a message id', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const s = await srv.connect(a);
  const ids = [];
  for (let i = 0; i < 7; i++) ids.push((await srv.send(s, a, conv.id, `m${i}`)).id);
  const after = await srv.history(conv.id, `?after=${ids[1]}&limit=3`);
  assert.deepEqual(after.data.map((m) => m.id), ids.slice(2, 5));
  assert.equal(after.after, ids[1]);
  assert.equal(after.total, 7);
  const before = await srv.history(conv.id, `?before=${ids[5]}&limit=2`);
  assert.deepEqual(before.data.map((m) => m.id), ids.slice(3, 5), 'the two before, oldest first');
  const fromStart = await srv.history(conv.id, '?after=0&limit=100');
  assert.deepEqual(fromStart.data.map((m) => m.id), ids);
  for (const bad of ['?after=-1', '?before=0', '?after=x', `?after=1&before=${ids[6]}`]) {
    const res = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages${bad}`);
    assert.equal(res.status, 400, `${bad} → ${res.status}`);
  }
});
