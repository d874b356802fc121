// `--retention` (issue 18): with CHAT_RETENTION=3s the server deletes, in the background,
// messages older than 3 s, with their edits and reactions; the history and a replay then start
// at the oldest kept message, while sends go on being stored and delivered. A file of its own
// because the setting applies to the whole server (every role reads it from the environment,
// which the harness passes on). Runs all-in-one and as a cluster (where the persister deletes).
// The rest of a message's life (edits, deletes, reactions) is in lifecycle.test.mjs.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer, label, safeJson } from './harness.mjs';

process.env.CHAT_RETENTION = '3s';

const srv = useServer();

const RETENTION_MS = 3000;
/** How long an expired message may take to leave the history (deletions run a few seconds apart). */
const WAIT_MS = 15_000;
/** A message this much younger than the retention must still be there. */
const MARGIN_MS = 1000;
const NOT_FOUND = 'Message not found in this conversation';

/** GET a conversation's history (up to 100 messages); asserts 200. */
const page = (conversationId) => srv.history(conversationId, '?limit=100');

/**
 * Polls the history every `everyMs` until message `id` is no longer in it; calls `beforeEach()`
 * (if given) before each look. Resolves with `{ page, askedAt }` of the first history without it;
 * fails after WAIT_MS.
 */
async function untilGone(conversationId, id, { everyMs = 500, beforeEach } = {}) {
  const deadline = Date.now() + WAIT_MS;
  let last = null;
  while (Date.now() < deadline) {
    if (beforeEach) await beforeEach();
    const askedAt = Date.now();
    last = await page(conversationId);
    if (!last.data.some((m) => m.id === id)) return { page: last, askedAt };
    await sleep(everyMs);
  }
  throw new assert.AssertionError({
    message: `message ${id} still in the history of ${conversationId} after ${WAIT_MS} ms (retention ${RETENTION_MS} ms): ${safeJson(last?.data.map((m) => m.id))}`,
  });
}

/**
 * A change of a message that is not there any more: the ack {success: false, conversationId,
 * messageId, error} and the `error` event, both `Message not found in this conversation`.
 */
async function assertNotFound(s, event, payload) {
  const [ack, errorEvent] = await Promise.all([s.timeout(5000).emitWithAck(event, payload), srv.once(s, 'error', 5000)]);
  const what = `${event} ${safeJson(payload)} on ${label(s)}`;
  assert.deepEqual(ack, { success: false, conversationId: payload.conversationId, messageId: payload.messageId, error: NOT_FOUND }, `${what}: ack`);
  assert.deepEqual(errorEvent, { message: NOT_FOUND }, `${what}: error event`);
}

/** Joins with lastMessageId on `s`; resolves with the events it got up to the ack, as {name, payload}. */
async function replay(s, conversationId, lastMessageId) {
  const events = [];
  const listener = (name, payload) => events.push({ name, payload });
  s.onAny(listener);
  try {
    const ack = await s.timeout(5000).emitWithAck('join-conversation', { conversationId, lastMessageId });
    assert.deepEqual(ack, { success: true, conversationId }, `join from ${lastMessageId} on ${label(s)}`);
    // What follows the replay in the same burst (positions) comes right after; wait briefly.
    await sleep(srv.mode === 'cluster' ? 800 : 300);
  } finally {
    s.offAny(listener);
  }
  return events;
}

