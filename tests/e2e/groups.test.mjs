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

// --- membership changes --------------------------------------------------------------------

/** add-member / remove-member / leave-group / set-role with an acknowledgement. */
const change = (s, event, payload) => s.timeout(5000).emitWithAck(event, payload);

/**
 * A refused change: the ack {success: false, conversationId, userId, error} and `error {message}`
 * with the same text. The ack's userId echoes the payload's (for leave-group: the leaver).
 */
async function assertRefused(s, event, payload, error, userId = payload.userId ?? null) {
  const [ack, errorEvent] = await Promise.all([change(s, event, payload), srv.once(s, 'error', 5000)]);
  assert.deepEqual(ack, { success: false, conversationId: payload.conversationId ?? null, userId, error }, `${event} ${safeJson(payload)}: ack`);
  assert.deepEqual(errorEvent, { message: error }, `${event}: error event`);
}

const NOT_ALLOWED = "Only the group's owner and moderators can change its members";
const OWNER_ONLY = "Only the group's owner can grant, take or remove the moderator role";
const OWNER_STAYS = "The group's owner cannot be removed or given another role; the owner may leave";

test('add-member: the owner adds a user; the group (joined sockets and personal rooms, on both gateways) hears member-added; the new member joins and receives', async () => {
  const [owner, b, newcomer] = srv.users(3);
  const group = await createGroup(owner, [b]);
  const so = await srv.connect(owner, { gateway: 0 });
  const sb = await srv.connect(b, { gateway: 1 });
  await srv.join(so, group.id);
  const bOutside = sb; // b's socket has not joined the room: reached through b's personal room
  const sn = await srv.connect(newcomer, { gateway: 1 });
  const expected = { conversationId: group.id, userId: newcomer, role: 'member', by: owner };
  const heard = [so, bOutside, sn].map((s) => srv.once(s, 'member-added', 5000));
  const ack = await change(so, 'add-member', { conversationId: group.id, userId: newcomer });
  assert.deepEqual(ack, { success: true, conversationId: group.id, userId: newcomer, role: 'member' });
  for (const [i, payload] of (await Promise.all(heard)).entries()) {
    assert.deepEqual(payload, expected, `member-added on socket ${i}`);
  }
  // The newcomer is a member now: it joins, receives, and has nothing unread from before.
  await srv.join(sn, group.id);
  const got = srv.once(sn, 'receive-message', 5000);
  const sent = await srv.send(so, owner, group.id, 'welcome');
  assert.deepEqual(await got, sent);
  const inbox = await srv.api('GET', `/api/chats/users/${newcomer}/conversations`);
  const entry = inbox.body.data.find((e) => e.id === group.id);
  assert.ok(entry, `the group in the newcomer's inbox: ${inbox.text}`);
  assert.equal(entry.unread_count, 1, 'only the message after joining is unread');
  assert.equal(entry.members.find((m) => m.user_id === newcomer)?.role, 'member');
});

test('roles: members cannot change members, moderators cannot make moderators, only the owner sets roles, nobody removes the owner', async () => {
  const [owner, mod, member, x, y] = srv.users(5);
  const group = await createGroup(owner, [mod, member]);
  const so = await srv.connect(owner, { gateway: 0 });
  const sm = await srv.connect(mod, { gateway: 1 });
  const sx = await srv.connect(member, { gateway: 0 });
  const g = group.id;
  await assertRefused(sx, 'add-member', { conversationId: g, userId: x }, NOT_ALLOWED);
  await assertRefused(sm, 'set-role', { conversationId: g, userId: member, role: 'moderator' }, OWNER_ONLY);
  assert.deepEqual(
    await change(so, 'set-role', { conversationId: g, userId: mod, role: 'moderator' }),
    { success: true, conversationId: g, userId: mod, role: 'moderator' },
  );
  assert.deepEqual(
    await change(sm, 'add-member', { conversationId: g, userId: x }),
    { success: true, conversationId: g, userId: x, role: 'member' },
    'a moderator adds members',
  );
  await assertRefused(sm, 'add-member', { conversationId: g, userId: y, role: 'moderator' }, OWNER_ONLY);
  await assertRefused(sm, 'remove-member', { conversationId: g, userId: owner }, OWNER_STAYS);
  await assertRefused(so, 'set-role', { conversationId: g, userId: owner, role: 'member' }, OWNER_STAYS);
  await assertRefused(sm, 'add-member', { conversationId: g, userId: x }, 'The user is already a member of this group');
  await assertRefused(sm, 'remove-member', { conversationId: g, userId: y }, 'The user is not a member of this group');
  await assertRefused(so, 'set-role', { conversationId: g, userId: mod, role: 'owner' }, 'role must be one of the following values: member, moderator');
  await assertRefused(so, 'add-member', { conversationId: g }, 'userId should not be empty, userId must be an integer number');
  const outsider = await srv.connect(y, { gateway: 1 });
  await assertRefused(outsider, 'add-member', { conversationId: g, userId: y }, 'Unauthorized to join this conversation');
  await assertRefused(outsider, 'leave-group', { conversationId: g }, 'Unauthorized to join this conversation', y);
  const direct = await srv.openConversation(owner, y);
  await assertRefused(so, 'add-member', { conversationId: direct.id, userId: x }, 'This conversation is not a group');
  await assertRefused(so, 'add-member', { conversationId: 999_999_999, userId: x }, 'Conversation not found');
  // Only the owner takes the moderator role away, or removes a moderator.
  await change(so, 'set-role', { conversationId: g, userId: member, role: 'moderator' });
  await assertRefused(sm, 'remove-member', { conversationId: g, userId: member }, OWNER_ONLY);
  assert.deepEqual(
    await change(so, 'remove-member', { conversationId: g, userId: member }),
    { success: true, conversationId: g, userId: member },
  );
});

