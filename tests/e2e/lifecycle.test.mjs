// A message's life after it is sent (issue 18): `edit-message`, `delete-message` and `react`,
// their acks, the room's `message-updated` / `message-deleted` / `reaction-updated`, who may do
// what, the payload rules and refusals, `changeId` retries, the tombstone and the new fields of
// the history (`edited_at`, `deleted_at`, `reactions`, `my_reactions`) and of a replay, the
// order of changes among sends, and an offline client converging on the history by the events
// a join with lastMessageId replays. Runs all-in-one and as a cluster; the actors and watchers
// sit on different gateways (0 = gateway A, 1 = gateway B; one server in single mode).
// Elsewhere, as it needs a server of its own: `--retention` in retention.test.mjs.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test, useServer, recordEvents, label, safeJson } from './harness.mjs';

const srv = useServer();

const GW_A = 0;
const GW_B = 1;
/** The room's announcements of a message's changes. */
const CHANGES = ['message-updated', 'message-deleted', 'reaction-updated'];
/** "Nothing (more) arrives" is watched for this long: well above a cross-gateway hop. */
const QUIET_MS = srv.mode === 'cluster' ? 800 : 300;
/** The contract's timestamps: ISO 8601 in UTC with milliseconds. */
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

const NOT_FOUND = 'Message not found in this conversation';
const NOT_MEMBER = 'Unauthorized to join this conversation';
const NO_CONVERSATION = 'Conversation not found';
const NOT_SENDER = 'Only the sender can edit this message';
const NOT_TEXT = 'Only text messages can be edited';
const NOT_ALLOWED = "Only the sender or the group's owner and moderators can delete this message";
const DELETED = 'The message has been deleted';
const C_EMPTY = 'content should not be empty';
const C_STR = 'content must be a string';
const C_LONG = 'content must be shorter than or equal to 10000 characters';
const C_CONTROL = 'content must not contain control characters';
const EMOJI = 'emoji must be a string of 1 to 32 bytes without white space';
const ON = 'on must be a boolean value';
const CHANGE_ID = 'changeId must be a UUID';
const missing = (field) => `${field} should not be empty, ${field} must be an integer number`;

/**
 * The fields of a stored message that every view of it has: `message-sent` and
 * `receive-message` add `conversation`, which the history has never had; the comparisons
 * below leave it out (see norm()).
 */
const SPEC_FIELDS = ['id', 'sender_id', 'conversation_id', 'timestamp', 'message_type', 'content'];
const specOf = (m) => Object.fromEntries(SPEC_FIELDS.map((k) => [k, m[k]]));
const without = (object, key) => {
  const copy = { ...object };
  delete copy[key];
  return copy;
};

// --- helpers --------------------------------------------------------------------------------

/** edit-message / delete-message / react with an acknowledgement; resolves with the ack. */
const change = (s, event, payload) => s.timeout(5000).emitWithAck(event, payload);
const edit = (s, conversationId, messageId, content, changeId) =>
  change(s, 'edit-message', { conversationId, messageId, content, ...(changeId ? { changeId } : {}) });
const remove = (s, conversationId, messageId, changeId) =>
  change(s, 'delete-message', { conversationId, messageId, ...(changeId ? { changeId } : {}) });
const react = (s, conversationId, messageId, emoji, on, changeId) =>
  change(s, 'react', { conversationId, messageId, emoji, on, ...(changeId ? { changeId } : {}) });

/** The ack of a react: `counts` is the message's {emoji: total} after it. */
const reacted = (conversationId, messageId, emoji, on, counts) =>
  ({ success: true, conversationId, messageId, emoji, on, counts });

/**
 * `message-updated` / the edit ack's `message`: the sent message with its new content,
 * edited_at set, not deleted, and its reactions (my_reactions, a viewer's, is not compared).
 */
const edited = (sent, content, editedAt, reactions = {}) =>
  ({ ...specOf(sent), content, edited_at: editedAt, deleted_at: null, reactions });

/** Asserts a successful edit ack and returns its message (edited_at about now, not before the send). */
function assertEdited(ack, sent, content, reactions = {}) {
  assert.equal(ack?.success, true, `edit of ${sent.id}: ${safeJson(ack)}`);
  assert.deepEqual(Object.keys(ack).sort(), ['conversationId', 'message', 'messageId', 'success'], `edit ack fields: ${safeJson(ack)}`);
  assert.equal(ack.conversationId, sent.conversation_id);
  assert.equal(ack.messageId, sent.id);
  const editedAt = ack.message?.edited_at;
  assert.match(String(editedAt), ISO_MS, `edited_at: ${safeJson(ack.message)}`);
  assert.ok(Date.parse(editedAt) >= Date.parse(sent.timestamp), `edited_at ${editedAt} before the send ${sent.timestamp}`);
  assert.ok(Math.abs(Date.now() - Date.parse(editedAt)) < 60_000, `edited_at ${editedAt} is not about now`);
  assert.deepEqual(asUpdated(ack.message), edited(sent, content, editedAt, reactions), 'the edit ack carries the stored message');
  return ack.message;
}

/** Asserts a successful delete ack ({success, conversationId, messageId, deleted_at}); returns deleted_at. */
function assertDeleted(ack, sent) {
  assert.deepEqual(ack, { success: true, conversationId: sent.conversation_id, messageId: sent.id, deleted_at: ack?.deleted_at }, `delete of ${sent.id}`);
  assert.match(String(ack.deleted_at), ISO_MS, 'deleted_at');
  assert.ok(Date.parse(ack.deleted_at) >= Date.parse(sent.timestamp), `deleted_at ${ack.deleted_at} before the send ${sent.timestamp}`);
  assert.ok(Math.abs(Date.now() - Date.parse(ack.deleted_at)) < 60_000, `deleted_at ${ack.deleted_at} is not about now`);
  return ack.deleted_at;
}

/**
 * A refused change: the ack is {success: false, conversationId, messageId, error} echoing the
 * ids that were sent (an id not sent may come back absent or null; nothing else is echoed),
 * and the socket gets an `error` event with the same text.
 */
async function assertRefused(s, event, payload, error) {
  const [ack, errorEvent] = await Promise.all([change(s, event, payload), srv.once(s, 'error', 5000)]);
  const what = `${event} ${safeJson(payload)} on ${label(s)}`;
  const sentIds = payload !== null && typeof payload === 'object' ? payload : {};
  const echoed = { ...ack };
  const expected = { success: false, error };
  for (const field of ['conversationId', 'messageId']) {
    if (field in sentIds) expected[field] = sentIds[field];
    else {
      assert.ok(ack?.[field] === undefined || ack?.[field] === null, `${what}: ack.${field} for a field not sent: ${safeJson(ack)}`);
      delete echoed[field];
    }
  }
  assert.deepEqual(echoed, expected, `${what}: ack`);
  assert.deepEqual(errorEvent, { message: error }, `${what}: error event`);
}

