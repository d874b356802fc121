// The HTTP long-polling transport works end to end.

import assert from 'node:assert/strict';
import { test, useServer } from './harness.mjs';

const srv = useServer();

test('polling-only client: connect, join, send, receive (with a websocket peer both ways)', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sp = await srv.connect(a, { transports: ['polling'] });
  const sw = await srv.connect(b);
  assert.equal(sp.io.engine.transport.name, 'polling');
  assert.equal(sw.io.engine.transport.name, 'websocket');

  const joined = srv.once(sp, 'joined-conversation');
  const ack = await sp.timeout(5000).emitWithAck('join-conversation', { conversationId: conv.id, userId: a });
  assert.deepEqual(ack, { success: true, conversationId: conv.id });
  assert.deepEqual(await joined, { conversationId: conv.id, success: true });
  await srv.join(sw, conv.id);

  // polling → websocket (and the polling sender gets its own receive-message)
  const recvW = srv.once(sw, 'receive-message', 5000);
  const recvP = srv.once(sp, 'receive-message', 5000);
  const sent = await srv.send(sp, a, conv.id, 'over polling', 'text', 5000);
  assert.equal(sent.sender_id, a);
  assert.equal(sent.content, 'over polling');
  assert.deepEqual(await recvW, sent);
  assert.deepEqual(await recvP, sent);

  // websocket → polling
  const recvP2 = srv.once(sp, 'receive-message', 5000);
  const sent2 = await srv.send(sw, b, conv.id, 'to the poller');
  assert.deepEqual(await recvP2, sent2);

  // typing and errors flow over polling too
  const typing = srv.once(sp, 'user-typing', 5000);
  sw.emit('typing', { conversationId: conv.id, userId: b, isTyping: true });
  assert.deepEqual(await typing, { conversationId: conv.id, userId: b, isTyping: true });
  const err = srv.once(sp, 'message-error', 5000);
  sp.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: '' });
  assert.deepEqual(await err, { error: 'content should not be empty' });

  assert.equal(sp.io.engine.transport.name, 'polling', 'never upgraded');
  const h = await srv.history(conv.id);
  assert.deepEqual(h.data.map((m) => m.content), ['over polling', 'to the poller']);
});

test('polling-only client with an invalid userId gets the error event and is disconnected', async () => {
  const s = srv.socket({ userId: 'abc' }, { transports: ['polling'] });
  const err = srv.once(s, 'error', 5000);
  const disc = srv.once(s, 'disconnect', 5000);
  assert.deepEqual(await err, { message: 'userId query parameter is required and must be a positive integer' });
  assert.equal(await disc, 'io server disconnect');
});
