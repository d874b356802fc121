// Receipts (issue 16) when storage is unavailable (E2E_MODE=cluster only; run with
// run-faults.sh): Postgres unreachable for longer than the persister's --store-timeout. The
// contract: a mark the persister gave up on is refused with "Failed to update the receipt"
// (with the storage reason after a colon) in the ack and the `error` event, moves nothing and
// announces nothing; once the database is back the same mark succeeds.
// Its own cluster, because the store timeout is a start-up flag and the Postgres proxy an
// option of the whole file.

import assert from 'node:assert/strict';
import { test, useServer, recordEvents, safeJson } from '../harness.mjs';

const STORE_TIMEOUT_MS = 3000;
const OUTAGE_MS = 8000;
const srv = useServer({ only: 'cluster', pgProxy: true, flags: ['--store-timeout', `${STORE_TIMEOUT_MS / 1000}s`] });

const RECEIPT_FAILED = /^Failed to update the receipt(: .+)?$/;

const receipts = (rec) => rec.events
  .filter((e) => e.name === 'message-read' || e.name === 'message-delivered')
  .map((e) => [e.name, e.payload?.userId, e.payload?.messageId]);

test(`Postgres unreachable for ${OUTAGE_MS / 1000} s (> --store-timeout ${STORE_TIMEOUT_MS / 1000}s): mark-read is refused with "Failed to update the receipt…", moves and announces nothing, and succeeds once the database is back`, async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();
  const m1 = await srv.send(sb, b, conv.id, 'before the outage');
  const m2 = await srv.send(sb, b, conv.id, 'also before');
  // A first mark while all is well: the conversation and membership are known on the way. Its
  // announcement reaches both sockets (through their two gateways, apart) before recording.
  const first = Promise.all([srv.once(sb, 'message-read', 5000), srv.once(sa, 'message-read', 5000)]);
  assert.deepEqual(await sa.timeout(5000).emitWithAck('mark-read', { conversationId: conv.id, messageId: m1.id }),
    { success: true, conversationId: conv.id, messageId: m1.id });
  await first;
  const recA = recordEvents(sa);
  const recB = recordEvents(sb);

  const outage = srv.pgOutage(OUTAGE_MS);
  await new Promise((r) => setTimeout(r, 200)); // the proxy has cut the connections
  const started = Date.now();
  const [ack, error] = await Promise.all([
    sa.timeout(OUTAGE_MS).emitWithAck('mark-read', { conversationId: conv.id, messageId: m2.id }),
    srv.once(sa, 'error', OUTAGE_MS),
  ]);
  const tookMs = Date.now() - started;
  assert.equal(ack.success, false, `ack during the outage: ${safeJson(ack)}`);
  assert.deepEqual({ ...ack, error: undefined }, { success: false, conversationId: conv.id, messageId: m2.id, error: undefined });
  assert.match(ack.error, RECEIPT_FAILED);
  assert.deepEqual(error, { message: ack.error }, 'the error event says the same');
  assert.ok(tookMs < OUTAGE_MS - 500, `answered within the outage (${tookMs} ms), not after it`);
  await outage;

  // Nothing moved: the list still has the position before the outage.
  const list = await srv.api('GET', `/api/chats/users/${a}/conversations`);
  assert.equal(list.status, 200, list.text);
  const entry = list.body.data.find((c) => c.id === conv.id);
  assert.equal(entry?.members.find((m) => m.user_id === a)?.last_read_message_id, m1.id, safeJson(entry));
  assert.equal(entry.unread_count, 1);

  // The database is back: the same mark succeeds, and is announced once.
  const read = srv.once(sb, 'message-read', 10_000);
  assert.deepEqual(await sa.timeout(10_000).emitWithAck('mark-read', { conversationId: conv.id, messageId: m2.id }),
    { success: true, conversationId: conv.id, messageId: m2.id });
  assert.equal((await read).messageId, m2.id);
  await srv.expectNone(sb, 'message-read', 800);
  assert.deepEqual(receipts(recB), [['message-read', a, m2.id]], 'the room heard only the mark that was stored');
  assert.deepEqual(receipts(recA), [['message-read', a, m2.id]], 'so did the marking socket');
});