/**
 * Runs every refusal case ([event, payload, error]) on `s`; collects what differs from the
 * contract (so one run shows every deviation) and asserts that nothing does.
 */
async function assertAllRefused(s, cases) {
  const deviations = [];
  for (const [event, payload, error] of cases) {
    try {
      await assertRefused(s, event, payload, error);
    } catch (err) {
      if (!(err instanceof assert.AssertionError)) throw err;
      deviations.push(`${err.message.split('\n')[0]}: expected ${JSON.stringify(error)}, got ${safeJson(err.actual)}`);
    }
  }
  assert.deepEqual(deviations, [], `refusals that differ from the contract:\n${deviations.join('\n')}`);
}

/** Resolves after `ms`; fails if any change announcement reaches one of `sockets` meanwhile. */
const quiet = (sockets, ms = QUIET_MS) =>
  Promise.all(sockets.flatMap((s) => CHANGES.map((event) => srv.expectNone(s, event, ms))));

/**
 * Resolves with the one payload of the next `event` that reaches every socket of `sockets`
 * (asserting it is the same on each).
 */
async function announced(sockets, event, timeoutMs = 5000) {
  const payloads = await Promise.all(sockets.map((s) => srv.once(s, event, timeoutMs)));
  for (const [i, p] of payloads.entries()) assert.deepEqual(p, payloads[0], `the same ${event} on ${label(sockets[i])} as on ${label(sockets[0])}`);
  return payloads[0];
}

/**
 * Resolves with the next `count` events named in `names` on `socket` ({name, payload}, in
 * arrival order); the listener is in place when this returns.
 */
function nextEvents(socket, names, count, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const got = [];
    const listener = (name, payload) => {
      if (!names.includes(name)) return;
      got.push({ name, payload });
      if (got.length === count) {
        cleanup();
        resolve(got);
      }
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`timed out after ${timeoutMs} ms: ${got.length}/${count} of ${names.join(', ')} on ${label(socket)}: ${safeJson(got)}`));
    }, timeoutMs);
    function cleanup() {
      clearTimeout(timer);
      socket.offAny(listener);
    }
    socket.onAny(listener);
  });
}

/** The change announcements recorded on a socket, as short labels ("message-updated 12 text"). */
const changeLog = (rec) => rec.events
  .filter((e) => CHANGES.includes(e.name))
  .map((e) => describe(e.name, e.payload));

/** Waits until `rec` has recorded `n` change announcements (or `timeoutMs` passed). */
async function untilLogged(rec, n, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (changeLog(rec).length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
}

/** A short label of a change or a message event, for comparing sequences. */
function describe(name, p) {
  switch (name) {
    case 'receive-message': return `receive-message ${p?.id}`;
    case 'message-updated': return `message-updated ${p?.id} ${p?.content}`;
    case 'message-deleted': return `message-deleted ${p?.messageId}`;
    case 'reaction-updated': return `reaction-updated ${p?.messageId} ${p?.userId} ${p?.emoji} ${p?.on}`;
    default: return name;
  }
}

/**
 * GET the whole history of a conversation (up to 100 messages), as `viewer` when given
 * (`?user_id=`). Without a viewer nobody's reactions are "mine": my_reactions is absent or
 * empty (asserted), and comes back here as [].
 */
async function historyOf(conversationId, viewer) {
  const page = await srv.history(conversationId, `?limit=100${viewer === undefined ? '' : `&user_id=${viewer}`}`);
  if (viewer !== undefined) return page.data;
  return page.data.map((m) => {
    assert.ok(m.my_reactions === undefined || (Array.isArray(m.my_reactions) && m.my_reactions.length === 0),
      `my_reactions without a viewer: ${safeJson(m)}`);
    return { ...m, my_reactions: [] };
  });
}

/**
 * A message as compared here: without `conversation` (in the live events, not in the history)
 * and with my_reactions sorted (their order is not part of the contract).
 */
function norm(m) {
  if (m === null || typeof m !== 'object') return m;
  const copy = without(m, 'conversation');
  if (Array.isArray(copy.my_reactions)) copy.my_reactions = [...copy.my_reactions].sort();
  return copy;
}

/** A `message-updated` payload (or an edit ack's message) as compared here: norm() without my_reactions. */
const asUpdated = (m) => without(norm(m), 'my_reactions');

/** The history row of message `id` (asserts it is there), as `viewer`. */
async function storedOf(conversationId, id, viewer) {
  const rows = await historyOf(conversationId, viewer);
  const row = rows.find((m) => m.id === id);
  assert.ok(row, `message ${id} not in the history of ${conversationId}: ${safeJson(rows.map((m) => m.id))}`);
  return norm(row);
}

/** A history row as the contract has it: the sent message and its state. */
const row = (sent, { content = sent.content, edited_at = null, deleted_at = null, reactions = {}, my_reactions = [] } = {}) =>
  ({ ...specOf(sent), content, edited_at, deleted_at, reactions, my_reactions: [...my_reactions].sort() });

/** POST /api/chats/groups; asserts 201 and returns the group. */
async function createGroup(creatorId, memberIds, name = 'Crew') {
  const res = await srv.api('POST', '/api/chats/groups', { creator_id: creatorId, name, member_ids: memberIds });
  assert.equal(res.status, 201, `POST /api/chats/groups → ${res.status} ${res.text}`);
  return res.body;
}

// --- edit-message ---------------------------------------------------------------------------

test('edit-message: the sender edits a text message; the ack and the room (both gateways, the sender\'s socket included) carry the stored message; the history keeps its id and place', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sa, a, conv.id, 'first draft');
  const m2 = await srv.send(sb, b, conv.id, 'reply');
  const m3 = await srv.send(sa, a, conv.id, 'after');
  const recs = [sa, sb].map((s) => recordEvents(s));

  const updated = announced([sa, sb], 'message-updated');
  const message = assertEdited(await edit(sa, conv.id, m1.id, 'second draft'), m1, 'second draft');
  assert.deepEqual(asUpdated(await updated), asUpdated(message), 'message-updated is the stored message');

  let rows = await historyOf(conv.id);
  assert.deepEqual(rows.map((m) => m.id), [m1.id, m2.id, m3.id], 'same ids, same places');
  assert.deepEqual(norm(rows[0]), row(m1, { content: 'second draft', edited_at: message.edited_at }));
  assert.deepEqual(norm(rows[1]), row(m2), 'the others untouched');
  assert.deepEqual(norm(rows[2]), row(m3));

  // Edited again (a 10,000-character content is within the rule): the newest content and time.
  const long = 'é'.repeat(10_000);
  const again = announced([sa, sb], 'message-updated');
  const second = assertEdited(await edit(sa, conv.id, m1.id, long), m1, long);
  assert.ok(Date.parse(second.edited_at) >= Date.parse(message.edited_at), `edited_at ${second.edited_at} went back from ${message.edited_at}`);
  assert.deepEqual(asUpdated(await again), asUpdated(second));
  rows = await historyOf(conv.id);
  assert.deepEqual(norm(rows[0]), row(m1, { content: long, edited_at: second.edited_at }));
  assert.equal(rows[0].timestamp, m1.timestamp, 'an edit keeps the message time');

  await quiet([sa, sb]);
  for (const rec of recs) {
    assert.deepEqual(changeLog(rec), [`message-updated ${m1.id} second draft`, `message-updated ${m1.id} ${long}`], 'one message-updated per edit');
  }
});