test('messages older than --retention leave the history with their edits and reactions, younger ones stay, and sends go on being stored and delivered', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const sentAt = Date.now();
  const old = await srv.send(sa, a, conv.id, 'old news');
  const edited = await sa.timeout(5000).emitWithAck('edit-message', { conversationId: conv.id, messageId: old.id, content: 'old news, edited' });
  assert.equal(edited?.success, true, `edit: ${safeJson(edited)}`);
  const reacted = await sb.timeout(5000).emitWithAck('react', { conversationId: conv.id, messageId: old.id, emoji: '👍', on: true });
  assert.equal(reacted?.success, true, `react: ${safeJson(reacted)}`);
  const first = await page(conv.id);
  if (Date.now() - sentAt < RETENTION_MS - MARGIN_MS) {
    assert.ok(first.data.some((m) => m.id === old.id), `a message younger than the retention is kept: ${safeJson(first.data)}`);
  }

  // Messages keep coming while the old one ages: a send before each look at the history.
  const ticks = [];
  const gone = await untilGone(conv.id, old.id, {
    everyMs: 600,
    beforeEach: async () => {
      const m = await srv.send(sa, a, conv.id, `tick ${ticks.length}`);
      ticks.push({ m, at: Date.now() });
    },
  });
  const waited = gone.askedAt - sentAt;
  assert.ok(waited >= RETENTION_MS - 500, `deleted after ${waited} ms, before it was ${RETENTION_MS} ms old`);
  const kept = new Set(gone.page.data.map((m) => m.id));
  const young = ticks.filter(({ at }) => gone.askedAt - at < RETENTION_MS - MARGIN_MS);
  assert.ok(young.length > 0, 'a message was sent just before the check');
  for (const { m, at } of young) {
    assert.ok(kept.has(m.id), `message ${m.id}, sent ${gone.askedAt - at} ms before the check, left with the old one: ${safeJson([...kept])}`);
  }
  assert.ok(kept.has(ticks.at(-1).m.id), 'the message sent just before the check is there');
  assert.equal(gone.page.total, gone.page.data.length, `total counts the kept messages: ${safeJson({ total: gone.page.total, ids: [...kept] })}`);
  for (const m of gone.page.data) assert.ok(m.id > old.id, `the history starts after the expired message: ${m.id}`);

  // Gone with its edits and reactions: nothing of it can be changed.
  await assertNotFound(sb, 'react', { conversationId: conv.id, messageId: old.id, emoji: '👍', on: false });
  await assertNotFound(sa, 'edit-message', { conversationId: conv.id, messageId: old.id, content: 'revived?' });
  await assertNotFound(sa, 'delete-message', { conversationId: conv.id, messageId: old.id });

  // A fresh send is stored and delivered.
  const delivered = srv.once(sb, 'receive-message', 5000, (m) => m?.content === 'fresh');
  const fresh = await srv.send(sa, a, conv.id, 'fresh');
  assert.deepEqual(await delivered, fresh, 'the fresh message reaches the other side');
  assert.ok((await page(conv.id)).data.some((m) => m.id === fresh.id), 'the fresh message is stored');

  // A replay from the start begins at the oldest kept message, without the expired one's changes.
  const late = await srv.connect(b, { gateway: 0 });
  const events = await replay(late, conv.id, 0);
  const replayed = events.filter((e) => e.name === 'receive-message').map((e) => e.payload.id);
  assert.ok(replayed.length > 0 && replayed.at(-1) === fresh.id, `the replay ends with the fresh message: ${safeJson(replayed)}`);
  assert.ok(replayed.every((id) => id > old.id), `nothing expired replayed: ${safeJson(replayed)}`);
  for (let i = 1; i < replayed.length; i++) assert.ok(replayed[i - 1] < replayed[i], `in order: ${safeJson(replayed)}`);
  const aboutOld = events.filter((e) => ['message-updated', 'reaction-updated', 'message-deleted'].includes(e.name)
    && (e.payload?.id === old.id || e.payload?.messageId === old.id));
  assert.deepEqual(aboutOld, [], 'no change of the expired message replayed');
});

test('a conversation whose messages all expired: an empty history; a rejoin from an expired lastMessageId gets what came after; sends go on', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const only = await srv.send(sb, b, conv.id, 'soon gone');
  const gone = await untilGone(conv.id, only.id);
  assert.deepEqual([gone.page.data, gone.page.total], [[], 0], 'nothing left');

  const delivered = srv.once(sb, 'receive-message', 5000, (m) => m?.content === 'after the expiry');
  const next = await srv.send(sa, a, conv.id, 'after the expiry');
  assert.deepEqual(await delivered, next, 'delivered live');
  const now = await page(conv.id);
  assert.deepEqual(now.data.map((m) => m.id), [next.id]);

  const back = await srv.connect(b, { gateway: 0 });
  const events = await replay(back, conv.id, only.id);
  const replayed = events.filter((e) => e.name === 'receive-message').map((e) => e.payload);
  assert.deepEqual(replayed.map((m) => [m.id, m.content]), [[next.id, next.content]], 'the replay after the expired message');
});
