// Presence: user:online / user:offline go to the user's contacts only (via their user:{id} rooms).

import assert from 'node:assert/strict';
import { test, useServer } from './harness.mjs';

const srv = useServer();

const about = (id) => (p) => p && p.userId === id;

test('presence: contacts get user:online / user:offline once per user (first socket / last socket); non-contacts get nothing', async () => {
  const [a, b, c] = srv.users(3);
  await srv.openConversation(a, b); // a and b are contacts; c shares no conversation with a
  const sb = await srv.connect(b);
  const sc = await srv.connect(c);

  // A comes online (first socket).
  const onlineB = srv.once(sb, 'user:online', 3000, about(a));
  const noneC = srv.expectNone(sc, 'user:online', 600);
  const noneCOff = srv.expectNone(sc, 'user:offline', 600);
  const sa1 = await srv.connect(a);
  assert.deepEqual(await onlineB, { userId: a });
  await Promise.all([noneC, noneCOff]);

  // A opens a second socket: no second user:online.
  const noSecondOnline = srv.expectNone(sb, 'user:online', 600, about(a));
  const sa2 = await srv.connect(a);
  await noSecondOnline;

  // A closes one socket: no user:offline.
  const noOffline = srv.expectNone(sb, 'user:offline', 600, about(a));
  sa1.disconnect();
  await noOffline;
  assert.equal(sa2.connected, true);

  // A closes the last socket: user:offline to B, nothing to C.
  const offlineB = srv.once(sb, 'user:offline', 3000, about(a));
  const noneC2 = srv.expectNone(sc, 'user:offline', 600);
  sa2.disconnect();
  assert.deepEqual(await offlineB, { userId: a });
  await noneC2;
});

test('presence: every socket of a contact (all in user:{id}) gets user:online, even without joining any conversation', async () => {
  const [a, b] = srv.users(2);
  await srv.openConversation(b, a); // a is the receiver this time
  const sb1 = await srv.connect(b);
  const sb2 = await srv.connect(b);
  const got1 = srv.once(sb1, 'user:online', 3000, about(a));
  const got2 = srv.once(sb2, 'user:online', 3000, about(a));
  await srv.connect(a);
  assert.deepEqual(await got1, { userId: a });
  assert.deepEqual(await got2, { userId: a });
});

test('presence: the user coming online does not get its own user:online (contact d offline is fine)', async () => {
  const [a, b, d] = srv.users(3);
  await srv.openConversation(a, b);
  await srv.openConversation(a, d); // d never connects
  const sb = await srv.connect(b);
  const onlineB = srv.once(sb, 'user:online', 3000, about(a));
  const sa = srv.socket({ userId: a });
  const noSelf = srv.expectNone(sa, 'user:online', 600, about(a));
  await srv.once(sa, 'connect');
  assert.deepEqual(await onlineB, { userId: a });
  await noSelf;
});

test('presence: a user with two contacts notifies both, and offline reaches both when the last socket closes', async () => {
  const [a, b, c, x] = srv.users(4);
  await srv.openConversation(a, b);
  await srv.openConversation(c, a);
  const sb = await srv.connect(b);
  const sc = await srv.connect(c);
  const sx = await srv.connect(x); // stranger
  const onB = srv.once(sb, 'user:online', 3000, about(a));
  const onC = srv.once(sc, 'user:online', 3000, about(a));
  const noX = srv.expectNone(sx, 'user:online', 600);
  const sa = await srv.connect(a);
  assert.deepEqual(await onB, { userId: a });
  assert.deepEqual(await onC, { userId: a });
  await noX;

  const offB = srv.once(sb, 'user:offline', 3000, about(a));
  const offC = srv.once(sc, 'user:offline', 3000, about(a));
  const noXOff = srv.expectNone(sx, 'user:offline', 600);
  sa.disconnect();
  assert.deepEqual(await offB, { userId: a });
  assert.deepEqual(await offC, { userId: a });
  await noXOff;
});

test('presence: a conversation created while both are connected makes them contacts for later transitions', async () => {
  const [a, b] = srv.users(2);
  const sb = await srv.connect(b);
  const sa1 = await srv.connect(a);
  await srv.openConversation(a, b);
  // a reconnects: b must now be told.
  const offB = srv.once(sb, 'user:offline', 3000, about(a));
  sa1.disconnect();
  assert.deepEqual(await offB, { userId: a });
  const onB = srv.once(sb, 'user:online', 3000, about(a));
  await srv.connect(a);
  assert.deepEqual(await onB, { userId: a });
});
