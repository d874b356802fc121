// join-conversation, leave-conversation and typing.

import assert from 'node:assert/strict';
import { test, useServer } from './harness.mjs';

const srv = useServer();

const CID_INT = 'conversationId must be an integer number';
const NOT_FOUND = 'Conversation not found';
const UNAUTH_JOIN = 'Unauthorized to join this conversation';

// --- join-conversation: success ---------------------------------------------

test('join-conversation with an ack: joined-conversation event and ack {success: true, conversationId}', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const joined = srv.once(sa, 'joined-conversation');
  const noErr = srv.expectNone(sa, 'error', 400);
  const ack = await sa.timeout(3000).emitWithAck('join-conversation', { conversationId: conv.id, userId: a });
  assert.deepEqual(ack, { success: true, conversationId: conv.id });
  assert.deepEqual(await joined, { conversationId: conv.id, success: true });
  await noErr;
});

test('join-conversation without an ack: joined-conversation event, and the socket then receives messages', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  const joined = srv.once(sb, 'joined-conversation');
  sb.emit('join-conversation', { conversationId: conv.id, userId: b });
  assert.deepEqual(await joined, { conversationId: conv.id, success: true });

  const recv = srv.once(sb, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'to joined b');
  assert.deepEqual(await recv, sent);
});

test('join-conversation with userId omitted succeeds (userId is optional)', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sb = await srv.connect(b);
  const joined = srv.once(sb, 'joined-conversation');
  const ack = await sb.timeout(3000).emitWithAck('join-conversation', { conversationId: conv.id });
  assert.deepEqual(ack, { success: true, conversationId: conv.id });
  assert.deepEqual(await joined, { conversationId: conv.id, success: true });
});

test('join-conversation twice is harmless: still one receive-message per message', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sb, conv.id);
  await srv.join(sb, conv.id);
  const first = srv.once(sb, 'receive-message');
  await srv.send(sa, a, conv.id, 'once');
  await first;
  await srv.expectNone(sb, 'receive-message', 300);
});

// --- join-conversation: failures --------------------------------------------

/**
 * Emits join-conversation (with an ack) and asserts: `error` {message}, ack
 * {success: false, error: message[, conversationId]}, no joined-conversation.
 */
async function expectJoinFailure(s, args, message, expectedConversationId) {
  const errP = srv.once(s, 'error');
  const noJoined = srv.expectNone(s, 'joined-conversation', 500);
  const ack = await s.timeout(3000).emitWithAck('join-conversation', ...args);
  assert.equal(typeof ack, 'object');
  assert.equal(ack.success, false, `ack: ${JSON.stringify(ack)}`);
  assert.equal(ack.error, message, `ack: ${JSON.stringify(ack)}`);
  if (expectedConversationId !== undefined) {
    assert.deepEqual(ack, { success: false, conversationId: expectedConversationId, error: message });
  }
  assert.deepEqual(await errP, { message });
  await noJoined;
}

test('join-conversation: unknown conversation → error + ack "Conversation not found"', async () => {
  const [a] = srv.users(1);
  const sa = await srv.connect(a);
  await expectJoinFailure(sa, [{ conversationId: 876_543_210, userId: a }], NOT_FOUND, 876_543_210);
});

test('join-conversation: not a participant → error + ack "Unauthorized to join this conversation", and no messages leak', async () => {
  const [a, b, c] = srv.users(3);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sc = await srv.connect(c);
  await expectJoinFailure(sc, [{ conversationId: conv.id, userId: c }], UNAUTH_JOIN, conv.id);

  const noLeak = srv.expectNone(sc, 'receive-message', 400);
  await srv.send(sa, a, conv.id, 'private');
  await noLeak;
});

test('join-conversation: userId in payload differs from the connected user → "Unauthorized to join this conversation"', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  // b is a participant, but the socket belongs to a.
  await expectJoinFailure(sa, [{ conversationId: conv.id, userId: b }], UNAUTH_JOIN, conv.id);
  // ...and a is not in the room afterwards.
  const noRecv = srv.expectNone(sa, 'receive-message', 400);
  await srv.send(sb, b, conv.id, 'a did not join');
  await noRecv;
});

const badJoinPayloads = [
  ['conversationId is a string "abc"', [{ conversationId: 'abc' }]],
  ['conversationId is the numeric string "1"', [{ conversationId: '1' }]],
  ['conversationId is 1.5', [{ conversationId: 1.5 }]],
  ['conversationId missing', [{}]],
  ['payload is a string', ['conversation-1']],
  ['payload is a number', [7]],
  ['payload is null', [null]],
  ['payload is an array', [[1]]],
  ['no payload at all', []],
];

for (const [name, args] of badJoinPayloads) {
  test(`join-conversation: ${name} → error + ack "${CID_INT}"`, async () => {
    const [a] = srv.users(1);
    const sa = await srv.connect(a);
    await expectJoinFailure(sa, args, CID_INT);
  });
}

