// The frame of every fault test: run the load (load.mjs), inject a fault, let the load run
// through it and after it, stop, wait for the acknowledgements and deliveries, verify against
// the database, print the summary row, and assert the message criteria. Shared by the files
// of this directory; run-faults.sh prints the rows of all of them as one table at the end.

import assert from 'node:assert/strict';
import { appendFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { safeJson, NATS_SERVERS, STREAM_REPLICAS } from '../harness.mjs';
import { Load } from './load.mjs';
import { formatTable, LEGEND } from './table.mjs';

export { formatTable };

export const GW_A = 0;
export const GW_B = 1;
/** Load before the fault, and after it is over. */
export const HEALTHY_MS = 4500;
export const AFTER_MS = 5000;
/** Bounds on the wait for the last acknowledgements, and for the last deliveries. */
export const ACK_TIMEOUT_MS = 60_000;
export const DELIVERY_TIMEOUT_MS = 15_000;
/** The texts a client may get as message-error while a fault lasts. */
export const CLEAR_ERRORS = /^(Failed to send message(: storage unavailable for .+)?|Too many messages waiting to be sent; slow down)$/;

export async function waitUntil(cond, timeoutMs, stepMs = 50) {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) return false;
    await sleep(stepMs);
  }
  return true;
}

/** How long "nothing contradictory arrives" is watched for in the presence drills. */
export const QUIET_MS = 1500;

/**
 * The presence drill's second half: gateway A is killed while its clients stay away; once
 * their contacts (on gateway B) saw them offline (or `offlineWithinMs` passed), they are let
 * back, and reconnect to B; it waits until the contacts saw them online. The times at which
 * each contact heard, from the kill and from the release.
 */
export async function gatewayAwayAndBack(srv, load, offlineWithinMs) {
  const victims = load.clients.filter((c) => c.gateway === GW_A);
  const watchers = victims.map((v) => load.clients.find((c) => c.userId === v.peerId));
  for (const v of victims) v.holdReconnect = true; // they stay away until released
  const tKill = Date.now();
  srv.note('killing gateway A; its clients stay away');
  await srv.killGateway(GW_A);
  const offline = (w) => w.presence.find((e) => e.name === 'user:offline' && e.userId === w.peerId && e.at >= tKill);
  await waitUntil(() => watchers.every(offline), offlineWithinMs);
  const offlineAfter = watchers.map((w) => (offline(w) ? offline(w).at - tKill : null));
  await sleep(QUIET_MS);
  const tRelease = Date.now();
  for (const v of victims) v.holdReconnect = false;
  const online = (w) => w.presence.find((e) => e.name === 'user:online' && e.userId === w.peerId && e.at >= tRelease);
  await waitUntil(() => victims.every((v) => v.connected) && watchers.every(online), 15_000);
  const onlineAfter = watchers.map((w) => (online(w) ? online(w).at - tRelease : null));
  return { tKill, tRelease, victims, watchers, offlineAfter, onlineAfter };
}

/**
 * What the contacts must have seen since `t0` (before the presence fault): about each user of
 * the killed gateway, exactly offline (within `offlineWithinMs` of the kill), then online
 * (after the release), each once; about anyone else, nothing.
 */
export function assertPresenceTruth(load, { t0, tKill, tRelease, victims, watchers, offlineAfter, onlineAfter }, offlineWithinMs) {
  assert.equal(victims.length, 4);
  watchers.forEach((w, i) => {
    const v = victims[i];
    assert.equal(w.gateway, GW_B, `${w.label} stayed on gateway B`);
    assert.equal(w.disconnects.length, 0, `${w.label} stayed connected`);
    assert.ok(offlineAfter[i] !== null && offlineAfter[i] <= offlineWithinMs,
      `${w.label}: user:offline about ${v.userId} ${offlineAfter[i]} ms after the kill (limit ${offlineWithinMs}); events ${safeJson(w.presence.filter((e) => e.at >= t0))}`);
    const events = w.presence.filter((e) => e.userId === v.userId && e.at >= t0);
    assert.deepEqual(events.map((e) => e.name), ['user:offline', 'user:online'],
      `${w.label}: presence events about ${v.userId} since the fault began: ${safeJson(events.map((e) => ({ ...e, at: e.at - tKill })))}`);
    assert.ok(events[0].at >= tKill && events[0].at < tRelease, 'offline while the user was away');
    assert.ok(events[1].at >= tRelease, 'online only once the user came back');
    assert.ok(onlineAfter[i] !== null, `${w.label}: user:online about ${v.userId} after the reconnect`);
  });
  for (const v of victims) {
    assert.equal(v.gateway, GW_B, `${v.label} reconnected to gateway B`);
    assert.deepEqual(v.presence.filter((e) => e.at >= t0).map((e) => [e.name, e.userId]), [],
      `${v.label}: its contact never left, so no presence event about it`);
  }
  for (const c of load.clients) {
    const others = c.presence.filter((e) => e.at >= t0 && e.userId !== c.peerId);
    assert.deepEqual(others, [], `${c.label}: presence events about strangers`);
  }
}

