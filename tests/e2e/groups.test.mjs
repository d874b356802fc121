// Groups (issue 17), the first part: `POST /api/chats/groups`, and a group's id working as a
// conversation id for joins, sends, typing, receipts, history, the inbox and presence, with
// members on both gateways in cluster mode. Membership changes come in a later part.
// Elsewhere, as it needs a server of its own: the JWT rule of the route in inbox-jwt.test.mjs.

import assert from 'node:assert/strict';
import { test, useServer, safeJson, label, recordEvents } from './harness.mjs';

const srv = useServer();

/** The contract's timestamps: ISO 8601 in UTC with milliseconds. */
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const NOT_MEMBER = 'Unauthorized to join this conversation';
/** "Nothing arrives" is watched for this long: well above a cross-gateway hop. */
const QUIET_MS = srv.mode === 'cluster' ? 800 : 300;

/** POST /api/chats/groups; returns the response. */
const postGroup = (body) => srv.api('POST', '/api/chats/groups', body);

/** Creates a group; asserts 201 and returns it. */
async function createGroup(creatorId, memberIds, name = 'Team') {
  const res = await postGroup({ creator_id: creatorId, name, member_ids: memberIds });
  assert.equal(res.status, 201, `POST /api/chats/groups → ${res.status} ${res.text}`);
  return res.body;
}

/** Asserts a 400 whose message list includes `text`. */
function assertBadRequest(res, text) {
  assert.equal(res.status, 400, `${res.url} → ${res.status} ${res.text}`);
  assert.equal(res.body?.statusCode, 400, res.text);
  const messages = [].concat(res.body.message);
  assert.ok(messages.some((m) => typeof m === 'string' && m.includes(text)), `message should include ${JSON.stringify(text)}: ${res.text}`);
}

test('POST /api/chats/groups → 201 {id, type: "group", name, created_at, members}: the creator owns it, duplicates count once', async () => {
  const [owner, b, c] = srv.users(3);
  const group = await createGroup(owner, [c, b, b, owner], '  Team rocket  ');
  assert.ok(Number.isInteger(group.id) && group.id > 0, `id: ${safeJson(group)}`);
  assert.equal(group.type, 'group');
  assert.equal(group.name, 'Team rocket', 'the name without surrounding white space');
  assert.match(group.created_at, ISO_MS);
  assert.deepEqual(
    group.members.map(({ user_id, role }) => ({ user_id, role })),
    [{ user_id: owner, role: 'owner' }, { user_id: b, role: 'member' }, { user_id: c, role: 'member' }],
  );
  for (const m of group.members) {
    assert.equal(m.joined_at, group.created_at, `member ${m.user_id} joined when the group was made`);
  }
  assert.equal(group.sender_id, undefined, 'a group has no pair');

  // A direct conversation says what it is, with the spec's fields unchanged.
  const direct = await srv.openConversation(b, c);
  assert.equal(direct.type, 'direct');
  assert.deepEqual([direct.sender_id, direct.receiver_id], [b, c]);
  // Two groups of the same users are two groups; a pair still has one direct conversation.
  const again = await createGroup(owner, [b, c]);
  assert.notEqual(again.id, group.id);
  assert.equal((await srv.openConversation(c, b)).id, direct.id);
});

test('POST /api/chats/groups refuses a bad creator, name or member list with every problem listed', async () => {
  const [u] = srv.users(1);
  assertBadRequest(await postGroup({ name: 'x', member_ids: [] }), 'creator_id must be a positive integer');
  assertBadRequest(await postGroup({ creator_id: 0, name: 'x', member_ids: [] }), 'creator_id must be a positive integer');
  assertBadRequest(await postGroup({ creator_id: u, member_ids: [] }), 'name must be a string of 1 to 100 characters');
  assertBadRequest(await postGroup({ creator_id: u, name: '   ', member_ids: [] }), 'name must be a string of 1 to 100 characters');
  assertBadRequest(await postGroup({ creator_id: u, name: 'x'.repeat(101), member_ids: [] }), 'name must be a string of 1 to 100 characters');
  assertBadRequest(await postGroup({ creator_id: u, name: 'x' }), 'member_ids must be an array of positive integers');
  assertBadRequest(await postGroup({ creator_id: u, name: 'x', member_ids: [2, 'three'] }), 'member_ids must be an array of positive integers');
  assertBadRequest(await postGroup({ creator_id: u, name: 'x', member_ids: [-1] }), 'member_ids must be an array of positive integers');
  const both = await postGroup({ creator_id: 'me', name: '' , member_ids: [] });
  assert.equal(both.status, 400);
  assert.equal(both.body.message.length, 2, `both problems: ${both.text}`);
  assertBadRequest(await postGroup([1, 2]), 'body must be a JSON object');
  // The server in these tests allows the default 1,000 members, the creator included.
  const many = Array.from({ length: 1000 }, (_, i) => 1_000_000 + i);
  assertBadRequest(await postGroup({ creator_id: u, name: 'x', member_ids: many }), 'a group has at most 1000 members');
  const full = await createGroup(u, many.slice(0, 999), 'full');
  assert.equal(full.members.length, 1000);
});

