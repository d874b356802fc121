// Readiness means something (cluster only): the persister is not ready while its database is
// unreachable, and is again once it answers; its liveness is unaffected.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer } from './harness.mjs';

const srv = useServer({ only: 'cluster', pgProxy: true });

async function readyz(url) {
  const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(5000) });
  return { status: res.status, body: await res.json() };
}

test('persister /readyz: 503 naming the database while Postgres is unreachable, 200 again after', async () => {
  const url = srv.procs.persister.baseUrl;
  assert.equal((await readyz(url)).status, 200);
  const outage = srv.pgOutage(4000);
  try {
    await sleep(300);
    const during = await readyz(url);
    assert.equal(during.status, 503, JSON.stringify(during.body));
    assert.equal(during.body.status, 'not ready');
    assert.deepEqual(during.body.missing, ['database']);
    assert.equal(during.body.checks.nats, 'ok');
    assert.notEqual(during.body.checks.database, 'ok');
    const live = await fetch(`${url}/healthz`);
    assert.equal(live.status, 200, 'still alive: only not ready');
    // Gateways do not depend on the database: they stay ready.
    assert.equal((await readyz(srv.gateways[0])).status, 200);
  } finally {
    await outage;
  }
  const deadline = Date.now() + 15_000;
  let last;
  while (Date.now() < deadline) {
    last = await readyz(url);
    if (last.status === 200) return;
    await sleep(200);
  }
  assert.fail(`persister not ready again 15 s after the outage: ${JSON.stringify(last?.body)}`);
});
