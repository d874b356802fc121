// Faults of a cluster with two presence replicas (E2E_MODE=cluster only; run with
// tests/e2e/run-faults.sh), under the same load and checks as faults.test.mjs (runner.mjs):
//   - fault 6: the presence replica that announces (the lease holder) is killed (SIGKILL),
//     then a gateway: the other replica takes the lease over, and the contacts of the
//     gateway's users see them go offline, then online when they reconnect, each exactly
//     once;
//   - fault 7: a rolling restart of every role, one process at a time (SIGTERM, start again,
//     wait until healthy): nothing acknowledged is lost, stored twice, missed or reordered.

import assert from 'node:assert/strict';
import { after } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer, safeJson } from '../harness.mjs';
import { scrape, value } from '../metrics.mjs';
import { faultRunner, liftSendLimits, gatewayAwayAndBack, assertPresenceTruth, QUIET_MS } from './runner.mjs';

liftSendLimits();
/** Short, so that the drill is quick; the default is 5 s. */
const LEASE_MS = 2000;
const srv = useServer({
  only: 'cluster', ownNats: true, presenceReplicas: 2, flags: ['--presence-lease', `${LEASE_MS / 1000}s`],
});
const { runFault, ensureCluster, printSummary } = faultRunner(srv);
after(printSummary);

const PRESENCE_ROLES = ['presence', 'presence2'];
/** The harness runs every role with --gateway-timeout 3s. */
const GATEWAY_TIMEOUT_MS = 3000;

/** The presence roles that say they hold the lease (chat_presence_leader 1). */
async function leaders() {
  const held = [];
  for (const role of PRESENCE_ROLES) {
    if (!srv.procs[role].alive) continue;
    const { series } = await scrape(srv.roleUrl(role));
    if (value(series, 'chat_presence_leader') === 1) held.push(role);
  }
  return held;
}

/** Polls until exactly one replica holds the lease; its role. */
async function theLeader(timeoutMs = 3 * LEASE_MS) {
  let held = [];
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    held = await leaders();
    if (held.length === 1) return held[0];
    await sleep(100);
  }
  assert.fail(`expected one presence replica to hold the lease, found ${safeJson(held)}`);
}

test('fault 6: the presence replica that announces is killed (SIGKILL), then a gateway: the other replica takes over, and the contacts of its users see them offline, then online again, each exactly once', async () => {
  // The survivor takes the lease within one term of the last renewal, and finds the gateway
  // silent after the gateway timeout: whichever comes last, plus the lookups.
  const offlineWithinMs = Math.max(LEASE_MS, GATEWAY_TIMEOUT_MS) + 5000;
  try {
    const { load, info } = await runFault('presence leader SIGKILL + gateway SIGKILL', async (l) => {
      const t0 = Date.now();
      const leader = await theLeader();
      srv.note(`fault 6: killing ${leader}, the presence replica holding the lease`);
      await srv.killRole(leader, 'SIGKILL');
      const seen = await gatewayAwayAndBack(srv, l, offlineWithinMs);
      const newLeader = await theLeader();
      await sleep(QUIET_MS); // a doubled announcement would arrive meanwhile
      await srv.restartRole(leader); // back as a replica that does not announce
      return { t0, leader, newLeader, ...seen };
    });
    console.log(`fault 6: ${info.leader} held the lease, ${info.newLeader} took it over; user:offline reached the contacts ${safeJson(info.offlineAfter)} ms after the gateway was killed; user:online ${safeJson(info.onlineAfter)} ms after the reconnects began`);
    assert.notEqual(info.newLeader, info.leader, 'the surviving replica holds the lease');
    // Exactly the truth since the announcing replica died: offline, then online; none doubled.
    assertPresenceTruth(load, info, offlineWithinMs);
    assert.deepEqual(await leaders(), [info.newLeader], 'the restarted replica does not announce: one holder');
  } finally {
    await ensureCluster();
  }
});

test('fault 7: a rolling restart of every role, one process at a time (SIGTERM, start, healthy), under load: nothing acknowledged is lost, stored twice, missed or reordered', async () => {
  try {
    const order = ['persister', ...PRESENCE_ROLES, 'gwa', 'gwb'];
    const { load, info } = await runFault('rolling restart of every role', async () => {
      const exits = {};
      for (const role of order) {
        srv.note(`fault 7: restarting ${role}`);
        exits[role] = await srv.killRole(role, 'SIGTERM');
        await srv.restartRole(role);
        await sleep(1000); // the restarted role settles; its gateway's clients come back
      }
      return { exits };
    });
    for (const role of order) assert.deepEqual(info.exits[role], { code: 0, signal: null }, `${role} stopped cleanly`);
    const moved = load.clients.filter((c) => c.disconnects.length > 0);
    assert.ok(moved.length > 0, 'the restarted gateways moved their clients');
    for (const c of load.clients) {
      assert.equal(c.connects.length, c.disconnects.length + 1, `${c.label}: back after every disconnect (${safeJson(c.disconnects)})`);
    }
    await theLeader(); // and after it all, exactly one presence replica announces
  } finally {
    await ensureCluster();
  }
});
