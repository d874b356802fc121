// Hostile input: bursts of malformed payloads to every event, oversized frames.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer } from './harness.mjs';

const srv = useServer();

const EVENTS = ['send-message', 'join-conversation', 'leave-conversation', 'typing', 'hack'];

// Deeply nested values are written as raw JSON text: JSON.stringify in the
// client would overflow its own stack first.
const nestedObjectJson = (depth) => `${'{"sender_id":'.repeat(depth)}1${'}'.repeat(depth)}`;
const nestedArrayJson = (depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`;

function nestedObject(depth) {
  let o = { leaf: true };
  for (let i = 0; i < depth; i++) o = { sender_id: o, conversation_id: i };
  return o;
}

function wideObject(keys) {
  const o = {};
  for (let i = 0; i < keys; i++) o[`k${i}`] = i % 2 ? `v${i}` : i;
  return o;
}

/** Payload list for one event, built around a real conversation id. */
function badPayloads(convId, userId) {
  const big = 'z'.repeat(200 * 1024);
  return [
    nestedObject(200),
    wideObject(20_000),
    big,
    { sender_id: userId, conversation_id: convId, message_type: 'text', content: big },
    { conversationId: convId, userId, isTyping: big },
    Buffer.alloc(64 * 1024, 0xab),
    { sender_id: Buffer.from([1, 2, 3]), conversation_id: convId, message_type: 'text', content: Buffer.from('hi') },
    { sender_id: 'x', conversation_id: [], message_type: {}, content: null },
    { sender_id: {}, conversation_id: 'y', message_type: null, content: [] },
    { sender_id: true, conversation_id: false, message_type: 1, content: true },
    { sender_id: 1e308, conversation_id: -1e308, message_type: 'text', content: 'x' },
    { sender_id: Number.MAX_SAFE_INTEGER + 2, conversation_id: 2 ** 63, message_type: 'text', content: 'x' },
    { sender_id: null, conversation_id: null, message_type: null, content: null },
    { conversationId: {}, userId: [], isTyping: {} },
    { conversationId: -1, userId: 'me', isTyping: null },
    { conversationId: 2 ** 64, userId: 2 ** 64, isTyping: 0 },
    { conversationId: convId, userId: { $ne: null }, isTyping: 'yes' },
    JSON.parse('{"__proto__": {"polluted": true}, "constructor": {"prototype": {"x": 1}}}'),
    { content: '\u0000\uffff\ud800 \u202e', message_type: 'text\u0000', sender_id: userId, conversation_id: convId },
    [],
    [1, 2, 3],
    0,
    -1,
    true,
    null,
    '',
  ];
}

test('bursts of malformed payloads to every event: server survives, stores nothing, normal clients keep working', async () => {
  const [a, b, c, d] = srv.users(4);
  const conv = await srv.openConversation(a, b);

  // Several hostile connections (a deep/large frame may get a socket closed; reconnect as needed).
  let attackers = 0;
  let closedByServer = 0;
  for (const ev of EVENTS) {
    let s = await srv.connect(a);
    attackers++;
    await srv.join(s, conv.id);
    for (const payload of badPayloads(conv.id, a)) {
      if (!s.connected) {
        closedByServer++;
        s = await srv.connect(a);
        attackers++;
      }
      s.emit(ev, payload);
      s.emit(ev, payload, payload, payload); // extra arguments
      s.emit(ev, payload, () => {}); // with an ack
    }
    s.emit(ev);
    s.emit(ev, undefined, () => {});
    // Raw packets: 5000-deep array, 5000-deep object, extra arguments, broken JSON.
    for (const raw of [
      `["${ev}",${nestedArrayJson(5000)}]`,
      `["${ev}",${nestedObjectJson(5000)}]`,
      `["${ev}",{"conversation_id":${nestedArrayJson(3000)},"sender_id":${nestedObjectJson(3000)}}]`,
      `["${ev}",1,2,3,4,5,6,7,8,9,10]`,
      `["${ev}",{"sender_id":1e999999,"conversation_id":-0,"content":"\\ud800"}]`,
      `["${ev}",{"a":1,"a":2,"sender_id":1,"sender_id":"1"}]`,
      `["${ev}",{`,
      `[${nestedArrayJson(5000)}]`,
      `{"not":"an array"}`,
      '[]',
    ]) {
      if (!s.connected) {
        closedByServer++;
        s = await srv.connect(a);
        attackers++;
      }
      srv.rawEmit(s, raw);
      await sleep(5);
    }
    await sleep(50);
  }
  // Rapid-fire garbage on a fresh socket without waiting.
  const spam = await srv.connect(c);
  for (let i = 0; i < 500; i++) spam.emit(EVENTS[i % EVENTS.length], { i, junk: 'x'.repeat(i) });
  await sleep(300);

  assert.ok(srv.isAlive(), 'server process is still running');
  const health = await srv.api('GET', '/healthz');
  assert.equal(health.status, 200);
  assert.equal((await srv.history(conv.id)).total, 0, 'no malformed payload was stored as a message');

  // A normal client connects, joins, sends and receives.
  const [x, y] = [b, d];
  const conv2 = await srv.openConversation(x, y);
  const sx = await srv.connect(x);
  const sy = await srv.connect(y);
  await srv.join(sx, conv2.id);
  await srv.join(sy, conv2.id);
  const recv = srv.once(sy, 'receive-message');
  const sent = await srv.send(sx, x, conv2.id, 'all good');
  assert.deepEqual(await recv, sent);
  const typing = srv.once(sy, 'user-typing');
  sx.emit('typing', { conversationId: conv2.id, userId: x, isTyping: true });
  assert.deepEqual(await typing, { conversationId: conv2.id, userId: x, isTyping: true });

  // The original conversation still works too.
  const sa = await srv.connect(a);
  const sent2 = await srv.send(sa, a, conv.id, 'real message');
  assert.equal(sent2.content, 'real message');
  assert.equal((await srv.history(conv.id)).total, 1);
  // Sanity: the attack actually ran.
  assert.ok(attackers >= EVENTS.length, `attackers=${attackers} closed=${closedByServer}`);
});

test('content of 200,000 characters (frame under 1 MB) → message-error "content must be shorter than or equal to 10000 characters", connection stays open', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const errP = srv.once(sa, 'message-error', 5000);
  sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'q'.repeat(200_000) });
  assert.deepEqual(await errP, { error: 'content must be shorter than or equal to 10000 characters' });
  assert.equal(sa.connected, true);
  const ok = await srv.send(sa, a, conv.id, 'small');
  assert.equal(ok.content, 'small');
});

test('a frame larger than 1 MB closes only that client; other clients keep working', async () => {
  const [a, b, c] = srv.users(3);
  const conv = await srv.openConversation(a, b);
  const convC = await srv.openConversation(c, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  const sc = await srv.connect(c); // same user pair-partner b, different conversation
  const sa2 = await srv.connect(a); // another socket of the same user as the offender
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);
  await srv.join(sa2, conv.id);

  const offender = await srv.connect(a);
  const closed = srv.once(offender, 'disconnect', 8000);
  const noSent = srv.expectNone(offender, 'message-sent', 1500);
  const noRecvB = srv.expectNone(sb, 'receive-message', 1500);
  offender.emit('send-message', {
    sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'L'.repeat(2_000_000),
  });
  const reason = await closed;
  assert.ok(typeof reason === 'string' && reason.length > 0);
  assert.notEqual(reason, 'io client disconnect');
  await Promise.all([noSent, noRecvB]);
  assert.equal(offender.connected, false);

  // Everyone else is still connected and working.
  for (const s of [sa, sb, sc, sa2]) assert.equal(s.connected, true, `${s.__label} still connected`);
  const recvB = srv.once(sb, 'receive-message');
  const recvA2 = srv.once(sa2, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'after the big frame');
  assert.deepEqual(await recvB, sent);
  assert.deepEqual(await recvA2, sent);
  const sentC = await srv.send(sc, c, convC.id, 'c still fine');
  assert.equal(sentC.content, 'c still fine');

  const h = await srv.history(conv.id);
  assert.equal(h.total, 1, 'the oversized message was not stored');
  assert.equal(h.data[0].content, 'after the big frame');

  // The offender's user can reconnect right away.
  const again = await srv.connect(a);
  assert.equal(again.connected, true);
  assert.ok(srv.isAlive());
});