test('edit-message keeps the reactions: message-updated carries the counts as they stand', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sa, a, conv.id, 'react first');
  assert.deepEqual(await react(sb, conv.id, m1.id, '👍', true), reacted(conv.id, m1.id, '👍', true, { '👍': 1 }));
  const updated = announced([sa, sb], 'message-updated');
  const message = assertEdited(await edit(sa, conv.id, m1.id, 'then edit'), m1, 'then edit', { '👍': 1 });
  assert.deepEqual(asUpdated(await updated), asUpdated(message));
  assert.deepEqual(await storedOf(conv.id, m1.id, b), row(m1, { content: 'then edit', edited_at: message.edited_at, reactions: { '👍': 1 }, my_reactions: ['👍'] }));
});

test("edit-message refusals: another user's message, an image message, content that send-message would refuse; nothing announced or stored", async () => {
  const { a, conv, sa, sb } = await srv.pairAcrossGateways();
  const text = await srv.send(sa, a, conv.id, 'original');
  const image = await srv.send(sa, a, conv.id, 'https://img.example.com/cat.png', 'image');
  const file = await srv.send(sa, a, conv.id, 'attachment:report-7', 'file');
  const recs = [sa, sb].map((s) => recordEvents(s));
  const id = (m) => ({ conversationId: conv.id, messageId: m.id });

  await assertAllRefused(sa, [
    ['edit-message', { ...id(image), content: 'https://img.example.com/dog.png' }, NOT_TEXT],
    ['edit-message', { ...id(file), content: 'attachment:report-8' }, NOT_TEXT],
    ['edit-message', { ...id(text) }, C_EMPTY],
    ['edit-message', { ...id(text), content: '' }, C_EMPTY],
    ['edit-message', { ...id(text), content: 5 }, C_STR],
    ['edit-message', { ...id(text), content: { text: 'x' } }, C_STR],
    ['edit-message', { ...id(text), content: 'y'.repeat(10_001) }, C_LONG],
    ['edit-message', { ...id(text), content: 'escape \u001b[31m' }, C_CONTROL],
  ]);
  await assertAllRefused(sb, [
    ['edit-message', { ...id(text), content: 'not yours' }, NOT_SENDER],
  ]);

  await quiet([sa, sb]);
  recs.forEach((rec, i) => assert.deepEqual(changeLog(rec), [], `nothing announced on ${label([sa, sb][i])}`));
  const rows = await historyOf(conv.id);
  assert.deepEqual(rows.map(norm), [row(text), row(image), row(file)], 'nothing stored');
  // The refusals did not spoil the socket: a real edit still works.
  assertEdited(await edit(sa, conv.id, text.id, 'fixed'), text, 'fixed');
});

// --- delete-message -------------------------------------------------------------------------

test('delete-message: the sender deletes; the room hears message-deleted; the history keeps a tombstone in place; deleting again, editing or reacting is refused', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sa, a, conv.id, 'one');
  const m2 = await srv.send(sa, a, conv.id, 'two, regretted');
  const m3 = await srv.send(sb, b, conv.id, 'three');
  const recs = [sa, sb].map((s) => recordEvents(s));

  const heard = announced([sa, sb], 'message-deleted');
  const deletedAt = assertDeleted(await remove(sa, conv.id, m2.id), m2);
  assert.deepEqual(await heard, { conversationId: conv.id, messageId: m2.id, deleted_at: deletedAt });

  assert.equal((await srv.history(conv.id)).total, 3, 'the tombstone still counts');
  const rows = await historyOf(conv.id);
  assert.deepEqual(rows.map((m) => m.id), [m1.id, m2.id, m3.id], 'the tombstone keeps its place');
  assert.deepEqual(norm(rows[1]), row(m2, { content: null, deleted_at: deletedAt }), 'content null, deleted_at set');
  assert.deepEqual(norm(rows[0]), row(m1));

  const gone = { conversationId: conv.id, messageId: m2.id };
  await assertAllRefused(sa, [
    ['delete-message', gone, DELETED],
    ['edit-message', { ...gone, content: 'resurrected' }, DELETED],
    ['react', { ...gone, emoji: '👍', on: true }, DELETED],
    ['react', { ...gone, emoji: '👍', on: false }, DELETED],
  ]);
  await assertAllRefused(sb, [['react', { ...gone, emoji: '😢', on: true }, DELETED]]);

  await quiet([sa, sb]);
  for (const rec of recs) assert.deepEqual(changeLog(rec), [`message-deleted ${m2.id}`], 'one message-deleted, nothing for the refusals');
  assert.deepEqual(norm((await historyOf(conv.id))[1]), row(m2, { content: null, deleted_at: deletedAt }), 'the tombstone unchanged');
  // A message of another type is deleted all the same.
  const image = await srv.send(sb, b, conv.id, 'https://img.example.com/oops.png', 'image');
  assertDeleted(await remove(sb, conv.id, image.id), image);
});