/**
 * The load is a well-behaved client sending about 20 messages a second per user: a per-user
 * send limit of the server (if it has one) is lifted for the fault tests, which are about
 * faults, not limits. Call before useServer() starts the cluster (the roles inherit the
 * environment); settings the binary does not know are ignored.
 */
export function liftSendLimits() {
  process.env.CHAT_SEND_RATE = '100000';
  process.env.CHAT_SEND_BURST = '100000';
}

/** The fault runner of one test file's cluster. */
export function faultRunner(srv) {
  const table = [];
  let faultNo = 0;

  function record(row) {
    table.push(row);
    console.log(`\n${formatTable([row])}`);
    if (process.env.FAULTS_REPORT) appendFileSync(process.env.FAULTS_REPORT, `${JSON.stringify(row)}\n`);
  }

  /** Brings back whatever a previous test left dead (a failed test may stop half-way). */
  async function ensureCluster() {
    if (srv.natsNodes.some((n) => !n.alive)) await srv.startNats();
    for (const [role, p] of Object.entries(srv.procs)) {
      if (!p.alive) await srv.restartRole(role);
    }
  }

  /**
   * Runs the load, injects the fault with `inject(load)` (which resolves once the fault is
   * over, with anything the test wants back), lets the load run AFTER_MS more, stops it,
   * waits for the acknowledgements and deliveries, verifies, prints the table row, and
   * asserts the message criteria. Returns { load, info, result, window } for the test's own
   * checks (window: { from, to, pendingAtFault }).
   */
  async function runFault(name, inject, { pairs = 4 } = {}) {
    await ensureCluster();
    const tag = `f${++faultNo}`;
    const load = await Load.create(srv, { pairs, tag });
    let info;
    let result;
    let window;
    try {
      await sleep(1000); // the presence announcements of the connections settle
      srv.note(`${name}: load starts`);
      load.start();
      await sleep(HEALTHY_MS);
      const pendingAtFault = load.pendingCount;
      srv.note(`${name}: fault begins (${pendingAtFault} sends unconfirmed)`);
      const from = Date.now();
      info = await inject(load);
      const to = Date.now();
      window = { from, to, pendingAtFault };
      srv.note(`${name}: fault over after ${to - from} ms`);
      await sleep(AFTER_MS);
      await load.stop();
      srv.note(`${name}: load stopped; ${load.pendingCount} sends unconfirmed`);
      await load.waitAcked(ACK_TIMEOUT_MS);
      await load.waitDelivered(await load.rows(), DELIVERY_TIMEOUT_MS);
      result = await load.verify();
      srv.note(`${name}: verified: ${safeJson(result.row)}`);
    } finally {
      load.close();
    }
    // What a client saw: the longest a send waited for its message-sent (retries included).
    const slowestAck = Math.max(0, ...load.clients.flatMap((c) => [...c.items.values()]
      .filter((i) => i.ackedAt > 0).map((i) => i.ackedAt - i.createdAt)));
    const nats = NATS_SERVERS === 1 ? '1' : `${NATS_SERVERS}, R${STREAM_REPLICAS}`;
    record({ fault: name, nats, ...result.row, 'slowest ack ms': slowestAck });
    if (result.errorTexts.size > 0) console.log(`message-error texts during "${name}": ${safeJson(Object.fromEntries(result.errorTexts))}`);
    const { errorEvents, joinFailures, pagedIn } = result.notes;
    if (errorEvents.length + joinFailures.length + pagedIn > 0) {
      console.log(`during "${name}": error events ${safeJson(errorEvents)}; failed joins ${safeJson(joinFailures)}; messages read from history on request: ${pagedIn}`);
    }

    // The pass criterion first, then everything else the clients and the database must agree on.
    assert.equal(result.row.lost, 0, `${name}: acknowledged messages lost:\n${result.problems.join('\n')}`);
    assert.equal(result.row.duplicated, 0, `${name}: messages stored twice:\n${result.problems.join('\n')}`);
    assert.deepEqual(result.problems, [], `${name}: ${result.problems.length} problems`);
    // The fault happened under load: sends were made while it lasted.
    const duringFault = load.clients.reduce(
      (n, c) => n + [...c.items.values()].filter((i) => i.createdAt >= window.from && i.createdAt <= window.to).length, 0,
    );
    assert.ok(duringFault > 0 || window.to - window.from < 50, `${name}: no send was made while the fault lasted`);
    for (const [text] of result.errorTexts) {
      assert.match(text, CLEAR_ERRORS, `${name}: unexpected message-error text`);
    }
    return { load, info, result, window };
  }

  /** Prints every row of this file as one table (from an after hook). */
  function printSummary() {
    if (table.length > 0) console.log(`\nfault summary of this file\n${formatTable(table)}\n${LEGEND}`);
  }

  return { runFault, ensureCluster, printSummary, table };
}
