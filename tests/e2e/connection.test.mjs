// Handshake validation on the /chat namespace and unknown events.

import assert from 'node:assert/strict';
import { test, useServer, USERID_ERROR, recordEvents } from './harness.mjs';

const srv = useServer();

test('a positive integer userId connects to /chat', async () => {
  const [a] = srv.users(1);
  const s = srv.socket({ userId: a });
  const rec = recordEvents(s);
  await srv.once(s, 'connect');
  assert.equal(s.connected, true);
  assert.equal(typeof s.id, 'string');
  // Still connected a little later (not kicked after the handshake), and no error event.
  await srv.expectNone(s, 'disconnect', 300);
  assert.equal(s.connected, true);
  assert.ok(!rec.names().includes('error'), `events received: ${JSON.stringify(rec.events)}`);
});

test('the same user can hold two sockets at once', async () => {
  const [a] = srv.users(1);
  const s1 = await srv.connect(a);
  const s2 = await srv.connect(a);
  assert.equal(s1.connected, true);
  assert.equal(s2.connected, true);
  assert.notEqual(s1.id, s2.id);
});

const badUserIds = [
  ['missing', {}],
  ['non-numeric "abc"', { userId: 'abc' }],
  ['zero', { userId: 0 }],
  ['negative', { userId: -5 }],
  ['fractional 1.5', { userId: 1.5 }],
];

for (const [name, query] of badUserIds) {
  test(`userId ${name}: server emits "error" with the userId message, then disconnects the socket`, async () => {
    const s = srv.socket(query);
    const rec = recordEvents(s);
    const errP = srv.once(s, 'error', 3000);
    const discP = srv.once(s, 'disconnect', 3000);
    const connectError = srv.once(s, 'connect_error', 3000).then((e) => e, () => null);

    const err = await errP.catch(async (e) => {
      const ce = await Promise.race([connectError, new Promise((r) => setTimeout(() => r(null), 10))]);
      throw new Error(`${e.message}${ce ? ` (got connect_error instead: ${ce.message})` : ''}`);
    });
    assert.deepEqual(err, { message: USERID_ERROR });
    const reason = await discP;
    assert.equal(reason, 'io server disconnect');
    assert.equal(s.connected, false);
    // The error event comes before the disconnect, and no other app events are sent.
    assert.deepEqual(rec.names(), ['error'], `events received: ${JSON.stringify(rec.events)}`);
  });
}

test('an invalid handshake does not affect other connected clients', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);

  const bad = srv.socket({ userId: 'nope' });
  await srv.once(bad, 'disconnect');

  const recv = srv.once(sb, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'still here');
  assert.equal(sent.content, 'still here');
  assert.equal((await recv).id, sent.id);
});

test('an unknown event gets "error" {message: "Unknown event: hack"} and the socket stays usable', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const s = await srv.connect(a);

  const errP = srv.once(s, 'error');
  s.emit('hack', {});
  assert.deepEqual(await errP, { message: 'Unknown event: hack' });

  const err2 = srv.once(s, 'error');
  s.emit('totally-unknown');
  assert.deepEqual(await err2, { message: 'Unknown event: totally-unknown' });

  await srv.expectNone(s, 'disconnect', 200);
  assert.equal(s.connected, true);

  // Still usable: join + send work.
  await srv.join(s, conv.id);
  const recv = srv.once(s, 'receive-message');
  const sent = await srv.send(s, a, conv.id, 'after hack');
  assert.equal(sent.content, 'after hack');
  assert.equal((await recv).id, sent.id);
});