test("delete-message: in a group the owner and moderators delete anyone's message, a plain member only their own; in a direct conversation only the sender", async () => {
  const [owner, mod, x, y] = srv.users(4);
  const group = await createGroup(owner, [mod, x, y]);
  const g = group.id;
  const so = await srv.connect(owner, { gateway: GW_A });
  const sm = await srv.connect(mod, { gateway: GW_B });
  const sx = await srv.connect(x, { gateway: GW_A });
  const sy = await srv.connect(y, { gateway: GW_B });
  for (const s of [so, sm, sx, sy]) await srv.join(s, g);
  assert.deepEqual(
    await change(so, 'set-role', { conversationId: g, userId: mod, role: 'moderator' }),
    { success: true, conversationId: g, userId: mod, role: 'moderator' },
  );
  const x1 = await srv.send(sx, x, g, 'x1');
  const x2 = await srv.send(sx, x, g, 'x2');
  const x3 = await srv.send(sx, x, g, 'x3');
  const o1 = await srv.send(so, owner, g, 'o1');
  const y1 = await srv.send(sy, y, g, 'y1');
  const watchers = [so, sm, sx, sy];
  const recs = watchers.map((s) => recordEvents(s));

  // A plain member cannot delete another's message, the owner's included.
  await assertAllRefused(sy, [
    ['delete-message', { conversationId: g, messageId: x1.id }, NOT_ALLOWED],
    ['delete-message', { conversationId: g, messageId: o1.id }, NOT_ALLOWED],
  ]);
  // The owner deletes a member's message; a moderator a member's and the owner's.
  const deletions = [];
  for (const [s, m, who] of [[so, x1, 'owner'], [sm, x2, 'moderator'], [sm, o1, "moderator, the owner's message"], [sy, y1, 'a member, their own']]) {
    const heard = announced(watchers, 'message-deleted');
    const deletedAt = assertDeleted(await remove(s, g, m.id), m);
    assert.deepEqual(await heard, { conversationId: g, messageId: m.id, deleted_at: deletedAt }, who);
    deletions.push([m, deletedAt]);
  }
  await quiet(watchers);
  const expectedLog = deletions.map(([m]) => `message-deleted ${m.id}`);
  recs.forEach((rec, i) => assert.deepEqual(changeLog(rec), expectedLog, `on ${label(watchers[i])}`));
  const rows = await historyOf(g);
  assert.deepEqual(rows.map(norm), [
    row(x1, { content: null, deleted_at: deletions[0][1] }),
    row(x2, { content: null, deleted_at: deletions[1][1] }),
    row(x3),
    row(o1, { content: null, deleted_at: deletions[2][1] }),
    row(y1, { content: null, deleted_at: deletions[3][1] }),
  ]);
  // Deleting is not editing: the owner still cannot edit a member's message.
  await assertAllRefused(so, [['edit-message', { conversationId: g, messageId: x3.id, content: 'owner says' }, NOT_SENDER]]);

  // A direct conversation has no owner: only the sender deletes.
  const { a, conv, sa, sb } = await srv.pairAcrossGateways();
  const fromA = await srv.send(sa, a, conv.id, 'mine');
  await assertAllRefused(sb, [['delete-message', { conversationId: conv.id, messageId: fromA.id }, NOT_ALLOWED]]);
  assert.deepEqual(await storedOf(conv.id, fromA.id), row(fromA));
});

// --- react ----------------------------------------------------------------------------------

test('react: counts after each change; adding again or taking back one not added answers success and announces nothing; history reactions and my_reactions per user', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sa, a, conv.id, 'react to me');
  const recs = [sa, sb].map((s) => recordEvents(s));
  const c = conv.id;
  const steps = [];

  /** One react that changes something: the ack, and the same reaction-updated in the room. */
  async function changes(s, user, emoji, on, counts) {
    const heard = announced([sa, sb], 'reaction-updated');
    assert.deepEqual(await react(s, c, m1.id, emoji, on), reacted(c, m1.id, emoji, on, counts), `user ${user} ${on ? 'adds' : 'takes back'} ${emoji}`);
    assert.deepEqual(await heard, { conversationId: c, messageId: m1.id, userId: user, emoji, on, counts });
    steps.push(`reaction-updated ${m1.id} ${user} ${emoji} ${on}`);
  }
  /** One react that changes nothing: success with the counts as they stand, nothing announced. */
  async function noChange(s, user, emoji, on, counts) {
    const silent = quiet([sa, sb]);
    assert.deepEqual(await react(s, c, m1.id, emoji, on), reacted(c, m1.id, emoji, on, counts), `user ${user} ${on ? 'adds again' : 'takes back, not added,'} ${emoji}`);
    await silent;
  }

  await changes(sa, a, '👍', true, { '👍': 1 });
  await noChange(sa, a, '👍', true, { '👍': 1 });
  await changes(sb, b, '👍', true, { '👍': 2 });
  await changes(sb, b, '❤️', true, { '👍': 2, '❤️': 1 });
  await noChange(sa, a, '❤️', false, { '👍': 2, '❤️': 1 });
  await changes(sa, a, '👍', false, { '👍': 1, '❤️': 1 });
  await noChange(sa, a, '👍', false, { '👍': 1, '❤️': 1 });

  assert.deepEqual(await storedOf(c, m1.id, a), row(m1, { reactions: { '👍': 1, '❤️': 1 }, my_reactions: [] }), 'as a');
  assert.deepEqual(await storedOf(c, m1.id, b), row(m1, { reactions: { '👍': 1, '❤️': 1 }, my_reactions: ['👍', '❤️'] }), 'as b');
  assert.deepEqual(await storedOf(c, m1.id), row(m1, { reactions: { '👍': 1, '❤️': 1 }, my_reactions: [] }), 'as nobody');

  // The last one of an emoji taken back: it leaves the counts.
  await changes(sb, b, '👍', false, { '❤️': 1 });
  await changes(sb, b, '❤️', false, {});
  assert.deepEqual(await storedOf(c, m1.id, b), row(m1), 'no reactions left');

  // Any member reacts to any message not deleted, an image included.
  const image = await srv.send(sb, b, c, 'https://img.example.com/sunset.jpg', 'image');
  const heard = announced([sa, sb], 'reaction-updated');
  assert.deepEqual(await react(sa, c, image.id, '🌅', true), reacted(c, image.id, '🌅', true, { '🌅': 1 }));
  assert.deepEqual(await heard, { conversationId: c, messageId: image.id, userId: a, emoji: '🌅', on: true, counts: { '🌅': 1 } });
  steps.push(`reaction-updated ${image.id} ${a} 🌅 true`);

  await quiet([sa, sb]);
  recs.forEach((rec, i) => assert.deepEqual(changeLog(rec), steps, `reaction-updated only when something changed, on ${label([sa, sb][i])}`));
});

