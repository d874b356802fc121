// A reader that never reads cannot grow server memory: its outgoing buffer is bounded
// (--max-buffered-packets), and a connection that accepts no data for --write-stall-timeout is
// closed, so the server lets it go (its contacts see it go offline). Its client can reconnect
// later and recover with lastMessageId.

import assert from 'node:assert/strict';
import { test, useServer } from './harness.mjs';

// A smaller buffer and a short stall timeout keep the test short (the writer, which reads,
// must not overflow its own buffer with confirmations); a high send limit lets one
// sender fill the buffer quickly.
Object.assign(process.env, { CHAT_MAX_BUFFERED_PACKETS: '256', CHAT_WRITE_STALL_TIMEOUT: '3s', CHAT_SEND_RATE: '100000', CHAT_SEND_BURST: '100000' });

const srv = useServer();

test('a reader that stops reading is disconnected once its outgoing buffer is full', async () => {
  const [reader, writer] = srv.users(2);
  const conv = await srv.openConversation(reader, writer);
  const w = await srv.connect(writer);
  const r = await srv.connect(reader);
  await srv.join(r, conv.id);
  const offline = srv.once(w, 'user:offline', 60_000);
  // Stop reading: the kernel buffers fill, then the server's bounded buffer.
  r.io.engine.transport.ws._socket.pause();
  const big = 'x'.repeat(9_000);
  let confirmed = 0;
  w.on('message-sent', () => confirmed++);
  for (let i = 0; i < 3_000; i++) {
    w.emit('send-message', { sender_id: writer, conversation_id: conv.id, message_type: 'text', content: `${i} ${big}` });
    // Pauses often enough for this process to read the writer's confirmations (each carries
    // the 9 KB message): on a busy machine, 100 sends between pauses overflowed the writer's
    // own buffer too, and the server rightly let it go as well.
    if (i % 25 === 24) await new Promise((resolve) => setTimeout(resolve, 10));
  }
  assert.deepEqual(await offline, { userId: reader }, 'the server let the reader go');
  assert.ok(confirmed > 0, 'the writer kept being served');
  await srv.send(w, writer, conv.id, 'still fine');
});
