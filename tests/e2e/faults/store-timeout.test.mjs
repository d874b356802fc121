// Fault injection under load, continued (E2E_MODE=cluster only; run with run-faults.sh):
// Postgres unreachable for longer than the persister's --store-timeout. README: "While the
// database is unavailable it retries the batch for --store-timeout, then answers
// message-error." So sends get a clear `message-error` after the timeout, the client retries
// them with the same client_msg_id, and once the database is back every one is stored once
// and acknowledged; none may be lost, stored twice, or missing from a client's view.
// Its own cluster, because the store timeout is a start-up flag of the persister. The frame
// (load, verification, summary row) is runner.mjs.

import assert from 'node:assert/strict';
import { after } from 'node:test';
import { test, useServer, safeJson } from '../harness.mjs';
import { faultRunner, liftSendLimits } from './runner.mjs';

liftSendLimits();
const STORE_TIMEOUT_MS = 4000;
const OUTAGE_MS = 10_000;
const srv = useServer({ only: 'cluster', pgProxy: true, flags: ['--store-timeout', `${STORE_TIMEOUT_MS / 1000}s`] });
const { runFault, printSummary } = faultRunner(srv);
after(printSummary);

test(`fault 4b: Postgres unreachable for ${OUTAGE_MS / 1000} s, longer than --store-timeout ${STORE_TIMEOUT_MS / 1000}s: clear message-errors after the timeout, retries stored once, nothing lost or missing`, async () => {
  // The outage begins at the worst moment: a COMMIT has reached Postgres, its answer is lost,
  // so the persister cannot know that batch was stored.
  const { load, window, result, info } = await runFault(`Postgres outage ${OUTAGE_MS / 1000} s > store timeout`, () => srv.pgOutage(OUTAGE_MS, { atCommit: true }));
  assert.equal(info.atCommit, true, 'the outage began just after a COMMIT');
  // The give-up path ran: senders were told, in the documented words.
  const expected = `Failed to send message: storage unavailable for ${STORE_TIMEOUT_MS / 1000}s`;
  const storageErrors = load.clients.flatMap((c) => c.errorLog.filter((e) => e.text === expected));
  assert.ok(storageErrors.length > 0, `no "${expected}" although the outage outlasted the store timeout: ${safeJson(Object.fromEntries(result.errorTexts))}`);
  // …after the store timeout (the persister stops retrying when its next back-off, at most 2 s,
  // would pass the deadline, so the first answer may come up to 2 s early).
  const first = Math.min(...storageErrors.map((e) => e.at)) - window.from;
  console.log(`fault 4b: first storage error ${first} ms after the outage began (store timeout ${STORE_TIMEOUT_MS} ms); ${storageErrors.length} storage errors`);
  assert.ok(first >= STORE_TIMEOUT_MS - 2000 - 250 && first <= STORE_TIMEOUT_MS + 3000, `first storage error ${first} ms after the outage began`);
  assert.ok(srv.isAlive(), 'every role survived the outage');
});