test('a group message reaches every joined member on every gateway, once; non-members cannot join; history has it', async () => {
  const [owner, b, c, d] = srv.users(4);
  const group = await createGroup(owner, [b, c]);
  // Members on both gateways (one server in single mode).
  const so = await srv.connect(owner, { gateway: 0 });
  const sb = await srv.connect(b, { gateway: 1 });
  const sc = await srv.connect(c, { gateway: 0 });
  const sd = await srv.connect(d, { gateway: 1 });
  for (const s of [so, sb, sc]) await srv.join(s, group.id);
  const refused = await sd.timeout(3000).emitWithAck('join-conversation', { conversationId: group.id });
  assert.deepEqual(refused, { success: false, conversationId: group.id, error: NOT_MEMBER });

  // Every joined socket gets it, the sender's included, each once.
  const members = { owner: so, sender: sb, other: sc };
  const recs = Object.fromEntries(Object.entries(members).map(([k, s]) => [k, recordEvents(s)]));
  const received = Object.values(members).map((s) => srv.once(s, 'receive-message', 5000));
  const noneD = srv.expectNone(sd, 'receive-message', QUIET_MS + 500);
  const sent = await srv.send(sb, b, group.id, 'hello group');
  assert.equal(sent.conversation_id, group.id);
  assert.deepEqual(sent.conversation, { id: group.id, type: 'group', name: 'Team' }, 'a group message names its group');
  const got = await Promise.all(received);
  Object.keys(members).forEach((name, i) => assert.deepEqual(got[i], sent, `${name} gets the stored message`));
  await noneD;
  for (const [name, rec] of Object.entries(recs)) {
    assert.equal(rec.events.filter((e) => e.name === 'receive-message').length, 1, `${name} got it once`);
  }

  // A non-member cannot send to it.
  const error = srv.once(sd, 'message-error', 5000);
  sd.emit('send-message', { sender_id: d, conversation_id: group.id, message_type: 'text', content: 'let me in' });
  assert.ok((await error)?.error, 'a non-member send is refused');

  const history = await srv.history(group.id);
  assert.deepEqual(history.data.map((m) => [m.sender_id, m.content]), [[b, 'hello group']]);
  assert.equal(history.total, 1);
});

test('typing in a group reaches the other joined members, not the typist', async () => {
  const [owner, b, c] = srv.users(3);
  const group = await createGroup(owner, [b, c]);
  const so = await srv.connect(owner, { gateway: 0 });
  const sb = await srv.connect(b, { gateway: 1 });
  const sc = await srv.connect(c, { gateway: 0 });
  for (const s of [so, sb, sc]) await srv.join(s, group.id);
  const seen = [sb, sc].map((s) => srv.once(s, 'user-typing', 5000));
  const notSelf = srv.expectNone(so, 'user-typing', QUIET_MS);
  so.emit('typing', { conversationId: group.id, isTyping: true });
  for (const payload of await Promise.all(seen)) {
    assert.deepEqual(payload, { conversationId: group.id, userId: owner, isTyping: true });
  }
  await notSelf;
});

test("a group in the inbox: its kind, name and members' roles; unread counts per member; receipts announced to the room", async () => {
  const [owner, b, c] = srv.users(3);
  const group = await createGroup(owner, [b, c], 'Family');
  const so = await srv.connect(owner, { gateway: 0 });
  const sb = await srv.connect(b, { gateway: 1 });
  for (const s of [so, sb]) await srv.join(s, group.id);
  const m1 = await srv.send(so, owner, group.id, 'one');
  const m2 = await srv.send(so, owner, group.id, 'two');

  const inboxOf = async (user) => {
    const res = await srv.api('GET', `/api/chats/users/${user}/conversations`);
    assert.equal(res.status, 200, res.text);
    const entry = res.body.data.find((e) => e.id === group.id);
    assert.ok(entry, `group ${group.id} in the inbox of ${user}: ${res.text}`);
    return entry;
  };
  let entry = await inboxOf(c);
  assert.equal(entry.type, 'group');
  assert.equal(entry.name, 'Family');
  assert.equal(entry.unread_count, 2, 'c has not read either');
  assert.equal(entry.last_message.id, m2.id);
  assert.deepEqual(
    entry.members.map(({ user_id, role }) => ({ user_id, role })).sort((x, y) => x.user_id - y.user_id),
    [{ user_id: owner, role: 'owner' }, { user_id: b, role: 'member' }, { user_id: c, role: 'member' }],
  );
  for (const m of entry.members) assert.match(m.joined_at, ISO_MS, `member ${m.user_id} joined_at`);

  // b reads m1: the room (the owner) hears it; b's unread count drops, c's does not.
  const read = srv.once(so, 'message-read', 5000);
  const ack = await sb.timeout(5000).emitWithAck('mark-read', { conversationId: group.id, messageId: m1.id });
  assert.deepEqual(ack, { success: true, conversationId: group.id, messageId: m1.id });
  const announced = await read;
  assert.deepEqual([announced.conversationId, announced.userId, announced.messageId], [group.id, b, m1.id]);
  assert.equal((await inboxOf(b)).unread_count, 1);
  entry = await inboxOf(c);
  assert.equal(entry.unread_count, 2);
  const positions = Object.fromEntries(entry.members.map((m) => [m.user_id, m.last_read_message_id]));
  assert.deepEqual(positions, { [owner]: m2.id, [b]: m1.id, [c]: null }, `read positions: ${safeJson(entry.members)}`);
});

test('presence: co-members of a group are contacts, without a direct conversation', async () => {
  const [owner, b] = srv.users(2);
  await createGroup(owner, [b]);
  const sb = await srv.connect(b, { gateway: 1 });
  const online = srv.once(sb, 'user:online', 5000, (p) => p?.userId === owner);
  const so = await srv.connect(owner, { gateway: 0 });
  assert.deepEqual(await online, { userId: owner }, `user:online on ${label(sb)}`);
  const offline = srv.once(sb, 'user:offline', 5000, (p) => p?.userId === owner);
  so.disconnect();
  assert.deepEqual(await offline, { userId: owner });
});
