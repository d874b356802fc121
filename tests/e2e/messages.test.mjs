// send-message: success payloads, fan-out to conversation rooms, ordering, validation errors.

import assert from 'node:assert/strict';
import { test, useServer } from './harness.mjs';

const srv = useServer();

const ISO_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;

function assertMessageShape(m, { senderId, conv, content, messageType = 'text' }) {
  assert.equal(typeof m, 'object');
  assert.ok(Number.isInteger(m.id) && m.id > 0, `id must be a positive integer, got ${JSON.stringify(m.id)}`);
  assert.equal(m.sender_id, senderId);
  assert.equal(m.conversation_id, conv.id);
  assert.equal(m.message_type, messageType);
  assert.equal(m.content, content);
  assert.equal(typeof m.timestamp, 'string', `timestamp must be a string, got ${JSON.stringify(m.timestamp)}`);
  assert.match(m.timestamp, ISO_Z);
  const t = Date.parse(m.timestamp);
  assert.ok(!Number.isNaN(t), `timestamp not parseable: ${m.timestamp}`);
  assert.ok(Math.abs(Date.now() - t) < 60_000, `timestamp ${m.timestamp} is not close to now`);
  assert.deepEqual(m.conversation, { id: conv.id, sender_id: conv.sender_id, receiver_id: conv.receiver_id });
}

test('send-message: sender gets message-sent, joined participants (incl. sender) get receive-message with the same payload', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);

  const recvA = srv.once(sa, 'receive-message');
  const recvB = srv.once(sb, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'Hello, how are you?');
  assertMessageShape(sent, { senderId: a, conv, content: 'Hello, how are you?' });
  assert.deepEqual(await recvA, sent, 'sender (joined) receives the same payload');
  assert.deepEqual(await recvB, sent, 'other participant receives the same payload');
  // The receiver does not get a message-sent.
  await srv.expectNone(sb, 'message-sent', 200);
});

test('send-message from the receiver: conversation field keeps the original sender/receiver of the conversation', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  assert.equal(conv.sender_id, a);
  assert.equal(conv.receiver_id, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);

  const recvA = srv.once(sa, 'receive-message');
  const sent = await srv.send(sb, b, conv.id, 'reply from b');
  assertMessageShape(sent, { senderId: b, conv, content: 'reply from b' });
  assert.deepEqual(sent.conversation, { id: conv.id, sender_id: a, receiver_id: b });
  assert.deepEqual(await recvA, sent);
});

test('send-message: message_type image and file are accepted and echoed', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  // Images and files are references: an http(s) URL or attachment:<id>.
  const contents = { text: 'text-content', image: 'https://cdn.example.com/cat.png', file: 'attachment:2026/report-1.pdf' };
  for (const type of ['text', 'image', 'file']) {
    const content = contents[type];
    const sent = await srv.send(sa, a, conv.id, content, type);
    assertMessageShape(sent, { senderId: a, conv, content, messageType: type });
  }
  const h = await srv.history(conv.id);
  assert.deepEqual(h.data.map((m) => m.message_type), ['text', 'image', 'file']);
});

test('send-message: a participant who has not joined the room gets no receive-message', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b); // connected, NOT joined
  await srv.join(sa, conv.id);

  const noneB = srv.expectNone(sb, 'receive-message', 400);
  const recvA = srv.once(sa, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'only joined sockets see this');
  assert.equal((await recvA).id, sent.id);
  await noneB;
});

test('send-message: a sender who has not joined gets message-sent but no receive-message', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a); // NOT joined
  const sb = await srv.connect(b);
  await srv.join(sb, conv.id);

  const noneA = srv.expectNone(sa, 'receive-message', 400);
  const recvB = srv.once(sb, 'receive-message');
  const sent = await srv.send(sa, a, conv.id, 'sent without joining');
  assert.deepEqual(await recvB, sent);
  await noneA;
});

test('send-message: only sockets joined to that conversation receive it (other conversation rooms do not)', async () => {
  const [a, b, c] = srv.users(3);
  const convAB = await srv.openConversation(a, b);
  const convAC = await srv.openConversation(a, c);
  const sa = await srv.connect(a);
  const sc = await srv.connect(c);
  await srv.join(sc, convAC.id);

  const noneC = srv.expectNone(sc, 'receive-message', 400);
  await srv.send(sa, a, convAB.id, 'for b only');
  await noneC;
});

