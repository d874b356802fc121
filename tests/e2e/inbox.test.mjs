// The inbox (issue 16): read and delivered receipts (`mark-delivered`, `mark-read` and the
// `message-delivered` / `message-read` announcements), unread counts, the replay of positions on
// a join with lastMessageId, and the inbox list `GET /api/chats/users/{id}/conversations` with
// its cursor pages; in cluster mode also the conversation_members table behind them. Runs
// all-in-one and as a cluster; where gateways matter they are forced (0 = gateway A, 1 =
// gateway B; both are the one server in single mode). Elsewhere, as they need a server of their
// own: the JWT rule of the list in inbox-jwt.test.mjs, storage failures in faults/receipts.test.mjs.

import assert from 'node:assert/strict';
import { test, useServer, recordEvents, label, safeJson, psql } from './harness.mjs';

const srv = useServer();

const GW_A = 0;
const GW_B = 1;
const RECEIPTS = ['message-delivered', 'message-read'];
/** "Nothing (more) arrives" is watched for this long: well above a cross-gateway hop. */
const QUIET_MS = srv.mode === 'cluster' ? 800 : 300;
/** The contract's timestamps: ISO 8601 in UTC with milliseconds. */
const ISO_MS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;
const NOT_FOUND = 'Message not found in this conversation';
const NOT_MEMBER = 'Unauthorized to join this conversation';
const BAD_CURSOR = 'before must be a cursor from next_before';

/** mark-delivered / mark-read with an acknowledgement; resolves with the ack. */
const mark = (s, event, conversationId, messageId) =>
  s.timeout(5000).emitWithAck(event, { conversationId, messageId });

const ok = (conversationId, messageId) => ({ success: true, conversationId, messageId });

/** Asserts an announcement's exact shape; its time is about now. */
function assertReceipt(payload, event, { conversationId, userId, messageId }) {
  const at = event === 'message-read' ? 'readAt' : 'deliveredAt';
  assert.deepEqual(payload, { conversationId, userId, messageId, [at]: payload?.[at] }, `${event} payload`);
  assert.match(String(payload[at]), ISO_MS, `${event}.${at}`);
  assert.ok(Math.abs(Date.now() - Date.parse(payload[at])) < 60_000, `${event}.${at} ${payload[at]} is not about now`);
}

/** The receipt announcements recorded on a socket, as [event, userId, messageId]. */
const receiptLog = (rec) => rec.events
  .filter((e) => RECEIPTS.includes(e.name))
  .map((e) => [e.name, e.payload?.userId, e.payload?.messageId]);

/** Resolves after QUIET_MS; fails if any receipt announcement reaches one of `sockets` meanwhile. */
const quiet = (sockets, ms = QUIET_MS) =>
  Promise.all(sockets.flatMap((s) => RECEIPTS.map((event) => srv.expectNone(s, event, ms))));

/**
 * Resolves with the one payload of the next `event` that reaches every socket of `sockets`
 * (asserting it is the same on each). Waiting for all of them matters before a quiet window:
 * the copies travel separately (room and user subjects, per gateway) and may arrive apart.
 */