test('react: an emoji is 1 to 32 bytes of text without white space (bytes, not characters); on is a boolean', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sb, b, conv.id, 'emoji rules');
  const target = { conversationId: conv.id, messageId: m1.id };
  const accepted = ['👍', '👍🏽', '👨‍👩‍👧‍👦', ':+1:', 'x'.repeat(32), 'é'.repeat(16), '+1'];
  for (const emoji of accepted) {
    const heard = srv.once(sb, 'reaction-updated', 5000);
    const ack = await react(sa, conv.id, m1.id, emoji, true);
    assert.equal(ack?.success, true, `${JSON.stringify(emoji)} (${Buffer.byteLength(emoji)} bytes): ${safeJson(ack)}`);
    assert.equal(ack.counts?.[emoji], 1, `${JSON.stringify(emoji)} counted: ${safeJson(ack)}`);
    assert.equal((await heard).emoji, emoji, 'announced as given');
  }
  const recB = recordEvents(sb);
  await assertAllRefused(sa, [
    ['react', { ...target, on: true }, EMOJI],
    ['react', { ...target, emoji: '', on: true }, EMOJI],
    ['react', { ...target, emoji: 'x'.repeat(33), on: true }, EMOJI],
    ['react', { ...target, emoji: 'é'.repeat(17), on: true }, EMOJI], // 17 characters, 34 bytes
    ['react', { ...target, emoji: '👍'.repeat(9), on: true }, EMOJI], // 36 bytes
    ['react', { ...target, emoji: 'thumbs up', on: true }, EMOJI],
    ['react', { ...target, emoji: ' 👍', on: true }, EMOJI],
    ['react', { ...target, emoji: '👍\n', on: true }, EMOJI],
    ['react', { ...target, emoji: 'a\tb', on: true }, EMOJI],
    ['react', { ...target, emoji: 42, on: true }, EMOJI],
    ['react', { ...target, emoji: ['👍'], on: true }, EMOJI],
    ['react', { ...target, emoji: '👍' }, ON],
    ['react', { ...target, emoji: '👍', on: 'true' }, ON],
    ['react', { ...target, emoji: '👍', on: 1 }, ON],
    ['react', { ...target, emoji: '👍', on: null }, ON],
    ['react', { ...target, emoji: '', on: 'yes' }, `${EMOJI}, ${ON}`],
    ['react', { conversationId: conv.id, messageId: 0, emoji: '', on: true }, `messageId must be a positive number, ${EMOJI}`],
  ]);
  await quiet([sb]);
  assert.deepEqual(changeLog(recB), [], 'nothing announced');
  const stored = await storedOf(conv.id, m1.id, a);
  assert.deepEqual(stored.reactions, Object.fromEntries(accepted.map((e) => [e, 1])), 'only the accepted emojis are stored');
  assert.deepEqual(stored.my_reactions, [...accepted].sort());
});

// --- payloads and refusals common to the three ----------------------------------------------

test('edit-message, delete-message, react: bad ids and changeId are refused with the receipt texts, in field order; nothing changes', async () => {
  const { a, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sa, a, conv.id, 'stay the same');
  const recB = recordEvents(sb);
  const extra = {
    'edit-message': { content: 'changed' },
    'delete-message': {},
    react: { emoji: '👍', on: true },
  };
  const cases = [];
  for (const [event, rest] of Object.entries(extra)) {
    const ok = { conversationId: conv.id, messageId: m1.id, ...rest };
    cases.push(
      [event, 'hello', 'payload must be an object'],
      [event, without(ok, 'conversationId'), missing('conversationId')],
      [event, without(ok, 'messageId'), missing('messageId')],
      [event, { ...ok, conversationId: null }, missing('conversationId')],
      [event, { ...ok, conversationId: 'abc' }, 'conversationId must be an integer number'],
      [event, { ...ok, conversationId: String(conv.id) }, 'conversationId must be an integer number'],
      [event, { ...ok, conversationId: 0 }, 'conversationId must be a positive number'],
      [event, { ...ok, messageId: 1.5 }, 'messageId must be an integer number'],
      [event, { ...ok, messageId: String(m1.id) }, 'messageId must be an integer number'],
      [event, { ...ok, messageId: 0 }, 'messageId must be a positive number'],
      [event, { ...ok, messageId: -1 }, 'messageId must be a positive number'],
      [event, { ...ok, conversationId: -2, messageId: 'x' }, 'conversationId must be a positive number, messageId must be an integer number'],
      [event, { ...ok, changeId: 'not-a-uuid' }, CHANGE_ID],
      [event, { ...ok, changeId: 42 }, CHANGE_ID],
      [event, { ...ok, changeId: `${randomUUID()}x` }, CHANGE_ID],
    );
  }
  cases.push(
    ['edit-message', { conversationId: conv.id, messageId: 0, content: '' }, `messageId must be a positive number, ${C_EMPTY}`],
    ['edit-message', { conversationId: conv.id, messageId: m1.id, content: '', changeId: 'nope' }, `${C_EMPTY}, ${CHANGE_ID}`],
    ['react', { conversationId: conv.id, messageId: m1.id, emoji: '👍', on: 'no', changeId: 'nope' }, `${ON}, ${CHANGE_ID}`],
  );
  await assertAllRefused(sa, cases);
  await quiet([sb]);
  assert.deepEqual(changeLog(recB), [], 'nothing announced');
  assert.deepEqual(await storedOf(conv.id, m1.id, a), row(m1), 'nothing stored');
});

test("edit-message, delete-message, react: unknown conversation, non-member, another conversation's message, a message id not stored", async () => {
  const [a, b, c] = srv.users(3);
  const ab = await srv.openConversation(a, b);
  const ac = await srv.openConversation(a, c);
  const sa = await srv.connect(a, { gateway: GW_A });
  const sb = await srv.connect(b, { gateway: GW_B });
  const sc = await srv.connect(c, { gateway: GW_B });
  await srv.join(sb, ab.id);
  const recB = recordEvents(sb);
  const mAB = await srv.send(sa, a, ab.id, 'in ab');
  const mAC = await srv.send(sa, a, ac.id, 'in ac');
  const newest = Math.max(mAB.id, mAC.id);
  const rest = { 'edit-message': { content: 'x' }, 'delete-message': {}, react: { emoji: '👍', on: true } };
  const cases = [];
  for (const [event, fields] of Object.entries(rest)) {
    cases.push(
      [sa, event, { conversationId: 999_999_999, messageId: mAB.id, ...fields }, NO_CONVERSATION],
      [sc, event, { conversationId: ab.id, messageId: mAB.id, ...fields }, NOT_MEMBER],
      [sa, event, { conversationId: ab.id, messageId: mAC.id, ...fields }, NOT_FOUND],
      [sa, event, { conversationId: ab.id, messageId: newest + 1, ...fields }, NOT_FOUND],
      [sa, event, { conversationId: ab.id, messageId: 2 ** 40, ...fields }, NOT_FOUND],
    );
  }
  const deviations = [];
  for (const [s, event, payload, error] of cases) {
    try {
      await assertRefused(s, event, payload, error);
    } catch (err) {
      if (!(err instanceof assert.AssertionError)) throw err;
      deviations.push(`${err.message.split('\n')[0]}: expected ${JSON.stringify(error)}, got ${safeJson(err.actual)}`);
    }
  }
  assert.deepEqual(deviations, [], `refusals that differ from the contract:\n${deviations.join('\n')}`);
  await quiet([sb]);
  assert.deepEqual(changeLog(recB), [], 'nothing announced in the room');
  assert.deepEqual(await storedOf(ab.id, mAB.id, a), row(mAB));
  assert.deepEqual(await storedOf(ac.id, mAC.id, a), row(mAC), "the other conversation's message untouched");
});