test('join-conversation failure without an ack still emits the error event', async () => {
  const [a] = srv.users(1);
  const sa = await srv.connect(a);
  const errP = srv.once(sa, 'error');
  const noJoined = srv.expectNone(sa, 'joined-conversation', 400);
  sa.emit('join-conversation', { conversationId: 555_555_555 });
  assert.deepEqual(await errP, { message: NOT_FOUND });
  await noJoined;
});

// --- leave-conversation -----------------------------------------------------

test('leave-conversation: ack {success: true, conversationId}; afterwards no receive-message / user-typing for that conversation', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);

  // Works before leaving.
  const before = srv.once(sb, 'receive-message');
  await srv.send(sa, a, conv.id, 'before leave');
  await before;

  const ack = await sb.timeout(3000).emitWithAck('leave-conversation', { conversationId: conv.id });
  assert.deepEqual(ack, { success: true, conversationId: conv.id });

  const noRecv = srv.expectNone(sb, 'receive-message', 500);
  const noTyping = srv.expectNone(sb, 'user-typing', 500);
  const sent = await srv.send(sa, a, conv.id, 'after leave');
  assert.equal(sent.content, 'after leave');
  sa.emit('typing', { conversationId: conv.id, userId: a, isTyping: true });
  await Promise.all([noRecv, noTyping]);

  // The message was still stored.
  assert.equal((await srv.history(conv.id)).total, 2);
});

test('leave-conversation without an ack works and the socket can re-join', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sb, conv.id);
  sb.emit('leave-conversation', { conversationId: conv.id });
  // Give the server a moment, then verify b no longer receives.
  const noRecv = srv.expectNone(sb, 'receive-message', 400);
  await new Promise((r) => setTimeout(r, 100));
  await srv.send(sa, a, conv.id, 'gone');
  await noRecv;

  await srv.join(sb, conv.id);
  const recv = srv.once(sb, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'back');
  assert.equal((await recv).id, sent.id);
});

test('leave-conversation of one conversation keeps the socket in its other conversations', async () => {
  const [a, b, c] = srv.users(3);
  const convAB = await srv.openConversation(a, b);
  const convAC = await srv.openConversation(a, c);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  const sc = await srv.connect(c);
  await srv.join(sa, convAB.id);
  await srv.join(sa, convAC.id);
  await sa.timeout(3000).emitWithAck('leave-conversation', { conversationId: convAB.id });

  const noAB = srv.expectNone(sa, 'receive-message', 400, (m) => m.conversation_id === convAB.id);
  const recvAC = srv.once(sa, 'receive-message', 3000, (m) => m.conversation_id === convAC.id);
  await srv.send(sb, b, convAB.id, 'to ab');
  const sent = await srv.send(sc, c, convAC.id, 'to ac');
  assert.equal((await recvAC).id, sent.id);
  await noAB;
});

const badLeavePayloads = [
  ['conversationId is a string', [{ conversationId: 'abc' }]],
  ['conversationId is 1.5', [{ conversationId: 1.5 }]],
  ['conversationId missing', [{}]],
  ['payload is a string', ['x']],
  ['payload is null', [null]],
  ['no payload at all', []],
];

for (const [name, args] of badLeavePayloads) {
  test(`leave-conversation: ${name} → error "${CID_INT}"`, async () => {
    const [a] = srv.users(1);
    const sa = await srv.connect(a);
    const errP = srv.once(sa, 'error');
    sa.emit('leave-conversation', ...args);
    assert.deepEqual(await errP, { message: CID_INT });
    assert.equal(sa.connected, true);
  });
}

// --- typing -----------------------------------------------------------------

test('typing: other sockets in the room get user-typing {conversationId, userId, isTyping}; the sender does not', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);

  const noSelf = srv.expectNone(sa, 'user-typing', 500);
  const gotB = srv.once(sb, 'user-typing');
  sa.emit('typing', { conversationId: conv.id, userId: a, isTyping: true });
  assert.deepEqual(await gotB, { conversationId: conv.id, userId: a, isTyping: true });

  const gotB2 = srv.once(sb, 'user-typing');
  sa.emit('typing', { conversationId: conv.id, userId: a, isTyping: false });
  assert.deepEqual(await gotB2, { conversationId: conv.id, userId: a, isTyping: false });
  await noSelf;

  // And the other direction.
  const gotA = srv.once(sa, 'user-typing');
  sb.emit('typing', { conversationId: conv.id, userId: b, isTyping: true });
  assert.deepEqual(await gotA, { conversationId: conv.id, userId: b, isTyping: true });
});

test('typing: another socket of the same user in the room gets user-typing, the sending socket does not', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa1 = await srv.connect(a);
  const sa2 = await srv.connect(a);
  await srv.join(sa1, conv.id);
  await srv.join(sa2, conv.id);

  const noSelf = srv.expectNone(sa1, 'user-typing', 400);
  const got = srv.once(sa2, 'user-typing');
  sa1.emit('typing', { conversationId: conv.id, userId: a, isTyping: true });
  assert.deepEqual(await got, { conversationId: conv.id, userId: a, isTyping: true });
  await noSelf;
});