test('send-message: 20 messages sent without waiting get strictly increasing ids, in order, for sender and receiver', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sb, conv.id);

  const N = 20;
  const sentP = srv.collect(sa, 'message-sent', N, 8000);
  const recvP = srv.collect(sb, 'receive-message', N, 8000);
  const errors = [];
  sa.on('message-error', (e) => errors.push(e));
  for (let i = 0; i < N; i++) {
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `msg ${i}` });
  }
  const sent = await sentP;
  const recv = await recvP;
  assert.deepEqual(errors, []);
  assert.deepEqual(sent.map((m) => m.content), Array.from({ length: N }, (_, i) => `msg ${i}`));
  for (let i = 1; i < N; i++) {
    assert.ok(sent[i].id > sent[i - 1].id, `ids not strictly increasing at ${i}: ${sent[i - 1].id} then ${sent[i].id}`);
  }
  assert.deepEqual(recv.map((m) => m.id), sent.map((m) => m.id), 'receiver sees the same ids in the same order');
  assert.deepEqual(recv.map((m) => m.content), sent.map((m) => m.content));

  const h = await srv.history(conv.id, '?limit=100');
  assert.equal(h.total, N);
  assert.deepEqual(h.data.map((m) => m.id), sent.map((m) => m.id));
});

test('send-message: content of exactly 10000 characters is accepted', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const content = 'x'.repeat(10_000);
  const sent = await srv.send(sa, a, conv.id, content);
  assert.equal(sent.content.length, 10_000);
  assert.equal(sent.content, content);
  const h = await srv.history(conv.id);
  assert.equal(h.total, 1);
  assert.equal(h.data[0].content.length, 10_000);
});

// ---------------------------------------------------------------------------
// Validation errors. Each case: [name, payload builder(ctx) | NO_ARG, expected error].

const NO_ARG = Symbol('no argument');
const SID_EMPTY = 'sender_id should not be empty, sender_id must be an integer number';
const SID_INT = 'sender_id must be an integer number';
const SID_POS = 'sender_id must be a positive number';
const CID_EMPTY = 'conversation_id should not be empty, conversation_id must be an integer number';
const CID_INT = 'conversation_id must be an integer number';
const CID_POS = 'conversation_id must be a positive number';
const TYPE = 'message_type must be one of the following values: text, image, file';
const C_EMPTY = 'content should not be empty';
const C_STR = 'content must be a string';
const C_LONG = 'content must be shorter than or equal to 10000 characters';

const valid = ({ a, conv }) => ({ sender_id: a, conversation_id: conv.id, message_type: 'text', content: 'hi' });
const without = (key) => (ctx) => { const p = valid(ctx); delete p[key]; return p; };
const withField = (key, value) => (ctx) => ({ ...valid(ctx), [key]: value });

const validationCases = [
  ['payload is a string', () => 'hello', 'payload must be an object'],
  ['payload is a number', () => 42, 'payload must be an object'],
  ['payload is an array', (ctx) => [valid(ctx)], 'payload must be an object'],
  ['payload is null', () => null, 'payload must be an object'],
  ['no payload argument at all', NO_ARG, 'payload must be an object'],

  ['sender_id missing', without('sender_id'), SID_EMPTY],
  ['sender_id is the string "1"', withField('sender_id', '1'), SID_INT],
  ['sender_id is 1.5', withField('sender_id', 1.5), SID_INT],
  ['sender_id is 0', withField('sender_id', 0), SID_POS],
  ['sender_id is negative', withField('sender_id', -3), SID_POS],

  ['conversation_id missing', without('conversation_id'), CID_EMPTY],
  ['conversation_id is the string "1"', withField('conversation_id', '1'), CID_INT],
  ['conversation_id is 1.5', withField('conversation_id', 1.5), CID_INT],
  ['conversation_id is 0', withField('conversation_id', 0), CID_POS],
  ['conversation_id is negative', withField('conversation_id', -7), CID_POS],

  ['message_type missing', without('message_type'), TYPE],
  ['message_type is "video"', withField('message_type', 'video'), TYPE],
  ['message_type is a number', withField('message_type', 5), TYPE],

  ['content missing', without('content'), C_EMPTY],
  ['content is empty', withField('content', ''), C_EMPTY],
  ['content is a number', withField('content', 5), C_STR],
  ['content is an object', withField('content', {}), C_STR],
  ['content is 10001 characters', withField('content', 'y'.repeat(10_001)), C_LONG],

  ['payload is {} (every field missing)', () => ({}),
    `${SID_EMPTY}, ${CID_EMPTY}, ${TYPE}, ${C_EMPTY}`],
  ['every field has a wrong value (errors joined in field order)',
    () => ({ content: 5, message_type: 'gif', conversation_id: 0, sender_id: '1' }),
    `${SID_INT}, ${CID_POS}, ${TYPE}, ${C_STR}`],
  ['sender_id and content invalid, others valid',
    (ctx) => ({ ...valid(ctx), sender_id: 2.5, content: '' }),
    `${SID_INT}, ${C_EMPTY}`],
];