async function announced(sockets, event, timeoutMs = 5000) {
  const payloads = await Promise.all(sockets.map((s) => srv.once(s, event, timeoutMs)));
  for (const p of payloads) assert.deepEqual(p, payloads[0], `the same ${event} on every socket`);
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

/**
 * A refused mark: the ack is {success: false, conversationId, messageId, error} echoing what
 * was sent (a field not sent may come back absent or null), and the socket gets an `error`
 * event with the same text.
 */
async function assertRefused(s, event, payload, error) {
  const [ack, errorEvent] = await Promise.all([
    s.timeout(5000).emitWithAck(event, payload),
    srv.once(s, 'error', 5000),
  ]);
  const what = `${event} ${safeJson(payload)} on ${label(s)}`;
  const echoed = { ...ack };
  for (const field of ['conversationId', 'messageId']) {
    if (!(field in payload)) {
      assert.ok(ack?.[field] === undefined || ack?.[field] === null, `${what}: ack.${field} for a field not sent: ${safeJson(ack)}`);
      delete echoed[field];
    }
  }
  assert.deepEqual(echoed, { success: false, ...payload, error }, `${what}: ack`);
  assert.deepEqual(errorEvent, { message: error }, `${what}: error event`);
}

/** GET the user's inbox (query: '?limit=...'); asserts 200. */
async function inbox(userId, query = '') {
  const res = await srv.api('GET', `/api/chats/users/${userId}/conversations${query}`);
  assert.equal(res.status, 200, `${res.url} → ${res.status} ${res.text}`);
  return res.body;
}

/** The entry of `conversationId` in an inbox page (asserts it is there). */
function entryOf(page, conversationId) {
  const entry = page.data.find((c) => c.id === conversationId);
  assert.ok(entry, `conversation ${conversationId} not in ${safeJson(page.data.map((c) => c.id))}`);
  return entry;
}

/** A member's positions as the list gives them ({user_id, last_read_message_id, last_delivered_message_id}). */
const member = (userId, read, delivered) => ({ user_id: userId, last_read_message_id: read, last_delivered_message_id: delivered });
const membersOf = (entry) => [...entry.members].sort((x, y) => x.user_id - y.user_id);

/** Asserts a 400 with the JSON error body, whose message (a string or a list) includes `text`. */
function assertBadRequest(res, text) {
  assert.equal(res.status, 400, `${res.url} → ${res.status} ${res.text}`);
  assert.equal(res.body?.statusCode, 400, res.text);
  assert.equal(typeof res.body.error, 'string', res.text);
  const messages = [].concat(res.body.message);
  assert.ok(messages.some((m) => typeof m === 'string' && m.includes(text)), `message should include ${JSON.stringify(text)}: ${res.text}`);
}

/** Every page of `userId`'s inbox at `limit`, following next_before to the end. */
async function walk(userId, limit) {
  const pages = [];
  let before = null;
  for (let i = 0; i < 50; i++) {
    const page = await inbox(userId, `?limit=${limit}${before === null ? '' : `&before=${encodeURIComponent(before)}`}`);
    pages.push(page);
    if (page.next_before === null) return pages;
    assert.equal(typeof page.next_before, 'string', `next_before: ${safeJson(page.next_before)}`);
    before = page.next_before;
  }
  throw new Error(`inbox of ${userId} still had a next_before after 50 pages`);
}

/** Newest activity first: last_activity_at never increases along the list. */
function assertActivityOrder(entries) {
  for (let i = 1; i < entries.length; i++) {
    assert.ok(
      Date.parse(entries[i - 1].last_activity_at) >= Date.parse(entries[i].last_activity_at),
      `entry ${i} (${entries[i].id} at ${entries[i].last_activity_at}) after ${entries[i - 1].id} at ${entries[i - 1].last_activity_at}`,
    );
  }
}

// --- receipts -------------------------------------------------------------------------------

test('receipts across gateways: acks carry the position; the room and every socket of the marking user get one announcement each', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a, { gateway: GW_A });
  const sb = await srv.connect(b, { gateway: GW_B });
  // a's second socket on b's gateway, not in the room: reached only as a socket of a.
  const saOut = await srv.connect(a, { gateway: GW_B });
  // a's third socket, in the room on b's gateway: reached both ways, and must get it once.
  const saIn = await srv.connect(a, { gateway: GW_B });
  // b's socket outside the room: a's receipts are for the room and a's sockets, not b's others.
  const sbOut = await srv.connect(b, { gateway: GW_A });
  for (const s of [sa, sb, saIn]) await srv.join(s, conv.id);
  const reached = { sa, sb, saOut, saIn };
  const recs = Object.fromEntries(Object.entries({ ...reached, sbOut }).map(([k, s]) => [k, recordEvents(s)]));

  const m1 = await srv.send(sb, b, conv.id, 'first');
  const m2 = await srv.send(sb, b, conv.id, 'second');

  const delivered = announced(Object.values(reached), 'message-delivered');
  assert.deepEqual(await mark(sa, 'mark-delivered', conv.id, m1.id), ok(conv.id, m1.id), 'mark-delivered ack');
  assertReceipt(await delivered, 'message-delivered', { conversationId: conv.id, userId: a, messageId: m1.id });

  // Read from the socket that is not in the room.
  const read = announced(Object.values(reached), 'message-read');
  assert.deepEqual(await mark(saOut, 'mark-read', conv.id, m2.id), ok(conv.id, m2.id), 'mark-read ack');
  assertReceipt(await read, 'message-read', { conversationId: conv.id, userId: a, messageId: m2.id });

  // No duplicates and nothing else (no message-delivered for the read either).
  const watched = { ...reached, sbOut };
  await quiet(Object.values(watched));
  for (const [name, s] of Object.entries(watched)) {
    const expected = name === 'sbOut' ? [] : [['message-delivered', a, m1.id], ['message-read', a, m2.id]];
    assert.deepEqual(receiptLog(recs[name]), expected, `receipts on ${name} (${label(s)})`);
  }

  // Stored: read m2 moved a's delivered position too; b's own messages count as read by b.
  const entry = entryOf(await inbox(b), conv.id);
  assert.deepEqual(membersOf(entry), [member(a, m2.id, m2.id), member(b, m2.id, m2.id)].sort((x, y) => x.user_id - y.user_id));
  assert.equal(entryOf(await inbox(a), conv.id).unread_count, 0, "a has read b's messages");
});

test('positions only move forward: an older or the same message answers the current position and announces nothing', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const ids = [];
  for (let i = 0; i < 4; i++) ids.push((await srv.send(sb, b, conv.id, `m${i}`)).id);
  const [m1, m2, m3, m4] = ids;
  const recA = recordEvents(sa);
  const recB = recordEvents(sb);

  let seen = announced([sa, sb], 'message-read');
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, m2), ok(conv.id, m2));
  assertReceipt(await seen, 'message-read', { conversationId: conv.id, userId: a, messageId: m2 });

  // Read m2 implies delivered m2: every older-or-equal mark answers m2, and nothing is announced.
  let silent = quiet([sa, sb]);
  for (const [event, id] of [['mark-read', m1], ['mark-read', m2], ['mark-delivered', m1], ['mark-delivered', m2]]) {
    assert.deepEqual(await mark(sa, event, conv.id, id), ok(conv.id, m2), `${event} ${id} after read ${m2}`);
  }
  await silent;

  // Delivered moves ahead of read; each position answers for itself.
  seen = announced([sa, sb], 'message-delivered');
  assert.deepEqual(await mark(sa, 'mark-delivered', conv.id, m3), ok(conv.id, m3));
  assertReceipt(await seen, 'message-delivered', { conversationId: conv.id, userId: a, messageId: m3 });
  silent = quiet([sa, sb]);
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, m1), ok(conv.id, m2), 'an older read answers the read position');
  assert.deepEqual(await mark(sa, 'mark-delivered', conv.id, m2), ok(conv.id, m3), 'an older delivered answers the delivered position');
  assert.deepEqual(await mark(sa, 'mark-delivered', conv.id, m3), ok(conv.id, m3), 'the same again');
  await silent;

  // The next announcement is the next real move, not a late one of the refused-as-older marks.
  seen = announced([sa, sb], 'message-read');
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, m4), ok(conv.id, m4));
  assertReceipt(await seen, 'message-read', { conversationId: conv.id, userId: a, messageId: m4 });
  await quiet([sa, sb]);
  const expected = [['message-read', a, m2], ['message-delivered', a, m3], ['message-read', a, m4]];
  assert.deepEqual(receiptLog(recB), expected, 'announcements in the room');
  assert.deepEqual(receiptLog(recA), expected, 'announcements to the marking socket');
  assert.deepEqual(membersOf(entryOf(await inbox(a), conv.id)).find((m) => m.user_id === a), member(a, m4, m4));
});