test('typing: userId in user-typing is the connected user, whatever the payload says', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);
  const got = srv.once(sb, 'user-typing');
  sa.emit('typing', { conversationId: conv.id, userId: b, isTyping: true });
  const ev = await got;
  assert.equal(ev.userId, a, `user-typing.userId must be the sender's connected id ${a}, got ${JSON.stringify(ev)}`);
  assert.deepEqual(ev, { conversationId: conv.id, userId: a, isTyping: true });
});

test('typing: sockets not joined to the room get nothing', async () => {
  const [a, b, c] = srv.users(3);
  const conv = await srv.openConversation(a, b);
  const convAC = await srv.openConversation(a, c);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b); // participant, not joined
  const sc = await srv.connect(c); // in another conversation with a
  await srv.join(sa, conv.id);
  await srv.join(sc, convAC.id);
  const noB = srv.expectNone(sb, 'user-typing', 400);
  const noC = srv.expectNone(sc, 'user-typing', 400);
  sa.emit('typing', { conversationId: conv.id, userId: a, isTyping: true });
  await Promise.all([noB, noC]);
});

test('typing from a socket that has not joined → error "Join the conversation before typing in it", nobody gets user-typing', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b); // NOT joined
  await srv.join(sa, conv.id);

  const errP = srv.once(sb, 'error');
  const noA = srv.expectNone(sa, 'user-typing', 500);
  const noB = srv.expectNone(sb, 'user-typing', 500);
  sb.emit('typing', { conversationId: conv.id, userId: b, isTyping: true });
  assert.deepEqual(await errP, { message: 'Join the conversation before typing in it' });
  await Promise.all([noA, noB]);
});

test('typing after leave-conversation → error "Join the conversation before typing in it"', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);
  await sb.timeout(3000).emitWithAck('leave-conversation', { conversationId: conv.id });
  const errP = srv.once(sb, 'error');
  const noA = srv.expectNone(sa, 'user-typing', 400);
  sb.emit('typing', { conversationId: conv.id, userId: b, isTyping: true });
  assert.deepEqual(await errP, { message: 'Join the conversation before typing in it' });
  await noA;
});

const badTyping = [
  ['isTyping is the string "true"', (c, u) => ({ conversationId: c, userId: u, isTyping: 'true' }), 'isTyping must be a boolean value'],
  ['isTyping is 1', (c, u) => ({ conversationId: c, userId: u, isTyping: 1 }), 'isTyping must be a boolean value'],
  ['isTyping missing', (c, u) => ({ conversationId: c, userId: u }), 'isTyping must be a boolean value'],
  ['conversationId is a string', (c, u) => ({ conversationId: String(c), userId: u, isTyping: true }), CID_INT],
  ['conversationId is 1.5', (c, u) => ({ conversationId: 1.5, userId: u, isTyping: true }), CID_INT],
  ['conversationId missing', (c, u) => ({ userId: u, isTyping: true }), CID_INT],
];

for (const [name, build, message] of badTyping) {
  test(`typing: ${name} → error "${message}", nobody gets user-typing`, async () => {
    const [a, b] = srv.users(2);
    const conv = await srv.openConversation(a, b);
    const sa = await srv.connect(a);
    const sb = await srv.connect(b);
    await srv.join(sa, conv.id);
    await srv.join(sb, conv.id);
    const errP = srv.once(sa, 'error');
    const noB = srv.expectNone(sb, 'user-typing', 400);
    sa.emit('typing', build(conv.id, a));
    assert.deepEqual(await errP, { message });
    await noB;
    assert.equal(sa.connected, true);
  });
}

test('join-conversation: a socket may be in at most 100 conversations at once', async () => {
  const [a, ...others] = srv.users(102);
  const sa = await srv.connect(a);
  const convs = [];
  for (const other of others) convs.push(await srv.openConversation(a, other));
  for (const conv of convs.slice(0, 100)) await srv.join(sa, conv.id);
  // 100 joins spend the whole join burst (100, refilled at 20/s); the two joins
  // below must meet the room limit, not the rate limit, so let 5 tokens refill.
  await new Promise((resolve) => setTimeout(resolve, 250));
  const extra = convs[100].id;
  const ack = await sa.timeout(3000).emitWithAck('join-conversation', { conversationId: extra });
  assert.deepEqual(ack, {
    success: false,
    conversationId: extra,
    error: 'Too many conversations joined on this connection (at most 100); leave one first',
  });
  // Events run concurrently on the server: wait for the leave before joining again.
  await sa.timeout(3000).emitWithAck('leave-conversation', { conversationId: convs[0].id });
  await srv.join(sa, extra);
});