// --- changeId -------------------------------------------------------------------------------

test('changeId: a retried edit, delete or react with the same id (through either gateway) is stored once, answered as the first time, and heard once', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const sa2 = await srv.connect(a, { gateway: GW_B }); // a's retry path, on the other gateway, not joined
  const m1 = await srv.send(sa, a, conv.id, 'v1');
  const m2 = await srv.send(sa, a, conv.id, 'delete me');
  const m3 = await srv.send(sb, b, conv.id, 'react here');
  const recB = recordEvents(sb);
  const expectedLog = [];

  // An edit retried: same ack (same edited_at), the first content, one message-updated.
  const editId = randomUUID();
  const first = await edit(sa, conv.id, m1.id, 'v2', editId);
  const message = assertEdited(first, m1, 'v2');
  expectedLog.push(`message-updated ${m1.id} v2`);
  assert.deepEqual(await edit(sa2, conv.id, m1.id, 'v2', editId), first, 'the retry through the other gateway');
  assert.deepEqual(await edit(sa, conv.id, m1.id, 'v3, a retry that changed its mind', editId), first, 'answered as the first time');
  assert.deepEqual(await storedOf(conv.id, m1.id), row(m1, { content: 'v2', edited_at: message.edited_at }), 'stored once');

  // A delete retried: both succeed with the same deleted_at, one message-deleted.
  const deleteId = randomUUID();
  const deleted = await remove(sa, conv.id, m2.id, deleteId);
  const deletedAt = assertDeleted(deleted, m2);
  expectedLog.push(`message-deleted ${m2.id}`);
  assert.deepEqual(await remove(sa2, conv.id, m2.id, deleteId), deleted, 'the retry through the other gateway');
  assert.deepEqual(await remove(sa, conv.id, m2.id, deleteId), deleted, 'and again');
  // Without the id, it is a new delete of a deleted message.
  await assertAllRefused(sa, [['delete-message', { conversationId: conv.id, messageId: m2.id }, DELETED]]);
  // A new id is a new delete too.
  await assertAllRefused(sa, [['delete-message', { conversationId: conv.id, messageId: m2.id, changeId: randomUUID() }, DELETED]]);

  // A react retried after a later change: answered as the first time, not applied again.
  const reactId = randomUUID();
  const on = await react(sa, conv.id, m3.id, '👍', true, reactId);
  assert.deepEqual(on, reacted(conv.id, m3.id, '👍', true, { '👍': 1 }));
  expectedLog.push(`reaction-updated ${m3.id} ${a} 👍 true`);
  assert.deepEqual(await react(sa, conv.id, m3.id, '👍', false), reacted(conv.id, m3.id, '👍', false, {}), 'taken back');
  expectedLog.push(`reaction-updated ${m3.id} ${a} 👍 false`);
  assert.deepEqual(await react(sa2, conv.id, m3.id, '👍', true, reactId), on, 'the late retry is answered as the first time');
  assert.deepEqual(await storedOf(conv.id, m3.id, a), row(m3), 'and not stored again: no reaction');
  // The id is per user: b's change with the same id is b's own.
  assert.deepEqual(await react(sb, conv.id, m3.id, '👍', true, reactId), reacted(conv.id, m3.id, '👍', true, { '👍': 1 }));
  expectedLog.push(`reaction-updated ${m3.id} ${b} 👍 true`);
  assert.deepEqual(await storedOf(conv.id, m3.id, b), row(m3, { reactions: { '👍': 1 }, my_reactions: ['👍'] }));

  await untilLogged(recB, expectedLog.length);
  await quiet([sb]);
  assert.deepEqual(changeLog(recB), expectedLog, 'each change heard once');
  assert.deepEqual(await storedOf(conv.id, m2.id), row(m2, { content: null, deleted_at: deletedAt }));
});

// --- the history and the replay -------------------------------------------------------------

test('the history (?user_id= for my_reactions) and a replay (the socket user\'s my_reactions) carry edited_at, deleted_at, reactions and my_reactions', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sa, a, conv.id, 'popular');
  const m2 = await srv.send(sa, a, conv.id, 'tpyo');
  const m3 = await srv.send(sa, a, conv.id, 'https://img.example.com/wrong.png', 'image');
  assert.equal((await react(sb, conv.id, m1.id, '👍', true)).success, true);
  assert.equal((await react(sa, conv.id, m1.id, '👍', true)).success, true);
  assert.equal((await react(sa, conv.id, m1.id, '😂', true)).success, true);
  const editedAt = assertEdited(await edit(sa, conv.id, m2.id, 'typo'), m2, 'typo').edited_at;
  const deletedAt = assertDeleted(await remove(sa, conv.id, m3.id), m3);

  const state = {
    m1: { reactions: { '👍': 2, '😂': 1 } },
    m2: { content: 'typo', edited_at: editedAt },
    m3: { content: null, deleted_at: deletedAt },
  };
  const expected = (viewer) => [
    row(m1, { ...state.m1, my_reactions: viewer === a ? ['👍', '😂'] : viewer === b ? ['👍'] : [] }),
    row(m2, state.m2),
    row(m3, state.m3),
  ];
  assert.deepEqual((await historyOf(conv.id, a)).map(norm), expected(a), 'as a');
  assert.deepEqual((await historyOf(conv.id, b)).map(norm), expected(b), 'as b');
  assert.deepEqual((await historyOf(conv.id)).map(norm), expected(undefined), 'as nobody: no my_reactions');
  const cursor = await srv.history(conv.id, `?after=0&limit=2&user_id=${b}`);
  assert.deepEqual(cursor.data.map(norm), expected(b).slice(0, 2), 'a cursor page too');

  // A replay from the start: each message in its current state, my_reactions the socket user's.
  for (const [user, gateway] of [[b, GW_A], [a, GW_B]]) {
    const s = await srv.connect(user, { gateway });
    const replayed = nextEvents(s, ['receive-message'], 3);
    const ack = await s.timeout(5000).emitWithAck('join-conversation', { conversationId: conv.id, lastMessageId: 0 });
    assert.deepEqual(ack, { success: true, conversationId: conv.id });
    const got = (await replayed).map((e) => norm(e.payload));
    assert.deepEqual(got, expected(user), `the replay to ${user} on ${label(s)}`);
  }
});

