// Cluster specifics (E2E_MODE=cluster; skipped in single mode): presence across gateways,
// a gateway that dies, a presence restart, message order across gateways.
// The gateway is forced with `{ gateway: 0 | 1 }` (0 = gwa, 1 = gwb) wherever it matters.

import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer, recordEvents, safeJson } from './harness.mjs';

const srv = useServer({ only: 'cluster' });

const GW_A = 0;
const GW_B = 1;
/** How long "nothing more arrives" is watched for: well above a cross-node round trip. */
const QUIET_MS = 1500;
/** A dead gateway's users go offline within --gateway-timeout (3 s) + slack. */
const DEAD_GATEWAY_MS = 8000;

const about = (id) => (p) => p && p.userId === id;

/** The presence events about `userId` recorded on a socket, as [name, …]. */
const presenceAbout = (rec, userId) => rec.events
  .filter((e) => (e.name === 'user:online' || e.name === 'user:offline') && e.payload?.userId === userId)
  .map((e) => e.name);

test('cluster: a user with tabs on both gateways: each contact gets one user:online, and user:offline only when the last tab closes', async () => {
  const [a, b, c] = srv.users(3);
  await srv.openConversation(a, b);
  await srv.openConversation(c, a);
  const sb = await srv.connect(b, { gateway: GW_A }); // a contact on each gateway
  const sc = await srv.connect(c, { gateway: GW_B });
  const recB = recordEvents(sb);
  const recC = recordEvents(sc);

  // First tab, on gateway A.
  const onB = srv.once(sb, 'user:online', 5000, about(a));
  const onC = srv.once(sc, 'user:online', 5000, about(a));
  const sa1 = await srv.connect(a, { gateway: GW_A });
  assert.deepEqual(await onB, { userId: a });
  assert.deepEqual(await onC, { userId: a });

  // Second tab, on gateway B: no second user:online anywhere.
  const sa2 = await srv.connect(a, { gateway: GW_B });
  await sleep(QUIET_MS);
  assert.deepEqual(presenceAbout(recB, a), ['user:online'], `events on b (gw A): ${safeJson(recB.events)}`);
  assert.deepEqual(presenceAbout(recC, a), ['user:online'], `events on c (gw B): ${safeJson(recC.events)}`);

  // Closing the gateway-A tab: still online through gateway B.
  sa1.disconnect();
  await sleep(QUIET_MS);
  assert.equal(sa2.connected, true);
  assert.deepEqual(presenceAbout(recB, a), ['user:online'], `events on b after closing one tab: ${safeJson(recB.events)}`);
  assert.deepEqual(presenceAbout(recC, a), ['user:online'], `events on c after closing one tab: ${safeJson(recC.events)}`);

  // Closing the last tab (gateway B): user:offline to both contacts, once.
  const offB = srv.once(sb, 'user:offline', 5000, about(a));
  const offC = srv.once(sc, 'user:offline', 5000, about(a));
  sa2.disconnect();
  assert.deepEqual(await offB, { userId: a });
  assert.deepEqual(await offC, { userId: a });
  await sleep(QUIET_MS);
  assert.deepEqual(presenceAbout(recB, a), ['user:online', 'user:offline'], `events on b: ${safeJson(recB.events)}`);
  assert.deepEqual(presenceAbout(recC, a), ['user:online', 'user:offline'], `events on c: ${safeJson(recC.events)}`);
});