test('remove-member: the removed member hears it, leaves the room on its gateway at once, gets nothing sent after, and cannot rejoin', async () => {
  const [owner, b, c] = srv.users(3);
  const group = await createGroup(owner, [b, c]);
  const so = await srv.connect(owner, { gateway: 0 });
  const sb = await srv.connect(b, { gateway: 1 }); // the one removed, on the other gateway
  const sc = await srv.connect(c, { gateway: 1 });
  for (const s of [so, sb, sc]) await srv.join(s, group.id);
  const expected = { conversationId: group.id, userId: b, role: 'member', by: owner };
  const heard = [so, sb, sc].map((s) => srv.once(s, 'member-removed', 5000));
  const ack = await change(so, 'remove-member', { conversationId: group.id, userId: b });
  assert.deepEqual(ack, { success: true, conversationId: group.id, userId: b });
  for (const payload of await Promise.all(heard)) assert.deepEqual(payload, expected);

  const noneForB = srv.expectNone(sb, 'receive-message', QUIET_MS + 500);
  const cGot = srv.once(sc, 'receive-message', 5000);
  const after = await srv.send(so, owner, group.id, 'after b left');
  assert.deepEqual(await cGot, after, 'c, on the same gateway as b, still receives');
  await noneForB;
  const rejoin = await sb.timeout(3000).emitWithAck('join-conversation', { conversationId: group.id });
  assert.deepEqual(rejoin, { success: false, conversationId: group.id, error: NOT_MEMBER });
  const refusedSend = srv.once(sb, 'message-error', 5000);
  sb.emit('send-message', { sender_id: b, conversation_id: group.id, message_type: 'text', content: 'still here?' });
  assert.ok((await refusedSend)?.error, 'a removed member cannot send');
  const notMember = await sb.timeout(5000).emitWithAck('mark-read', { conversationId: group.id, messageId: after.id });
  assert.equal(notMember.success, false, `a removed member's receipt is refused: ${safeJson(notMember)}`);
  assert.equal(notMember.error, NOT_MEMBER);
  // Out of b's inbox, and no longer a contact's co-member.
  const inbox = await srv.api('GET', `/api/chats/users/${b}/conversations`);
  assert.ok(!inbox.body.data.some((e) => e.id === group.id), `the group left b's inbox: ${inbox.text}`);
});

test('leave-group: an owner leaving hands ownership to the oldest moderator, else to the oldest member', async () => {
  const [owner, first, second, third] = srv.users(4);
  const group = await createGroup(owner, [first, second, third]);
  const so = await srv.connect(owner, { gateway: 0 });
  const s2 = await srv.connect(second, { gateway: 1 });
  await srv.join(s2, group.id);
  const madeModerator = srv.once(s2, 'role-changed', 5000);
  await change(so, 'set-role', { conversationId: group.id, userId: third, role: 'moderator' });
  assert.deepEqual(await madeModerator, { conversationId: group.id, userId: third, role: 'moderator', by: owner });
  const removed = srv.once(s2, 'member-removed', 5000);
  const promoted = srv.once(s2, 'role-changed', 5000);
  assert.deepEqual(await change(so, 'leave-group', { conversationId: group.id }), { success: true, conversationId: group.id, userId: owner });
  assert.deepEqual(await removed, { conversationId: group.id, userId: owner, role: 'owner', by: owner });
  assert.deepEqual(await promoted, { conversationId: group.id, userId: third, role: 'owner', by: owner }, 'the moderator inherits, not the oldest member');
  // Without moderators, the oldest member inherits.
  const s3 = await srv.connect(third, { gateway: 0 });
  const next = srv.once(s2, 'role-changed', 5000);
  await change(s3, 'leave-group', { conversationId: group.id });
  assert.deepEqual(await next, { conversationId: group.id, userId: first, role: 'owner', by: third });
});

test('a rejoin with lastMessageId replays membership changes in their place among the messages', async () => {
  const [owner, b, c] = srv.users(3);
  const group = await createGroup(owner, [b]);
  const so = await srv.connect(owner, { gateway: 0 });
  await srv.join(so, group.id);
  const seen = await srv.send(so, owner, group.id, 'seen by b');
  // b is away: a member joins between two messages, and becomes a moderator after them.
  const m1 = await srv.send(so, owner, group.id, 'missed 1');
  await change(so, 'add-member', { conversationId: group.id, userId: c });
  const m2 = await srv.send(so, owner, group.id, 'missed 2');
  await change(so, 'set-role', { conversationId: group.id, userId: c, role: 'moderator' });

  const sb = await srv.connect(b, { gateway: 1 });
  const rec = recordEvents(sb);
  const ack = await sb.timeout(5000).emitWithAck('join-conversation', { conversationId: group.id, lastMessageId: seen.id });
  assert.deepEqual(ack, { success: true, conversationId: group.id });
  const order = rec.events
    .filter((e) => ['receive-message', 'member-added', 'role-changed'].includes(e.name))
    .map((e) => (e.name === 'receive-message' ? e.payload.id : `${e.name}:${e.payload.userId}:${e.payload.role}`));
  assert.deepEqual(order, [m1.id, `member-added:${c}:member`, m2.id, `role-changed:${c}:moderator`]);
});