/**
 * A client's copy of one conversation, kept as a client would keep it: messages by id, from
 * `receive-message` (the fields it lacks at their defaults), changed by `message-updated`,
 * `message-deleted` and `reaction-updated` in arrival order (`me`'s reactions tracked in
 * my_reactions). `log` lists the events applied; `unknown` those about a message it did not hold.
 */
class Replica {
  constructor(me, conversationId, messages = new Map()) {
    this.me = me;
    this.conversationId = conversationId;
    this.messages = new Map([...messages].map(([id, m]) => [id, structuredClone(m)]));
    this.log = [];
    this.unknown = [];
    this.listener = (name, payload) => this.apply(name, payload);
  }

  /** Applies every event of `socket` from now on. */
  attach(socket) {
    socket.onAny(this.listener);
    return this;
  }

  detach(socket) {
    socket.offAny(this.listener);
  }

  apply(name, p) {
    if (name === 'receive-message') {
      if (p?.conversation_id !== this.conversationId) return;
      this.log.push(describe(name, p));
      this.messages.set(p.id, { edited_at: null, deleted_at: null, reactions: {}, my_reactions: [], ...structuredClone(p) });
      return;
    }
    if (!CHANGES.includes(name)) return;
    const conversationId = name === 'message-updated' ? p?.conversation_id : p?.conversationId;
    if (conversationId !== this.conversationId) return;
    this.log.push(describe(name, p));
    const id = name === 'message-updated' ? p.id : p.messageId;
    const held = this.messages.get(id);
    if (!held) {
      this.unknown.push(describe(name, p));
      return;
    }
    if (name === 'message-updated') {
      this.messages.set(id, { ...held, ...structuredClone(p), my_reactions: held.my_reactions });
    } else if (name === 'message-deleted') {
      this.messages.set(id, { ...held, content: null, deleted_at: p.deleted_at });
    } else {
      const mine = new Set(held.my_reactions);
      if (p.userId === this.me) {
        if (p.on) mine.add(p.emoji);
        else mine.delete(p.emoji);
      }
      this.messages.set(id, { ...held, reactions: { ...p.counts }, my_reactions: [...mine] });
    }
  }

  /** The copy as a history: oldest first, my_reactions sorted. */
  rows() {
    return [...this.messages.values()].sort((x, y) => x.id - y.id).map(norm);
  }
}

/** Waits until `replica.log` has `n` entries (or `timeoutMs` passed), then a quiet window. */
async function settle(replica, n, timeoutMs = 5000) {
  const deadline = Date.now() + timeoutMs;
  while (replica.log.length < n && Date.now() < deadline) await new Promise((r) => setTimeout(r, 25));
  await new Promise((r) => setTimeout(r, QUIET_MS));
}

test('an offline client converges: the join with lastMessageId replays the edits, deletes and reactions made meanwhile among the missed messages, in order; applied to its copy they give the history', async () => {
  const [owner, a, b] = srv.users(3);
  const group = await createGroup(owner, [a, b]);
  const g = group.id;
  const so = await srv.connect(owner, { gateway: GW_A });
  const sb = await srv.connect(b, { gateway: GW_B });
  const sa = await srv.connect(a, { gateway: GW_A });
  for (const s of [so, sb, sa]) await srv.join(s, g);

  // Online: a keeps its copy from what it hears, including its own reaction. m4 comes after
  // the reactions, so a's lastMessageId (m4) stands after everything it heard.
  const online = new Replica(a, g).attach(sa);
  const m1 = await srv.send(sb, b, g, 'm1');
  const m2 = await srv.send(sb, b, g, 'm2');
  const m3 = await srv.send(sb, b, g, 'm3');
  assert.deepEqual(await react(sa, g, m3.id, '👍', true), reacted(g, m3.id, '👍', true, { '👍': 1 }));
  assert.deepEqual(await react(sb, g, m1.id, '🎉', true), reacted(g, m1.id, '🎉', true, { '🎉': 1 }));
  const m4 = await srv.send(so, owner, g, 'm4');
  await settle(online, 6);
  assert.deepEqual(online.log, [
    `receive-message ${m1.id}`, `receive-message ${m2.id}`, `receive-message ${m3.id}`,
    `reaction-updated ${m3.id} ${a} 👍 true`, `reaction-updated ${m1.id} ${b} 🎉 true`, `receive-message ${m4.id}`,
  ], 'what a heard online');
  assert.deepEqual(online.rows(), (await historyOf(g, a)).map(norm), 'the live copy is the history');

  // Offline: b edits m1, the owner sends m5 and deletes b's m2, b reacts to m3, a's other
  // device adds one reaction to m3 and takes back the other, b reacts to m5 and edits m1 again.
  online.detach(sa);
  sa.disconnect();
  const sa2 = await srv.connect(a, { gateway: GW_B });
  assertEdited(await edit(sb, g, m1.id, 'm1 edited'), m1, 'm1 edited', { '🎉': 1 });
  const m5 = await srv.send(so, owner, g, 'm5');
  assertDeleted(await remove(so, g, m2.id), m2);
  assert.equal((await react(sb, g, m3.id, '🎉', true)).success, true);
  assert.deepEqual(await react(sa2, g, m3.id, '❤️', true), reacted(g, m3.id, '❤️', true, { '👍': 1, '🎉': 1, '❤️': 1 }));
  assert.deepEqual(await react(sa2, g, m3.id, '👍', false), reacted(g, m3.id, '👍', false, { '🎉': 1, '❤️': 1 }));
  assert.deepEqual(await react(sb, g, m5.id, '🔥', true), reacted(g, m5.id, '🔥', true, { '🔥': 1 }));
  assertEdited(await edit(sb, g, m1.id, 'm1 edited twice'), m1, 'm1 edited twice', { '🎉': 1 });

  // Back, on the other gateway: the copy it had, and the replay.
  const back = await srv.connect(a, { gateway: GW_B });
  const replica = new Replica(a, g, online.messages).attach(back);
  const ack = await back.timeout(5000).emitWithAck('join-conversation', { conversationId: g, lastMessageId: m4.id });
  assert.deepEqual(ack, { success: true, conversationId: g });
  const aboutHeld = [
    `message-updated ${m1.id} m1 edited`,
    `receive-message ${m5.id}`,
    `message-deleted ${m2.id}`,
    `reaction-updated ${m3.id} ${b} 🎉 true`,
    `reaction-updated ${m3.id} ${a} ❤️ true`,
    `reaction-updated ${m3.id} ${a} 👍 false`,
    `message-updated ${m1.id} m1 edited twice`,
  ];
  await settle(replica, aboutHeld.length);
  // m5's own reaction may also be replayed (after m5); the replayed m5 already carries it.
  const ofM5 = `reaction-updated ${m5.id} ${b} 🔥 true`;
  assert.deepEqual(replica.log.filter((e) => e !== ofM5), aboutHeld, `the replay, in order: ${safeJson(replica.log)}`);
  assert.ok(!replica.log.includes(ofM5) || replica.log.indexOf(ofM5) > replica.log.indexOf(`receive-message ${m5.id}`), 'a change of m5 after m5');
  assert.deepEqual(replica.unknown, [], 'no change of a message the client does not hold');
  assert.deepEqual(norm(replica.messages.get(m5.id)), row(m5, { reactions: { '🔥': 1 } }), 'the replayed m5 in its current state');

  const rows = (await historyOf(g, a)).map(norm);
  assert.deepEqual(replica.rows(), rows, 'the copy is the history');
  assert.deepEqual(rows.map((m) => [m.id, m.content]), [[m1.id, 'm1 edited twice'], [m2.id, null], [m3.id, 'm3'], [m4.id, 'm4'], [m5.id, 'm5']]);
  assert.deepEqual(rows[2].my_reactions, ['❤️'], "a's reactions as its other device left them");
  assert.deepEqual(rows[2].reactions, { '🎉': 1, '❤️': 1 });
});