/** A counter of a cluster role's /metrics (0 while it has no sample). */
async function counter(role, name) {
  const res = await fetch(`${srv.roleUrl(role)}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  assert.equal(res.status, 200, `GET /metrics of ${role}: ${res.status}`);
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? 0 : Number(line.split(' ')[1]);
}

const GATEWAY_SUPERSEDED = 'chat_gateway_receipts_superseded_total';
const PERSISTER_SUPERSEDED = 'chat_persister_receipts_superseded_total';
const COUNTERS_APART = {
  skip: srv.mode === 'cluster' ? false : 'the roles, and so their counters, are apart in cluster mode only',
};

/** Two users of a new conversation, each with a socket on gateway A joined to it. */
async function pairOnGatewayA() {
  const [a, c] = srv.users(2);
  const conv = await srv.openConversation(a, c);
  const sa = await srv.connect(a, { gateway: GW_A });
  const sc = await srv.connect(c, { gateway: GW_A });
  await srv.join(sa, conv.id);
  await srv.join(sc, conv.id);
  return { a, c, conv, sa, sc };
}

test("a receipt the reader's own newer message supersedes: the gateway answers it where the room is open, else the persister without the database", COUNTERS_APART, async () => {
  const { a, c, conv, sa, sc } = await pairOnGatewayA();
  // a replies: its own message counts as read by a. Both heard live in the room on gateway A.
  const received = new Set();
  const heard = new Promise((resolve) => {
    sa.on('receive-message', (m) => {
      received.add(m?.id);
      if (received.size === 2) resolve();
    });
  });
  const x1 = await srv.send(sc, c, conv.id, 'from c');
  const x2 = await srv.send(sa, a, conv.id, 'from a');
  await Promise.race([heard, new Promise((_, reject) => setTimeout(() => reject(new Error(`heard only ${[...received]}`)), 5000))]);
  assert.deepEqual([...received].sort((p, q) => p - q), [x1.id, x2.id]);

  const before = {
    gwa: await counter('gwa', GATEWAY_SUPERSEDED),
    gwb: await counter('gwb', GATEWAY_SUPERSEDED),
    persister: await counter('persister', PERSISTER_SUPERSEDED),
  };
  let silent = quiet([sa, sc]);
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, x1.id), ok(conv.id, x2.id), 'answered with the position past it');
  await silent;
  assert.equal(await counter('gwa', GATEWAY_SUPERSEDED), before.gwa + 1, 'gateway A answered it');
  assert.equal(await counter('persister', PERSISTER_SUPERSEDED), before.persister, 'the persister never saw it');

  // On gateway B no socket joined the conversation: no room there, so the receipt goes to the
  // persister, which knows x1's conversation and a's position from its own commits.
  const sa2 = await srv.connect(a, { gateway: GW_B });
  silent = quiet([sa, sc, sa2]);
  assert.deepEqual(await mark(sa2, 'mark-delivered', conv.id, x1.id), ok(conv.id, x2.id), 'answered with the position past it');
  await silent;
  assert.equal(await counter('gwb', GATEWAY_SUPERSEDED), before.gwb, 'gateway B could not tell');
  assert.equal(await counter('persister', PERSISTER_SUPERSEDED), before.persister + 1, 'the persister answered it without the database');
  assert.deepEqual(membersOf(entryOf(await inbox(a), conv.id)).find((m) => m.user_id === a), member(a, x2.id, x2.id));
});

const GATEWAY_HELD = 'chat_gateway_receipts_held_total';

test("a receipt sent while the reader's own reply is on its way waits for the reply and is answered with its id, without the persister", COUNTERS_APART, async () => {
  const { a, c, conv, sa, sc } = await pairOnGatewayA();
  const heard = new Promise((resolve, reject) => {
    sa.once('receive-message', resolve);
    setTimeout(() => reject(new Error('a did not hear x1')), 5000);
  });
  const x1 = await srv.send(sc, c, conv.id, 'from c');
  assert.equal((await heard)?.id, x1.id, 'the room on gateway A delivered x1');

  const before = {
    held: await counter('gwa', GATEWAY_HELD),
    superseded: await counter('gwa', GATEWAY_SUPERSEDED),
    persister: await counter('persister', PERSISTER_SUPERSEDED),
  };
  const silent = quiet([sa, sc]);
  // a's reply leaves first and is still on its way when a marks x1 read (same socket, in order).
  const reply = srv.send(sa, a, conv.id, 'from a');
  const acked = mark(sa, 'mark-read', conv.id, x1.id);
  const x2 = await reply;
  assert.ok(x2.id > x1.id);
  assert.deepEqual(await acked, ok(conv.id, x2.id), "answered with the reply's id: the reader's position past x1");
  await silent; // the reply moved a's positions silently; the receipt moved nothing more
  assert.equal(await counter('gwa', GATEWAY_HELD), before.held + 1, "gateway A answered it with the reply's outcome");
  assert.equal(await counter('gwa', GATEWAY_SUPERSEDED), before.superseded, 'not by the known positions');
  assert.equal(await counter('persister', PERSISTER_SUPERSEDED), before.persister, 'the persister never saw it');
  assert.deepEqual(membersOf(entryOf(await inbox(a), conv.id)).find((m) => m.user_id === a), member(a, x2.id, x2.id));
});

test('mark-read moves the delivered position too, without a message-delivered', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sb, b, conv.id, 'read me');
  const noDelivered = Promise.all([sa, sb].map((s) => srv.expectNone(s, 'message-delivered', QUIET_MS)));
  const seen = announced([sa, sb], 'message-read');
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, m1.id), ok(conv.id, m1.id));
  assertReceipt(await seen, 'message-read', { conversationId: conv.id, userId: a, messageId: m1.id });
  await noDelivered;
  const entry = entryOf(await inbox(a), conv.id);
  assert.deepEqual(membersOf(entry).find((m) => m.user_id === a), member(a, m1.id, m1.id), 'delivered moved with read');
  // And so marking it delivered now is a no-op.
  const silent = quiet([sa, sb]);
  assert.deepEqual(await mark(sa, 'mark-delivered', conv.id, m1.id), ok(conv.id, m1.id));
  await silent;
});

test("a sender's own messages count as read and delivered by them, silently; unread counts only others' messages", async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const saOut = await srv.connect(a, { gateway: GW_B }); // a's socket outside the room
  const sockets = [sa, sb, saOut];
  const recs = sockets.map((s) => recordEvents(s));

  const b1 = await srv.send(sb, b, conv.id, 'b1');
  const b2 = await srv.send(sb, b, conv.id, 'b2');
  let listA = await inbox(a);
  assert.equal(entryOf(listA, conv.id).unread_count, 2);
  assert.equal(listA.total_unread, 2);
  assert.deepEqual(membersOf(entryOf(listA, conv.id)), [member(a, null, null), member(b, b2.id, b2.id)].sort((x, y) => x.user_id - y.user_id));
  assert.equal(entryOf(await inbox(b), conv.id).unread_count, 0, "b's own messages are not unread for b");

  // a answers: a's positions move to a's message, which is after b1 and b2: nothing unread for a.
  const a1 = await srv.send(sa, a, conv.id, 'a1');
  listA = await inbox(a);
  assert.equal(entryOf(listA, conv.id).unread_count, 0);
  assert.equal(listA.total_unread, 0);
  assert.deepEqual(membersOf(entryOf(listA, conv.id)), [member(a, a1.id, a1.id), member(b, b2.id, b2.id)].sort((x, y) => x.user_id - y.user_id));
  const listB = await inbox(b);
  assert.equal(entryOf(listB, conv.id).unread_count, 1, "a's message is unread for b");
  assert.equal(listB.total_unread, 1);

  const b3 = await srv.send(sb, b, conv.id, 'b3');
  listA = await inbox(a);
  assert.equal(entryOf(listA, conv.id).unread_count, 1, 'only b3 is unread for a');
  assert.equal(listA.total_unread, 1);
  // b's own b3 moved b's read position past a1: nothing unread for b any more.
  assert.equal(entryOf(await inbox(b), conv.id).unread_count, 0, "b's answer counts as having read a1");
  assert.deepEqual(membersOf(entryOf(listA, conv.id)).find((m) => m.user_id === b), member(b, b3.id, b3.id));

  // Sending announced no receipt anywhere (receive-message already tells).
  await quiet(sockets);
  recs.forEach((rec, i) => assert.deepEqual(receiptLog(rec), [], `receipts on ${label(sockets[i])}`));
  assert.ok(b1.id < b2.id && b2.id < a1.id && a1.id < b3.id);
});

/**
 * Runs every refusal case through both events on `s`; collects what differs from the contract
 * (so one run shows every deviation) and asserts that nothing does.
 */
async function assertAllRefused(s, cases) {
  const deviations = [];
  for (const event of ['mark-delivered', 'mark-read']) {
    for (const [payload, error] of cases) {
      try {
        await assertRefused(s, event, payload, error);
      } catch (err) {
        if (!(err instanceof assert.AssertionError)) throw err;
        // The assertion's first line names the part (ack or error event) that differs.
        deviations.push(`${err.message.split('\n')[0]}: expected ${JSON.stringify(error)}, got ${safeJson(err.actual)}`);
      }
    }
  }
  assert.deepEqual(deviations, [], `refusals that differ from the contract:\n${deviations.join('\n')}`);
}

/** What the refusal tests check after the refusals: nothing announced, nothing stored. */
async function assertNothingMoved(a, conv, recB, sb) {
  await quiet([sb]);
  assert.deepEqual(receiptLog(recB), [], 'nothing announced');
  const entry = entryOf(await inbox(a), conv.id);
  assert.deepEqual(membersOf(entry).find((m) => m.user_id === a), member(a, null, null), "a's positions did not move");
  assert.equal(entry.unread_count, 1);
}

test('mark-delivered / mark-read with bad ids are refused in the ack and an error event, and change nothing', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sb, b, conv.id, 'hello');
  const recB = recordEvents(sb);
  await assertAllRefused(sa, [
    [{ conversationId: 'abc', messageId: m1.id }, 'conversationId must be an integer number'],
    [{ conversationId: String(conv.id), messageId: m1.id }, 'conversationId must be an integer number'],
    [{ conversationId: 1.5, messageId: m1.id }, 'conversationId must be an integer number'],
    [{ conversationId: conv.id, messageId: String(m1.id) }, 'messageId must be an integer number'],
    [{ conversationId: conv.id, messageId: m1.id + 0.5 }, 'messageId must be an integer number'],
    [{ conversationId: 0, messageId: m1.id }, 'conversationId must be a positive number'],
    [{ conversationId: -4, messageId: m1.id }, 'conversationId must be a positive number'],
    [{ conversationId: conv.id, messageId: 0 }, 'messageId must be a positive number'],
    [{ conversationId: conv.id, messageId: -1 }, 'messageId must be a positive number'],
    [{ conversationId: 0, messageId: -5 }, 'conversationId must be a positive number, messageId must be a positive number'],
    [{ conversationId: 'x', messageId: 'y' }, 'conversationId must be an integer number, messageId must be an integer number'],
    [{ conversationId: 'x', messageId: 0 }, 'conversationId must be an integer number, messageId must be a positive number'],
  ]);
  await assertNothingMoved(a, conv, recB, sb);
});

// A missing id reads as `send-message`'s do: "should not be empty" before "must be an integer number".
test('mark-delivered / mark-read with missing ids: "<field> should not be empty, <field> must be an integer number"', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sb, b, conv.id, 'hello');
  const recB = recordEvents(sb);
  const missing = (field) => `${field} should not be empty, ${field} must be an integer number`;
  await assertAllRefused(sa, [
    [{}, `${missing('conversationId')}, ${missing('messageId')}`],
    [{ messageId: m1.id }, missing('conversationId')],
    [{ conversationId: conv.id }, missing('messageId')],
    [{ conversationId: null, messageId: '' }, `${missing('conversationId')}, ${missing('messageId')}`],
  ]);
  await assertNothingMoved(a, conv, recB, sb);
});

test("refusals: unknown conversation, non-member, another conversation's message, a message not stored yet", async () => {
  const [a, b, c] = srv.users(3);
  const ab = await srv.openConversation(a, b);
  const ac = await srv.openConversation(a, c);
  const sa = await srv.connect(a, { gateway: GW_A });
  const sb = await srv.connect(b, { gateway: GW_B });
  const sc = await srv.connect(c, { gateway: GW_B });
  await srv.join(sb, ab.id);
  const recB = recordEvents(sb);
  const mAB = await srv.send(sb, b, ab.id, 'in ab');
  const mAC = await srv.send(sc, c, ac.id, 'in ac');
  const newest = Math.max(mAB.id, mAC.id);

  for (const event of ['mark-delivered', 'mark-read']) {
    await assertRefused(sa, event, { conversationId: 999_999_999, messageId: mAB.id }, 'Conversation not found');
    await assertRefused(sc, event, { conversationId: ab.id, messageId: mAB.id }, NOT_MEMBER);
    await assertRefused(sa, event, { conversationId: ab.id, messageId: mAC.id }, NOT_FOUND);
    await assertRefused(sa, event, { conversationId: ab.id, messageId: newest + 1 }, NOT_FOUND);
    await assertRefused(sa, event, { conversationId: ab.id, messageId: 2 ** 40 }, NOT_FOUND);
  }
  await quiet([sb]);
  assert.deepEqual(receiptLog(recB), [], 'nothing announced in the room');
  const list = await inbox(a);
  assert.deepEqual(membersOf(entryOf(list, ab.id)).find((m) => m.user_id === a), member(a, null, null));
  assert.deepEqual(membersOf(entryOf(list, ac.id)).find((m) => m.user_id === a), member(a, null, null));
  assert.equal(list.total_unread, 2);
  // The refusals did not spoil the socket: a real mark still works.
  assert.deepEqual(await mark(sa, 'mark-read', ab.id, mAB.id), ok(ab.id, mAB.id));
});

// --- replay on join -------------------------------------------------------------------------

test("a join with lastMessageId replays the members' current positions after the missed messages and before live events; a join without it gets none", async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a, { gateway: GW_A });
  const sb = await srv.connect(b, { gateway: GW_B });
  const ids = [];
  for (let i = 0; i < 3; i++) ids.push((await srv.send(sb, b, conv.id, `m${i}`)).id);
  const [m1, m2, m3] = ids;
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, m2), ok(conv.id, m2));

  // b comes back on gateway A having seen m1.
  const back = await srv.connect(b, { gateway: GW_A });
  const rec = recordEvents(back);
  // 2 missed messages, 4 replayed positions (a: m2, b: m3), 1 live read.
  const arrived = nextEvents(back, ['receive-message', ...RECEIPTS], 7, 8000);
  const joined = await back.timeout(5000).emitWithAck('join-conversation', { conversationId: conv.id, lastMessageId: m1 });
  assert.deepEqual(joined, { success: true, conversationId: conv.id });
  // Live, right after the join: it must come after the replay.
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, m3), ok(conv.id, m3));
  const events = await arrived;
  const names = events.map((e) => e.name);
  assert.deepEqual(names.slice(0, 2), ['receive-message', 'receive-message'], `sequence: ${safeJson(events)}`);
  assert.deepEqual(events.slice(0, 2).map((e) => e.payload.id), [m2, m3], 'the missed messages first');
  const replayed = events.slice(2, 6);
  assert.ok(replayed.every((e) => RECEIPTS.includes(e.name)), `then the positions: ${safeJson(events)}`);
  const byKey = Object.fromEntries(replayed.map((e) => [`${e.name} ${e.payload.userId}`, e.payload]));
  assert.deepEqual(Object.keys(byKey).sort(), [`message-delivered ${a}`, `message-delivered ${b}`, `message-read ${a}`, `message-read ${b}`],
    `one delivered and one read per member: ${safeJson(replayed)}`);
  for (const [key, payload] of Object.entries(byKey)) {
    const [event, user] = key.split(' ');
    // a's live read may be stored before the positions are looked up: then it is "current".
    const current = Number(user) === b ? [m3] : [m2, m3];
    assert.ok(current.includes(payload.messageId), `${key}: messageId ${payload.messageId}, expected one of ${current}`);
    assertReceipt(payload, event, { conversationId: conv.id, userId: Number(user), messageId: payload.messageId });
  }
  assert.equal(events[6].name, 'message-read', `the live event last: ${safeJson(events)}`);
  assertReceipt(events[6].payload, 'message-read', { conversationId: conv.id, userId: a, messageId: m3 });
  await quiet([back]);
  assert.equal(receiptLog(rec).length, 5, `no more receipts: ${safeJson(rec.events)}`);

  // A join without lastMessageId: no positions.
  const plain = await srv.connect(b, { gateway: GW_B });
  const none = quiet([plain]);
  await srv.join(plain, conv.id);
  await none;
});

test('a replaying join sends positions only for members that have one', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sb = await srv.connect(b, { gateway: GW_B });
  const m1 = await srv.send(sb, b, conv.id, 'unseen by a');
  // a has neither read nor delivered anything: only b's positions (from b's own message) come.
  const sa = await srv.connect(a, { gateway: GW_A });
  const rec = recordEvents(sa);
  const arrived = nextEvents(sa, ['receive-message', ...RECEIPTS], 3, 5000);
  const joined = await sa.timeout(5000).emitWithAck('join-conversation', { conversationId: conv.id, lastMessageId: 0 });
  assert.deepEqual(joined, { success: true, conversationId: conv.id });
  const events = await arrived;
  assert.equal(events[0].name, 'receive-message');
  assert.equal(events[0].payload.id, m1.id);
  assert.deepEqual(events.slice(1).map((e) => e.name).sort(), RECEIPTS);
  for (const e of events.slice(1)) assertReceipt(e.payload, e.name, { conversationId: conv.id, userId: b, messageId: m1.id });
  await quiet([sa]);
  assert.deepEqual(receiptLog(rec).filter(([, user]) => user === a), [], 'nothing about a, who has no position');
  assert.equal(receiptLog(rec).length, 2);
});

// --- the inbox list -------------------------------------------------------------------------

test('the inbox: newest activity first, last_message, unread_count, members and total_unread', async () => {
  const [u, v1, v2, v3] = srv.users(4);
  const c1 = await srv.openConversation(u, v1);
  const c2 = await srv.openConversation(v2, u); // u as receiver
  const c3 = await srv.openConversation(u, v3);

  // No messages yet: by creation, newest first.
  let list = await inbox(u);
  for (const key of ['data', 'total_unread', 'limit', 'next_before']) assert.ok(key in list, `missing ${key}: ${safeJson(list)}`);
  assert.deepEqual(list.data.map((c) => c.id), [c3.id, c2.id, c1.id]);
  assert.deepEqual([list.total_unread, list.limit, list.next_before], [0, 50, null]);
  for (const [conv, other] of [[c1, v1], [c2, v2], [c3, v3]]) {
    const e = entryOf(list, conv.id);
    assert.deepEqual(
      { id: e.id, sender_id: e.sender_id, receiver_id: e.receiver_id, created_at: e.created_at },
      { id: conv.id, sender_id: conv.sender_id, receiver_id: conv.receiver_id, created_at: conv.created_at },
    );
    assert.match(String(e.last_activity_at), ISO_MS);
    assert.equal(Date.parse(e.last_activity_at), Date.parse(conv.created_at), 'no message: activity is the creation');
    assert.equal(e.last_message, null);
    assert.equal(e.unread_count, 0);
    assert.deepEqual(membersOf(e), [member(u, null, null), member(other, null, null)].sort((x, y) => x.user_id - y.user_id));
  }

  // Activity in the oldest conversation moves it to the top.
  const s1 = await srv.connect(v1);
  await srv.send(s1, v1, c1.id, 'hello u');
  const last1 = await srv.send(s1, v1, c1.id, 'are you there?');
  list = await inbox(u);
  assert.deepEqual(list.data.map((c) => c.id), [c1.id, c3.id, c2.id]);
  const e1 = entryOf(list, c1.id);
  const stored = (await srv.history(c1.id)).data.find((m) => m.id === last1.id);
  assert.deepEqual(e1.last_message, stored, 'last_message is the stored message');
  assert.equal(Date.parse(e1.last_activity_at), Date.parse(last1.timestamp), 'activity is the last message time');
  assert.equal(e1.unread_count, 2);
  assert.equal(list.total_unread, 2);
  assert.deepEqual(membersOf(e1), [member(u, null, null), member(v1, last1.id, last1.id)].sort((x, y) => x.user_id - y.user_id));
  const listV1 = await inbox(v1);
  assert.deepEqual(listV1.data.map((c) => c.id), [c1.id], "only v1's conversations");
  assert.deepEqual([listV1.data[0].unread_count, listV1.total_unread], [0, 0]);
  assert.deepEqual(listV1.data[0].last_message, stored);

  // u writes in c2, then v3 in c3.
  const su = await srv.connect(u);
  const mine = await srv.send(su, u, c2.id, 'from u');
  list = await inbox(u);
  assert.deepEqual(list.data.map((c) => c.id), [c2.id, c1.id, c3.id]);
  assert.equal(entryOf(list, c2.id).unread_count, 0, "u's own message is not unread");
  assert.equal(entryOf(list, c2.id).last_message.id, mine.id);
  assert.equal(entryOf(await inbox(v2), c2.id).unread_count, 1);
  const s3 = await srv.connect(v3);
  await srv.send(s3, v3, c3.id, 'hi');
  list = await inbox(u);
  assert.deepEqual(list.data.map((c) => c.id), [c3.id, c2.id, c1.id]);
  assert.deepEqual(list.data.map((c) => c.unread_count), [1, 0, 2]);
  assert.equal(list.total_unread, 3);
  assertActivityOrder(list.data);

  // Reading changes counts, not the order.
  assert.deepEqual(await mark(su, 'mark-read', c1.id, last1.id), ok(c1.id, last1.id));
  list = await inbox(u);
  assert.deepEqual(list.data.map((c) => c.id), [c3.id, c2.id, c1.id]);
  assert.deepEqual(list.data.map((c) => c.unread_count), [1, 0, 0]);
  assert.equal(list.total_unread, 1);
  assert.deepEqual(membersOf(entryOf(list, c1.id)).find((m) => m.user_id === u), member(u, last1.id, last1.id));
});

test('the inbox of a user without conversations', async () => {
  const [u] = srv.users(1);
  assert.deepEqual(await inbox(u), { data: [], total_unread: 0, limit: 50, next_before: null });
});

test('inbox pages: the walk by next_before gives every conversation once, in order; total_unread counts all pages', async () => {
  const [u, ...partners] = srv.users(13);
  const convs = [];
  for (const p of partners) convs.push(await srv.openConversation(u, p));
  const su = await srv.connect(u);
  const sp3 = await srv.connect(partners[3]);
  const sp0 = await srv.connect(partners[0]);
  // Activity: c3 (partner), c8 (u), c0 (partner), c3 (u). Then c3 and c8 have nothing unread.
  await srv.send(sp3, partners[3], convs[3].id, 'p3');
  await srv.send(su, u, convs[8].id, 'u8');
  await srv.send(sp0, partners[0], convs[0].id, 'p0');
  await srv.send(su, u, convs[3].id, 'u3');
  const untouched = convs.filter((_, i) => ![0, 3, 8].includes(i)).reverse();
  const expected = [convs[3], convs[0], convs[8], ...untouched].map((c) => c.id);

  const full = await inbox(u);
  assert.deepEqual(full.data.map((c) => c.id), expected, 'newest activity first, then newest created');
  assert.equal(full.next_before, null);
  assertActivityOrder(full.data);

  const pages = await walk(u, 5);
  assert.deepEqual(pages.map((p) => p.data.length), [5, 5, 2]);
  assert.deepEqual(pages.map((p) => p.limit), [5, 5, 5]);
  const walked = pages.flatMap((p) => p.data.map((c) => c.id));
  assert.equal(new Set(walked).size, walked.length, `no duplicates: ${walked}`);
  assert.deepEqual(walked, expected, 'no gaps, same order');
  assert.deepEqual(pages.flatMap((p) => p.data), full.data, 'the same entries as the one page');
  // c0's one unread message is on the first page, but every page counts it.
  assert.deepEqual(pages.map((p) => p.total_unread), [1, 1, 1]);
  assert.deepEqual(pages.map((p) => p.data.reduce((n, c) => n + c.unread_count, 0)), [1, 0, 0]);
});

test('inbox limit: default 50, larger capped at 100, a positive integer else 400', async () => {
  const [u, ...partners] = srv.users(106);
  const created = [];
  for (let i = 0; i < partners.length; i += 15) {
    created.push(...await Promise.all(partners.slice(i, i + 15).map((p) => srv.openConversation(u, p))));
  }
  const all = new Set(created.map((c) => c.id));
  assert.equal(all.size, 105);

  // Pages of 100 (500 asked, capped): 100 then 5.
  const pages = await walk(u, 500);
  assert.deepEqual(pages.map((p) => [p.limit, p.data.length]), [[100, 100], [100, 5]]);
  const walked = pages.flatMap((p) => p.data.map((c) => c.id));
  assert.equal(walked.length, 105);
  assert.deepEqual(new Set(walked), all, 'every conversation, once');
  assertActivityOrder(pages.flatMap((p) => p.data));

  const first = await inbox(u);
  assert.deepEqual([first.limit, first.data.length, typeof first.next_before], [50, 50, 'string'], 'no limit: 50');
  assert.deepEqual(first.data.map((c) => c.id), walked.slice(0, 50));
  for (const [query, limit] of [['?limit=101', 100], ['?limit=100', 100], ['?limit=1', 1]]) {
    const page = await inbox(u, query);
    assert.deepEqual([page.limit, page.data.length, typeof page.next_before], [limit, limit, 'string'], query);
    assert.deepEqual(page.data.map((c) => c.id), walked.slice(0, limit), `${query}: the same order`);
  }
  const byDefault = await walk(u, 50);
  assert.deepEqual(byDefault.map((p) => p.data.length), [50, 50, 5]);
  assert.deepEqual(byDefault.flatMap((p) => p.data.map((c) => c.id)), walked, 'pages of 50: the same walk');

  for (const bad of ['0', '-1', 'abc', '1.5']) {
    assertBadRequest(await srv.api('GET', `/api/chats/users/${u}/conversations?limit=${bad}`), 'limit');
  }
});

test('inbox: a before that is not a next_before → 400', async () => {
  const [u, v, w] = srv.users(3);
  await srv.openConversation(u, v);
  await srv.openConversation(u, w);
  const page = await inbox(u, '?limit=1');
  assert.equal(typeof page.next_before, 'string');
  const next = await inbox(u, `?limit=1&before=${encodeURIComponent(page.next_before)}`);
  assert.equal(next.data.length, 1, 'the real cursor works');
  assert.notEqual(next.data[0].id, page.data[0].id);
  for (const bad of ['garbage', 'x_y', `${page.next_before}x`, '12_', '_12']) {
    const res = await srv.api('GET', `/api/chats/users/${u}/conversations?before=${encodeURIComponent(bad)}`);
    assertBadRequest(res, BAD_CURSOR);
  }
});

// --- storage (cluster: Postgres) ------------------------------------------------------------

/**
 * Rows of a query in this file's database, each as an array of its `columns` (by name) in
 * strings. Through jsonb: one line whatever psql's formatting, but its keys lose their order.
 */
async function rows(sql, columns) {
  const res = await psql(`select coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) from (${sql}) t`, { database: srv.dbName });
  assert.ok(res.ok, `psql: ${res.stderr}`);
  return JSON.parse(res.stdout.trim()).map((row) => columns.map((c) => String(row[c])));
}

test('storage: conversation_members as the contract describes it, kept in step with the API', {
  skip: srv.mode === 'cluster' ? false : 'the Postgres schema exists in cluster mode only',
}, async () => {
  const columns = await rows(`select column_name::text, data_type::text, is_nullable::text, coalesce(column_default, '') as dflt from information_schema.columns
    where table_name = 'conversation_members' order by column_name`, ['column_name', 'data_type', 'is_nullable', 'dflt']);
  assert.deepEqual(columns.map(([name, type, nullable, dflt]) => [name, type, nullable, dflt.replace(/::bigint$/, '')]).sort(), [
    ['conversation_id', 'bigint', 'NO', ''],
    ['delivered_at', 'timestamp with time zone', 'YES', ''],
    ['joined_at', 'timestamp with time zone', 'YES', ''],
    ['last_activity_at', 'timestamp with time zone', 'NO', ''],
    ['last_delivered_message_id', 'bigint', 'NO', '0'],
    ['last_message_id', 'bigint', 'NO', '0'],
    ['last_read_message_id', 'bigint', 'NO', '0'],
    ['read_at', 'timestamp with time zone', 'YES', ''],
    ['role', 'character varying', 'NO', "'member'::character varying"],
    ['unread_count', 'bigint', 'NO', '0'],
    ['user_id', 'bigint', 'NO', ''],
  ]);
  const constraints = (await rows(`select contype::text, pg_get_constraintdef(oid) as def from pg_constraint
    where conrelid = 'conversation_members'::regclass order by contype`, ['contype', 'def'])).map(([t, def]) => `${t} ${def}`);
  assert.ok(constraints.includes('p PRIMARY KEY (conversation_id, user_id)'), safeJson(constraints));
  assert.ok(constraints.some((c) => /^f FOREIGN KEY \(conversation_id\) REFERENCES conversations\(id\)/.test(c)), safeJson(constraints));
  // A user's rows by an index of columns a message never changes (migration 6), so the rows'
  // rewrites with every message are HOT updates, with room left on each page for them.
  const [[indexdef] = []] = await rows("select indexdef from pg_indexes where indexname = 'conversation_members_user'", ['indexdef']);
  assert.match(String(indexdef), /ON \S*conversation_members USING btree \(user_id, conversation_id\)$/);
  const indexes = (await rows("select indexname::text from pg_indexes where tablename = 'conversation_members' order by 1", ['indexname'])).map(([n]) => n);
  assert.deepEqual(indexes, ['conversation_members_pkey', 'conversation_members_user'], 'no index holds a column the messages rewrite');
  const [[options] = []] = await rows("select coalesce(array_to_string(reloptions, ','), '') as options from pg_class where relname = 'conversation_members'", ['options']);
  assert.equal(options, 'fillfactor=70');

  // The row of each member follows the messages and the receipts.
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sb, b, conv.id, 'one');
  const m2 = await srv.send(sb, b, conv.id, 'two');
  assert.deepEqual(await mark(sa, 'mark-read', conv.id, m1.id), ok(conv.id, m1.id));
  const stored = await rows(`select user_id, last_read_message_id, read_at is not null as read, last_delivered_message_id,
      delivered_at is not null as delivered, unread_count, last_message_id,
      extract(epoch from last_activity_at) * 1000 as activity_ms
    from conversation_members where conversation_id = ${conv.id} order by user_id`,
  ['user_id', 'last_read_message_id', 'read', 'last_delivered_message_id', 'delivered', 'unread_count', 'last_message_id', 'activity_ms']);
  // The activity is the newest message's time (stored finer than the API's milliseconds).
  for (const row of stored) {
    const activityMs = Number(row.pop());
    assert.ok(Math.abs(activityMs - Date.parse(m2.timestamp)) < 1, `last_activity_at ${activityMs} ms, message at ${m2.timestamp}`);
  }
  assert.deepEqual(stored, [
    [String(a), String(m1.id), 'true', String(m1.id), 'true', '1', String(m2.id)],
    [String(b), String(m2.id), 'true', String(m2.id), 'true', '0', String(m2.id)],
  ].sort((x, y) => Number(x[0]) - Number(y[0])));
});