for (const [name, build, expected] of validationCases) {
  test(`send-message validation: ${name} → message-error "${expected.length > 90 ? `${expected.slice(0, 90)}…` : expected}"`, async () => {
    const [a, b] = srv.users(2);
    const conv = await srv.openConversation(a, b);
    const sa = await srv.connect(a);
    const sb = await srv.connect(b);
    await srv.join(sa, conv.id);
    await srv.join(sb, conv.id);

    const errP = srv.once(sa, 'message-error');
    const noSent = srv.expectNone(sa, 'message-sent', 500);
    const noRecvA = srv.expectNone(sa, 'receive-message', 500);
    const noRecvB = srv.expectNone(sb, 'receive-message', 500);
    if (build === NO_ARG) sa.emit('send-message');
    else sa.emit('send-message', build({ a, b, conv }));

    assert.deepEqual(await errP, { error: expected });
    await Promise.all([noSent, noRecvA, noRecvB]);
    assert.equal(sa.connected, true, 'socket stays connected after a validation error');
    const h = await srv.history(conv.id);
    assert.equal(h.total, 0, 'nothing is stored');
    assert.deepEqual(h.data, []);
  });
}

test('send-message: sender_id different from the connected user → "Unauthorized to send as another user", nothing stored', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);

  const errP = srv.once(sa, 'message-error');
  const noSent = srv.expectNone(sa, 'message-sent', 500);
  const noRecvB = srv.expectNone(sb, 'receive-message', 500);
  // b is a real participant of the conversation, but a is the one connected.
  sa.emit('send-message', { sender_id: b, conversation_id: conv.id, message_type: 'text', content: 'spoofed' });
  assert.deepEqual(await errP, { error: 'Unauthorized to send as another user' });
  await Promise.all([noSent, noRecvB]);
  assert.equal((await srv.history(conv.id)).total, 0);
});

test('send-message: unknown conversation → "Conversation not found"', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);

  const errP = srv.once(sa, 'message-error');
  const noSent = srv.expectNone(sa, 'message-sent', 500);
  sa.emit('send-message', { sender_id: a, conversation_id: 987_654_321, message_type: 'text', content: 'void' });
  assert.deepEqual(await errP, { error: 'Conversation not found' });
  await noSent;
  assert.equal((await srv.history(conv.id)).total, 0);
  const res = await srv.api('GET', '/api/chats/conversations/987654321/messages');
  assert.equal(res.status, 404, 'the unknown conversation was not created as a side effect');
});

test('send-message: sender not a participant → "Unauthorized to send to this conversation", nothing stored or delivered', async () => {
  const [a, b, c] = srv.users(3);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sc = await srv.connect(c);
  await srv.join(sa, conv.id);

  const errP = srv.once(sc, 'message-error');
  const noSent = srv.expectNone(sc, 'message-sent', 500);
  const noRecvA = srv.expectNone(sa, 'receive-message', 500);
  sc.emit('send-message', { sender_id: c, conversation_id: conv.id, message_type: 'text', content: 'intruder' });
  assert.deepEqual(await errP, { error: 'Unauthorized to send to this conversation' });
  await Promise.all([noSent, noRecvA]);
  assert.equal((await srv.history(conv.id)).total, 0);
});

test('send-message: after an error the same socket can still send successfully', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const errP = srv.once(sa, 'message-error');
  sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: '' });
  assert.deepEqual(await errP, { error: C_EMPTY });
  const sent = await srv.send(sa, a, conv.id, 'ok now');
  assert.equal(sent.content, 'ok now');
  const h = await srv.history(conv.id);
  assert.equal(h.total, 1);
  assert.equal(h.data[0].content, 'ok now');
});

test('send-message: control characters are refused; line breaks, tabs and markup are stored as sent', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  for (const bad of ['nul\u0000', 'escape \u001b[31m', 'del\u007f', 'c1\u0085']) {
    const err = srv.once(sa, 'message-error');
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: bad });
    assert.deepEqual(await err, { error: 'content must not contain control characters' }, JSON.stringify(bad));
  }
  const kept = 'line one\nline two\ttab <b>bold</b> & "quotes"';
  const sent = await srv.send(sa, a, conv.id, kept);
  assert.equal(sent.content, kept, 'no HTML mangling');
  assert.equal((await srv.history(conv.id)).total, 1);
});

test('send-message: image and file content must be an http(s) URL or attachment:<id>', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  for (const [type, content] of [['image', 'a cat'], ['image', 'javascript:alert(1)'], ['file', 'file:///etc/passwd'], ['file', 'attachment:']]) {
    const err = srv.once(sa, 'message-error');
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: type, content });
    const article = type === 'image' ? 'an' : 'a';
    assert.deepEqual(await err, { error: `content of ${article} ${type} message must be an http(s) URL or attachment:<id>` }, content);
  }
  assert.equal((await srv.history(conv.id)).total, 0);
});