test('cluster: 20 messages sent in a burst on gateway A reach the member on gateway B in order', async () => {
  const { a, b, conv, sa, sb } = await srv.pairAcrossGateways();

  const N = 20;
  const sentP = srv.collect(sa, 'message-sent', N, 10_000);
  const recvAP = srv.collect(sa, 'receive-message', N, 10_000);
  const recvBP = srv.collect(sb, 'receive-message', N, 10_000);
  const errors = [];
  sa.on('message-error', (e) => errors.push(e));
  const contents = Array.from({ length: N }, (_, i) => `burst ${i} from gwa`);
  for (const content of contents) {
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content });
  }
  const [sent, recvA, recvB] = await Promise.all([sentP, recvAP, recvBP]);
  assert.deepEqual(errors, []);
  assert.deepEqual(sent.map((m) => m.content), contents, 'message-sent in sending order');
  for (let i = 1; i < N; i++) {
    assert.ok(sent[i].id > sent[i - 1].id, `ids not strictly increasing at ${i}: ${sent[i - 1].id} then ${sent[i].id}`);
  }
  assert.deepEqual(recvB.map((m) => [m.id, m.content]), sent.map((m) => [m.id, m.content]), 'gateway B member: same ids and contents, same order');
  assert.deepEqual(recvB, sent, 'gateway B member: same payloads');
  assert.deepEqual(recvA, sent, 'sender (gateway A): same payloads, same order');

  // Stored in that order too (history from both gateways).
  for (const gateway of [GW_A, GW_B]) {
    const res = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages?limit=100`, undefined, { gateway });
    assert.equal(res.status, 200, `${res.url} → ${res.status} ${safeJson(res.body)}`);
    assert.equal(res.body.total, N);
    assert.deepEqual(res.body.data.map((m) => m.id), sent.map((m) => m.id), `history via gateway ${gateway}`);
  }
});

test('cluster: presence state survives a presence restart (kept in the KV bucket)', async () => {
  const [a, b] = srv.users(2);
  await srv.openConversation(a, b);
  const sb = await srv.connect(b, { gateway: GW_B });
  const onB = srv.once(sb, 'user:online', 5000, about(a));
  const sa = await srv.connect(a, { gateway: GW_A });
  assert.deepEqual(await onB, { userId: a });

  const rec = recordEvents(sb);
  await srv.restartRole('presence'); // SIGKILL, start again, wait for /healthz

  // A leaves: the new presence process still knows A was online (and who A's contacts are).
  const offB = srv.once(sb, 'user:offline', 5000, about(a));
  sa.disconnect();
  assert.deepEqual(await offB, { userId: a });

  // A comes back.
  const onB2 = srv.once(sb, 'user:online', 5000, about(a));
  const sa2 = await srv.connect(a, { gateway: GW_A });
  assert.deepEqual(await onB2, { userId: a });
  assert.equal(sa2.connected, true);

  // Nothing spurious about A around the restart (no offline/online while A stayed connected).
  await sleep(QUIET_MS);
  assert.deepEqual(presenceAbout(rec, a), ['user:offline', 'user:online'], `events on b since the restart: ${safeJson(rec.events)}`);
  assert.ok(srv.isAlive(), 'every cluster process is running');
});

// Last: kills a gateway (it is restarted at the end, but keep it last anyway).
test('cluster: a gateway killed with SIGKILL: its users go offline for contacts on the other gateway within the gateway timeout', async () => {
  const [a, b, c, d] = srv.users(4);
  await srv.openConversation(a, b);
  await srv.openConversation(c, b);
  await srv.openConversation(d, b);
  const sb = await srv.connect(b, { gateway: GW_B }); // the watcher, on the surviving gateway
  const sd = await srv.connect(d, { gateway: GW_B }); // a contact of b on the surviving gateway
  const onA = srv.once(sb, 'user:online', 5000, about(a));
  const onC = srv.once(sb, 'user:online', 5000, about(c));
  await srv.connect(a, { gateway: GW_A }); // users of the gateway that dies
  await srv.connect(c, { gateway: GW_A });
  await Promise.all([onA, onC]);

  const rec = recordEvents(sb);
  const offA = srv.once(sb, 'user:offline', DEAD_GATEWAY_MS, about(a));
  const offC = srv.once(sb, 'user:offline', DEAD_GATEWAY_MS, about(c));
  const t0 = Date.now();
  await srv.killGateway(GW_A);
  assert.deepEqual(await offA, { userId: a });
  assert.deepEqual(await offC, { userId: c });
  const elapsed = Date.now() - t0;
  assert.ok(elapsed < DEAD_GATEWAY_MS, `offline after ${elapsed} ms`);

  // Users of the surviving gateway are unaffected.
  await sleep(QUIET_MS);
  assert.deepEqual(presenceAbout(rec, d), [], `events about d on b: ${safeJson(rec.events)}`);
  assert.equal(sb.connected, true);
  assert.equal(sd.connected, true);
  const conv = await srv.openConversation(d, b);
  await srv.join(sb, conv.id);
  const recv = srv.once(sb, 'receive-message', 5000);
  const sent = await srv.send(sd, d, conv.id, 'gateway B still works');
  assert.deepEqual(await recv, sent);

  // Gateway A comes back (same port, same id); its users can return.
  await srv.restartGateway(GW_A);
  const backA = srv.once(sb, 'user:online', 5000, about(a));
  await srv.connect(a, { gateway: GW_A });
  assert.deepEqual(await backA, { userId: a });
  assert.ok(srv.isAlive(), 'every cluster process is running');
});
