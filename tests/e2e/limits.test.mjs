// Rate limits per user (token buckets, per gateway) and connection limits per user.
// Defaults: sends 20/s with bursts of 40, typing 10/s with bursts of 20, 20 connections per user.

import assert from 'node:assert/strict';
import { test, useServer } from './harness.mjs';

const srv = useServer();

test('a send flood is cut at the burst with a clear error, and only confirmed sends are stored', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sent = [];
  const errors = [];
  sa.on('message-sent', (m) => sent.push(m.id));
  sa.on('message-error', (e) => errors.push(e.error));
  for (let i = 0; i < 80; i++) {
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `flood ${i}` });
  }
  const deadline = Date.now() + 10_000;
  while (sent.length + errors.length < 80 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  assert.equal(sent.length + errors.length, 80, 'every send is answered');
  assert.ok(sent.length >= 40 && sent.length < 60, `the burst (40) and a little refill pass: ${sent.length}`);
  assert.ok(errors.every((e) => e === 'Rate limit exceeded: too many messages, slow down'), JSON.stringify([...new Set(errors)]));
  assert.equal((await srv.history(conv.id)).total, sent.length, 'refused sends are not stored');
  // The bucket refills: after a pause the user can send again.
  await new Promise((r) => setTimeout(r, 1000));
  await srv.send(sa, a, conv.id, 'after the pause');
});

test('a typing flood is cut at the burst; the others hear no more than that', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);
  let heard = 0;
  const refusals = [];
  sb.on('user-typing', () => heard++);
  sa.on('error', (e) => refusals.push(e.message));
  for (let i = 0; i < 60; i++) sa.emit('typing', { conversationId: conv.id, userId: a, isTyping: i % 2 === 0 });
  await new Promise((r) => setTimeout(r, 1000));
  assert.ok(heard >= 20 && heard < 35, `the burst (20) and a little refill reach the room: ${heard}`);
  assert.equal(heard + refusals.length, 60);
  assert.ok(refusals.every((m) => m === 'Rate limit exceeded: too many typing events, slow down'));
});

test('a user may hold at most 20 connections on a gateway', async () => {
  const [a] = srv.users(1);
  const open = [];
  for (let i = 0; i < 20; i++) open.push(await srv.connect(a, { gateway: 0 }));
  const extra = srv.socket({ userId: a }, { gateway: 0 });
  const refused = srv.once(extra, 'error');
  const gone = srv.once(extra, 'disconnect');
  assert.deepEqual(await refused, { message: 'Too many connections for this user (at most 20)' });
  assert.equal(await gone, 'io server disconnect');
  open.pop().close();
  await new Promise((r) => setTimeout(r, 200));
  await srv.connect(a, { gateway: 0 }); // a closed connection frees its place
});

test('a join flood is cut at the burst with a clear error', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const acks = await Promise.all(
    Array.from({ length: 160 }, () => sa.timeout(5000).emitWithAck('join-conversation', { conversationId: conv.id })),
  );
  const refused = acks.filter((ack) => !ack.success);
  assert.ok(refused.length >= 40, `the burst (100) and a little refill pass: ${160 - refused.length}`);
  assert.ok(refused.every((ack) => ack.error === 'Rate limit exceeded: too many joins, slow down'));
});
