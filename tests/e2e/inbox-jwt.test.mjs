// The inbox (issue 16) in the secure mode: a user lists only their own inbox, and receipts are
// the token's user's. A file of its own because the server's authentication mode is chosen
// for a whole test file (as in security.test.mjs).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test, useServer, firstOf, label } from './harness.mjs';

const SECRET = crypto.randomBytes(32).toString('hex');
const AUDIENCE = 'chat-api';

Object.assign(process.env, {
  CHAT_AUTH: 'jwt',
  CHAT_JWT_SECRET: SECRET,
  CHAT_JWT_AUDIENCE: AUDIENCE,
});

const srv = useServer();

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');

/** An HS256 token for `userId`, valid for five minutes. */
function tokenFor(userId) {
  const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ sub: String(userId), aud: AUDIENCE, exp: Math.floor(Date.now() / 1000) + 300 })}`;
  return `${input}.${crypto.createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

const bearer = (userId) => ({ headers: { authorization: `Bearer ${tokenFor(userId)}` } });

/** A socket authenticated as `userId` (no userId in the query), connected. */
function connectAs(userId, gateway) {
  const s = srv.socket({}, { gateway, auth: { token: tokenFor(userId) } });
  return firstOf(s, {
    connect: () => s,
    connect_error: (err) => { throw new Error(`user ${userId}: connect_error ${err.message} (${label(s)})`); },
    error: (err) => { throw new Error(`user ${userId}: ${err?.message} (${label(s)})`); },
  }, 5000, `user ${userId} did not connect (${label(s)})`);
}

async function openAs(userId, other) {
  const res = await srv.api('POST', '/api/chats/conversations', { sender_id: userId, receiver_id: other }, bearer(userId));
  assert.equal(res.status, 201, res.text);
  return res.body;
}

test("JWT mode: a user reads their own inbox, and nobody else's (403, whatever the query)", async () => {
  const [a, b] = srv.users(2);
  const conv = await openAs(a, b);
  const sa = await connectAs(a, 0);
  const sent = await srv.send(sa, a, conv.id, 'for b');

  const own = await srv.api('GET', `/api/chats/users/${b}/conversations?limit=10`, undefined, bearer(b));
  assert.equal(own.status, 200, own.text);
  assert.deepEqual(own.body.data.map((c) => c.id), [conv.id]);
  assert.equal(own.body.data[0].last_message?.id, sent.id);
  assert.equal(own.body.data[0].unread_count, 1);
  assert.deepEqual([own.body.total_unread, own.body.limit, own.body.next_before], [1, 10, null]);

  for (const query of ['', '?limit=1']) {
    const res = await srv.api('GET', `/api/chats/users/${b}/conversations${query}`, undefined, bearer(a));
    assert.equal(res.status, 403, `${query}: ${res.status} ${res.text}`);
    assert.equal(res.body.message, 'You can only list your own conversations', res.text);
    assert.ok(!res.text.includes('for b'), 'nothing of the inbox leaks');
  }
  const anonymous = await srv.api('GET', `/api/chats/users/${b}/conversations`);
  assert.equal(anonymous.status, 401, anonymous.text);
});

test("JWT mode: receipts move the token's user's position; an outsider's are refused", async () => {
  const [a, b, intruder] = srv.users(3);
  const conv = await openAs(a, b);
  const sa = await connectAs(a, 0);
  const sb = await connectAs(b, 1);
  await srv.join(sa, conv.id);
  const sent = await srv.send(sa, a, conv.id, 'hi b');

  const seen = srv.once(sa, 'message-read', 5000);
  const ack = await sb.timeout(5000).emitWithAck('mark-read', { conversationId: conv.id, messageId: sent.id });
  assert.deepEqual(ack, { success: true, conversationId: conv.id, messageId: sent.id });
  const read = await seen;
  assert.equal(read.userId, b, 'announced as the token\'s user');
  assert.equal(read.messageId, sent.id);
  const list = await srv.api('GET', `/api/chats/users/${b}/conversations`, undefined, bearer(b));
  assert.equal(list.body.data[0].unread_count, 0);
  assert.equal(list.body.data[0].members.find((m) => m.user_id === b)?.last_read_message_id, sent.id);

  const si = await connectAs(intruder, 1);
  const error = srv.once(si, 'error', 5000);
  const refused = await si.timeout(5000).emitWithAck('mark-read', { conversationId: conv.id, messageId: sent.id });
  assert.deepEqual(refused, {
    success: false, conversationId: conv.id, messageId: sent.id, error: 'Unauthorized to join this conversation',
  });
  assert.deepEqual(await error, { message: 'Unauthorized to join this conversation' });
});

test('JWT mode: a group is created as the token\'s user only; its members read its history, others and removed members get 403', async () => {
  const [owner, member, outsider] = srv.users(3);
  const body = { creator_id: owner, name: 'Team', member_ids: [member] };
  const asOther = await srv.api('POST', '/api/chats/groups', body, bearer(member));
  assert.equal(asOther.status, 403, asOther.text);
  assert.equal(asOther.body.message, 'You can only create groups as yourself');
  const anonymous = await srv.api('POST', '/api/chats/groups', body);
  assert.equal(anonymous.status, 401, anonymous.text);
  const created = await srv.api('POST', '/api/chats/groups', body, bearer(owner));
  assert.equal(created.status, 201, created.text);
  const group = created.body;

  const so = await connectAs(owner, 0);
  const sent = await srv.send(so, owner, group.id, 'members only');
  const path = `/api/chats/conversations/${group.id}/messages`;
  const read = await srv.api('GET', path, undefined, bearer(member));
  assert.equal(read.status, 200, read.text);
  assert.deepEqual(read.body.data.map((m) => m.id), [sent.id]);
  const refused = await srv.api('GET', path, undefined, bearer(outsider));
  assert.equal(refused.status, 403, refused.text);
  assert.ok(!refused.text.includes('members only'), 'nothing of the history leaks');

  // The token's user is the actor: a member cannot remove the owner by claiming to be it.
  const sm = await connectAs(member, 1);
  const claimed = await sm.timeout(5000).emitWithAck('remove-member', { conversationId: group.id, userId: owner });
  assert.equal(claimed.success, false, JSON.stringify(claimed));
  // Removed, the member reads the history no more.
  const removed = await so.timeout(5000).emitWithAck('remove-member', { conversationId: group.id, userId: member });
  assert.deepEqual(removed, { success: true, conversationId: group.id, userId: member });
  const after = await srv.api('GET', path, undefined, bearer(member));
  assert.equal(after.status, 403, after.text);
});
