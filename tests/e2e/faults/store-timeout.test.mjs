// Fault injection under load, continued (E2E_MODE=cluster only; run with run-faults.sh):
// Postgres unreachable for longer than the persister's --store-timeout. ARCHITECTURE.md: while
// the database is unavailable the persister retries a batch for --store-timeout, then answers
// message-error; but a batch whose insert went out and got no answer may be stored already, so
// it is retried until the database answers, and its partition waits behind it. Either way the
// client retries unconfirmed sends with the same client_msg_id, and once the database is back
// every one is stored once and acknowledged; none may be lost, stored twice, out of order, or
// missing from a client's view.
// Its own cluster, because the store timeout is a start-up flag of the persister. The frame
// (load, verification, summary row) is runner.mjs.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { after } from 'node:test';
import { test, useServer, safeJson } from '../harness.mjs';
import { faultRunner, liftSendLimits } from './runner.mjs';
import { parseContent } from './load.mjs';

liftSendLimits();
const STORE_TIMEOUT_MS = 4000;
const OUTAGE_MS = 10_000;
const srv = useServer({ only: 'cluster', pgProxy: true, flags: ['--store-timeout', `${STORE_TIMEOUT_MS / 1000}s`] });
const { runFault, printSummary } = faultRunner(srv);
after(printSummary);

test(`fault 4b: Postgres unreachable for ${OUTAGE_MS / 1000} s from just after a commit, longer than --store-timeout ${STORE_TIMEOUT_MS / 1000}s: the batch of unknown outcome waits for the database; nothing lost, duplicated, out of order or missing`, async () => {
  // The outage begins at the worst moment: a batch has committed in Postgres, its answer is lost.
  // so the persister cannot know that batch was stored. It must not tell its senders "failed".
  // Batches of other conversations that fail before their commit were not stored: after the
  // store timeout their senders are told "failed", truly, and their retries store them once
  // the database is back. So a "failed" may only name a message stored after the outage.
  const { load, info } = await runFault(`Postgres outage ${OUTAGE_MS / 1000} s > store timeout`, async () => {
    const outage = await srv.pgOutage(OUTAGE_MS, { atCommit: true });
    return { ...outage, endedAt: Date.now() };
  });
  assert.equal(info.atCommit, true, 'the outage began just after a commit');
  const expected = `Failed to send message: storage unavailable for ${STORE_TIMEOUT_MS / 1000}s`;
  const storedAt = new Map();
  for (const row of await load.rows()) {
    const sent = parseContent(row.content);
    if (sent) storedAt.set(`${sent.sender}:${sent.seq}`, row.createdAt);
  }
  // message-error names no message: each is charged to the sender's oldest send in flight, and
  // a conversation's later sends wait behind a batch of unknown outcome, so that is the one.
  const toldFailedThoughStored = load.clients.flatMap((c) => c.errorLog
    .filter((e) => e.text === expected && e.charged !== null)
    .map((e) => ({ sender: c.userId, seq: e.charged, toldAt: e.at, storedAt: storedAt.get(`${c.userId}:${e.charged}`) }))
    .filter((e) => e.storedAt !== undefined && e.storedAt < info.endedAt));
  assert.deepEqual(toldFailedThoughStored, [], 'no sender was told "failed" about a message stored before the database came back');
  assert.ok(srv.isAlive(), 'every role survived the outage');
});

test(`fault 4c: Postgres unreachable for ${OUTAGE_MS / 1000} s while idle: sends get "${'Failed to send message: storage unavailable for 4s'}" after --store-timeout, and are stored once when retried`, async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const s = await srv.connect(a);
  const outage = srv.pgOutage(OUTAGE_MS);
  await new Promise((r) => setTimeout(r, 200));
  const ids = [crypto.randomUUID(), crypto.randomUUID(), crypto.randomUUID()];
  const started = Date.now();
  const answers = [];
  const done = new Promise((resolve) => {
    s.on('message-error', (e) => { answers.push({ error: e.error, at: Date.now() - started }); if (answers.length === ids.length) resolve(); });
    s.on('message-sent', (m) => { answers.push({ sent: m.id }); if (answers.length === ids.length) resolve(); });
  });
  for (const id of ids) s.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `during ${id}`, client_msg_id: id });
  await Promise.race([done, new Promise((r) => setTimeout(r, OUTAGE_MS))]);
  const expected = `Failed to send message: storage unavailable for ${STORE_TIMEOUT_MS / 1000}s`;
  assert.equal(answers.length, ids.length, `every send answered during the outage: ${safeJson(answers)}`);
  for (const answer of answers) {
    assert.equal(answer.error, expected, safeJson(answer));
    assert.ok(answer.at >= STORE_TIMEOUT_MS - 2000 - 250 && answer.at <= STORE_TIMEOUT_MS + 3000, `answered ${answer.at} ms after sending`);
  }
  await outage;
  // Retried with the same ids once the database is back: stored, once each.
  const stored = [];
  for (const id of ids) {
    const sent = srv.once(s, 'message-sent', 20_000);
    s.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `during ${id}`, client_msg_id: id });
    stored.push((await sent).id);
  }
  assert.equal(new Set(stored).size, ids.length);
  assert.equal((await srv.history(conv.id)).total, ids.length, 'each stored once');
});