// --- across gateways and in order ----------------------------------------------------------

test('changes made on one gateway reach the joined sockets on both, each once; a member\'s socket outside the room hears none', async () => {
  const [owner, b, c] = srv.users(3);
  const group = await createGroup(owner, [b, c]);
  const g = group.id;
  const so = await srv.connect(owner, { gateway: GW_A }); // the editor
  const sb = await srv.connect(b, { gateway: GW_B }); // reacts, from the other gateway
  const sc = await srv.connect(c, { gateway: GW_A }); // watches on the editor's gateway
  const scB = await srv.connect(c, { gateway: GW_B }); // watches on the other gateway
  const cOut = await srv.connect(c, { gateway: GW_B }); // c's socket not in the room
  const watchers = [so, sb, sc, scB];
  for (const s of watchers) await srv.join(s, g);
  const recs = watchers.map((s) => recordEvents(s));
  const recOut = recordEvents(cOut);

  const m = await srv.send(so, owner, g, 'across');
  let heard = announced(watchers, 'message-updated');
  const message = assertEdited(await edit(so, g, m.id, 'across, edited'), m, 'across, edited');
  assert.deepEqual(asUpdated(await heard), asUpdated(message));
  heard = announced(watchers, 'reaction-updated');
  assert.deepEqual(await react(sb, g, m.id, '👀', true), reacted(g, m.id, '👀', true, { '👀': 1 }));
  assert.deepEqual(await heard, { conversationId: g, messageId: m.id, userId: b, emoji: '👀', on: true, counts: { '👀': 1 } });
  heard = announced(watchers, 'message-deleted');
  const deletedAt = assertDeleted(await remove(so, g, m.id), m);
  assert.deepEqual(await heard, { conversationId: g, messageId: m.id, deleted_at: deletedAt });

  await quiet([...watchers, cOut]);
  const expected = [`message-updated ${m.id} across, edited`, `reaction-updated ${m.id} ${b} 👀 true`, `message-deleted ${m.id}`];
  recs.forEach((rec, i) => assert.deepEqual(changeLog(rec), expected, `once each, in order, on ${label(watchers[i])}`));
  assert.deepEqual(changeLog(recOut), [], `nothing outside the room (${label(cOut)})`);
});

test('order: a send followed at once by an edit of an earlier message and a react, from one socket, reach the room in the order sent', async () => {
  const { a, conv, sa, sb } = await srv.pairAcrossGateways();
  // Both sockets have had m0 before the watch begins.
  const first = [sa, sb].map((s) => srv.once(s, 'receive-message', 5000));
  const m0 = await srv.send(sa, a, conv.id, 'm0');
  await Promise.all(first);
  const names = ['receive-message', ...CHANGES];
  const counts = {};
  for (let i = 1; i <= 5; i++) {
    const arrived = [sa, sb].map((s) => nextEvents(s, names, 3, 10_000));
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `new ${i}` });
    const acks = [edit(sa, conv.id, m0.id, `m0 edit ${i}`), react(sa, conv.id, m0.id, `e${i}`, true)];
    counts[`e${i}`] = 1;
    for (const ack of await Promise.all(acks)) assert.equal(ack?.success, true, safeJson(ack));
    const expected = [['receive-message', `new ${i}`], ['message-updated', `m0 edit ${i}`], ['reaction-updated', `e${i}`]];
    for (const [k, events] of (await Promise.all(arrived)).entries()) {
      const got = events.map(({ name, payload }) => [name, name === 'reaction-updated' ? payload.emoji : payload.content]);
      assert.deepEqual(got, expected, `round ${i}: the order on ${label([sa, sb][k])}`);
      assert.deepEqual(events[2].payload.counts, counts);
    }
  }
  const rows = await historyOf(conv.id);
  assert.deepEqual(rows.map((m) => m.content), ['m0 edit 5', 'new 1', 'new 2', 'new 3', 'new 4', 'new 5']);
});

test('order: an edit or a react followed at once by a send, from one socket, reach the room in the order sent', async () => {
  const { a, conv, sa, sb } = await srv.pairAcrossGateways();
  const first = [sa, sb].map((s) => srv.once(s, 'receive-message', 5000));
  const m0 = await srv.send(sa, a, conv.id, 'm0');
  await Promise.all(first);
  const names = ['receive-message', ...CHANGES];
  const arrived = [sa, sb].map((s) => nextEvents(s, names, 4, 10_000));
  const edited = edit(sa, conv.id, m0.id, 'm0 edited');
  sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'after the edit' });
  const reacted = react(sa, conv.id, m0.id, '👌', true);
  sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'after the react' });
  for (const ack of await Promise.all([edited, reacted])) assert.equal(ack?.success, true, safeJson(ack));
  const expected = [
    ['message-updated', 'm0 edited'], ['receive-message', 'after the edit'],
    ['reaction-updated', '👌'], ['receive-message', 'after the react'],
  ];
  for (const [k, events] of (await Promise.all(arrived)).entries()) {
    const got = events.map(({ name, payload }) => [name, name === 'reaction-updated' ? payload.emoji : payload.content]);
    assert.deepEqual(got, expected, `the order on ${label([sa, sb][k])}`);
  }
});
