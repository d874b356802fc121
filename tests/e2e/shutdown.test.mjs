// Graceful shutdown of a gateway (cluster only). A load balancer stand-in (a TCP proxy in this
// test) sends new connections to gateway A; on SIGTERM, A answers the sends it has in flight,
// tells its clients `server-shutdown`, and closes their transports ("transport close", which
// makes socket.io-client reconnect by itself, unlike a server-side namespace disconnect). The
// balancer then sends new connections to gateway B, and the client carries on there.

import assert from 'node:assert/strict';
import net from 'node:net';
import { after } from 'node:test';
import { io } from 'socket.io-client';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer, collect, once } from './harness.mjs';
import { scrape, value } from './metrics.mjs';

const srv = useServer({ only: 'cluster', flags: ['--shutdown-grace', '5s'] });

/** A TCP proxy on 127.0.0.1 whose target port can be changed; open connections stay where they are. */
async function startBalancer() {
  let target = 0;
  const open = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: target });
    open.add(client);
    const close = () => {
      open.delete(client);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on('error', close);
      s.on('close', close);
    }
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    pointAt(port) { target = port; },
    close() {
      for (const c of open) c.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

let balancer;
after(() => balancer?.close());

test('SIGTERM: a gateway answers its sends, tells its clients to go, and they reconnect elsewhere by themselves', async () => {
  balancer = await startBalancer();
  balancer.pointAt(srv.procs.gwa.port);
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sb = await srv.connect(b, { gateway: 1 });
  await srv.join(sb, conv.id);
  // A client of the load balancer, with reconnection on as in any real client.
  const client = io(`${balancer.url}/chat`, {
    query: { userId: a }, transports: ['websocket'], forceNew: true,
    reconnection: true, reconnectionDelay: 100, reconnectionDelayMax: 500, randomizationFactor: 0,
  });
  client.__label = `socket(userId=${a}, via balancer)`;
  try {
    await once(client, 'connect', 5000);
    const joined = await client.timeout(3000).emitWithAck('join-conversation', { conversationId: conv.id });
    assert.deepEqual(joined, { success: true, conversationId: conv.id });

    const N = 20;
    const acks = collect(client, 'message-sent', N, 10_000);
    const deliveries = collect(sb, 'receive-message', N, 10_000);
    const notice = once(client, 'server-shutdown', 10_000);
    const gone = once(client, 'disconnect', 10_000);
    // Awaited in turn below; a failure of one while another is awaited must not go unhandled.
    for (const p of [acks, deliveries, notice, gone]) p.catch(() => {});
    const received = async () => value((await scrape(srv.gateways[0])).series, 'chat_gateway_events_in_total',
      { event: 'send-message' });
    const baseline = await received();
    for (let i = 0; i < N; i++) {
      client.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `before ${i}` });
    }
    // Every send has reached gateway A (it counted them) before it is told to stop.
    const deadline = Date.now() + 5000;
    while (await received() < baseline + N) {
      assert.ok(Date.now() < deadline, 'gateway A did not receive the sends');
      await sleep(5);
    }
    // The balancer sends new connections to B from now on.
    balancer.pointAt(srv.procs.gwb.port);
    const stopped = srv.killRole('gwa', 'SIGTERM');

    assert.deepEqual(await notice, { reconnect: true });
    const sent = await acks;
    assert.deepEqual(sent.map((m) => m.content), Array.from({ length: N }, (_, i) => `before ${i}`),
      'every send in flight got its message-sent before the connection closed');
    assert.equal(await gone, 'transport close', 'the transport is closed: the client reconnects by itself');
    await stopped;
    assert.deepEqual(srv.procs.gwa.exited, { code: 0, signal: null }, 'gateway A exited cleanly');
    const delivered = await deliveries;
    assert.deepEqual(delivered.map((m) => m.content), sent.map((m) => m.content));

    // The client is back, on gateway B, without anyone asking it to.
    await once(client, 'connect', 10_000);
    const rejoined = await client.timeout(3000).emitWithAck('join-conversation', {
      conversationId: conv.id, lastMessageId: sent[N - 1].id,
    });
    assert.deepEqual(rejoined, { success: true, conversationId: conv.id });
    const after = once(client, 'message-sent', 5000);
    client.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'after' });
    assert.equal((await after).content, 'after');
  } finally {
    client.removeAllListeners();
    client.disconnect();
    await srv.restartRole('gwa'); // leave the cluster whole for the harness
  }
});
