// REST API: health, conversations, message history, user conversations, errors.

import assert from 'node:assert/strict';
import { test, useServer } from './harness.mjs';

// History tests fill conversations with 100+ messages as fast as they can: lift the per-user
// send limit for this file's server (limits.test.mjs tests the limit itself).
process.env.CHAT_SEND_RATE = '10000';
process.env.CHAT_SEND_BURST = '10000';

const srv = useServer();

const SID = 'sender_id must be a positive integer';
const RID = 'receiver_id must be a positive integer';
const SAME = 'receiver_id must differ from sender_id';

function assertErrorBody(res, status) {
  assert.equal(res.status, status, `status: ${res.status} ${res.text}`);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  assert.equal(typeof res.body, 'object', `body must be JSON, got ${res.text}`);
  assert.ok(res.body !== null);
  assert.equal(res.body.statusCode, status, `body: ${res.text}`);
  assert.equal(typeof res.body.error, 'string', `body: ${res.text}`);
  assert.ok('message' in res.body, `body: ${res.text}`);
}

function assertIsoDate(v, what) {
  assert.equal(typeof v, 'string', `${what} must be a string, got ${JSON.stringify(v)}`);
  assert.ok(!Number.isNaN(Date.parse(v)), `${what} not parseable: ${v}`);
}

test('GET /healthz → 200 {status: "ok"}', async () => {
  const res = await srv.api('GET', '/healthz');
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { status: 'ok' });
});

test('GET unknown path → 404 JSON error', async () => {
  for (const p of ['/nope', '/api/chats/nothing-here', '/api/chats/conversations/1/messages/extra']) {
    const res = await srv.api('GET', p);
    assertErrorBody(res, 404);
  }
});

// --- POST /api/chats/conversations ------------------------------------------

test('POST /api/chats/conversations creates → 201 {id, sender_id, receiver_id, created_at}', async () => {
  const [a, b] = srv.users(2);
  const res = await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: b });
  assert.equal(res.status, 201, res.text);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/);
  assert.ok(Number.isInteger(res.body.id) && res.body.id > 0, res.text);
  assert.equal(res.body.sender_id, a);
  assert.equal(res.body.receiver_id, b);
  assertIsoDate(res.body.created_at, 'created_at');
  assert.ok(Math.abs(Date.now() - Date.parse(res.body.created_at)) < 60_000, 'created_at is about now');
});

test('POST /api/chats/conversations for an existing pair (either order) → 200 with the same conversation', async () => {
  const [a, b] = srv.users(2);
  const first = await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: b });
  assert.equal(first.status, 201);
  const again = await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: b });
  assert.equal(again.status, 200, again.text);
  assert.equal(again.body.id, first.body.id);
  assert.deepEqual(again.body, first.body);
  const reversed = await srv.api('POST', '/api/chats/conversations', { sender_id: b, receiver_id: a });
  assert.equal(reversed.status, 200, reversed.text);
  assert.equal(reversed.body.id, first.body.id);
  // The original orientation is kept.
  assert.equal(reversed.body.sender_id, a);
  assert.equal(reversed.body.receiver_id, b);
});

test('POST /api/chats/conversations: distinct pairs get distinct ids', async () => {
  const [a, b, c] = srv.users(3);
  const ab = await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: b });
  const ac = await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: c });
  const bc = await srv.api('POST', '/api/chats/conversations', { sender_id: b, receiver_id: c });
  assert.deepEqual([ab.status, ac.status, bc.status], [201, 201, 201]);
  assert.equal(new Set([ab.body.id, ac.body.id, bc.body.id]).size, 3);
});

const badBodies = [
  ['sender_id missing', { receiver_id: 5 }, [SID]],
  ['receiver_id missing', { sender_id: 5 }, [RID]],
  ['both missing ({})', {}, [SID, RID]],
  ['sender_id is a string', { sender_id: '5', receiver_id: 6 }, [SID]],
  ['sender_id is "abc"', { sender_id: 'abc', receiver_id: 6 }, [SID]],
  ['receiver_id is 1.5', { sender_id: 5, receiver_id: 1.5 }, [RID]],
  ['sender_id is 0', { sender_id: 0, receiver_id: 6 }, [SID]],
  ['receiver_id is negative', { sender_id: 5, receiver_id: -6 }, [RID]],
  ['both non-positive', { sender_id: -1, receiver_id: 0 }, [SID, RID]],
  ['sender_id is null', { sender_id: null, receiver_id: 6 }, [SID]],
  ['equal ids', { sender_id: 7, receiver_id: 7 }, [SAME]],
];

for (const [name, body, messages] of badBodies) {
  test(`POST /api/chats/conversations: ${name} → 400 message ${JSON.stringify(messages)}`, async () => {
    const res = await srv.api('POST', '/api/chats/conversations', body);
    assertErrorBody(res, 400);
    assert.ok(Array.isArray(res.body.message), `message must be an array: ${res.text}`);
    assert.ok(res.body.message.every((m) => typeof m === 'string'));
    assert.deepEqual(res.body.message, messages);
  });
}

test('POST /api/chats/conversations: validation failures create nothing', async () => {
  const [a] = srv.users(1);
  await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: a });
  await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: 0 });
  await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: '9' });
  const res = await srv.api('GET', `/api/chats/users/${a}/conversations`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.data, []);
  assert.equal(res.body.total_unread, 0);
});

const badRaw = [
  ['invalid JSON', '{"sender_id": 1, "receiver_id": '],
  ['empty body', ''],
  ['a JSON array', '[1, 2]'],
  ['a JSON string', '"hello"'],
  ['a JSON number', '12'],
  ['JSON null', 'null'],
];

for (const [name, raw] of badRaw) {
  test(`POST /api/chats/conversations with ${name} → 400 JSON error`, async () => {
    const res = await srv.api('POST', '/api/chats/conversations', raw, { raw: true });
    assertErrorBody(res, 400);
  });
}

// --- GET /api/chats/conversations/{id}/messages -----------------------------

async function conversationWithMessages(n) {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  const sent = [];
  for (let i = 0; i < n; i++) {
    const from = i % 3 === 2 ? [sb, b] : [sa, a];
    const image = i % 5 === 4;
    sent.push(await srv.send(from[0], from[1], conv.id, image ? `https://img.example.com/m${i}.png` : `m${i}`, image ? 'image' : 'text'));
  }
  return { conv, sent, a, b };
}

test('GET messages: defaults page=1 limit=20, oldest first, full message objects, total', async () => {
  const { conv, sent } = await conversationWithMessages(25);
  const res = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages`);
  assert.equal(res.status, 200, res.text);
  assert.equal(res.body.page, 1);
  assert.equal(res.body.limit, 20);
  assert.equal(res.body.total, 25);
  assert.equal(res.body.data.length, 20);
  const expected = sent.slice(0, 20).map(({ id, sender_id, conversation_id, timestamp, message_type, content }) =>
    ({ id, sender_id, conversation_id, timestamp, message_type, content }));
  const got = res.body.data.map(({ id, sender_id, conversation_id, timestamp, message_type, content }) =>
    ({ id, sender_id, conversation_id, timestamp, message_type, content }));
  assert.deepEqual(got.map((m) => m.id), expected.map((m) => m.id), 'oldest first (ascending id)');
  assert.deepEqual(got.map((m) => m.content), expected.map((m) => m.content));
  assert.deepEqual(got.map((m) => m.sender_id), expected.map((m) => m.sender_id));
  assert.deepEqual(got.map((m) => m.message_type), expected.map((m) => m.message_type));
  for (const m of got) {
    assert.equal(m.conversation_id, conv.id);
    assertIsoDate(m.timestamp, 'timestamp');
  }
  for (let i = 0; i < got.length; i++) {
    assert.equal(Date.parse(got[i].timestamp), Date.parse(expected[i].timestamp), `timestamp of message ${i}`);
  }
  for (let i = 1; i < got.length; i++) assert.ok(got[i].id > got[i - 1].id);
});

test('GET messages: explicit page and limit paginate through all messages', async () => {
  const { conv, sent } = await conversationWithMessages(25);
  const p1 = await srv.history(conv.id, '?page=1&limit=20');
  const p2 = await srv.history(conv.id, '?page=2&limit=20');
  assert.deepEqual([p2.page, p2.limit, p2.total], [2, 20, 25]);
  assert.equal(p2.data.length, 5);
  assert.deepEqual([...p1.data, ...p2.data].map((m) => m.id), sent.map((m) => m.id));

  const ids = [];
  for (let page = 1; page <= 3; page++) {
    const p = await srv.history(conv.id, `?page=${page}&limit=10`);
    assert.deepEqual([p.page, p.limit, p.total], [page, 10, 25]);
    assert.equal(p.data.length, page < 3 ? 10 : 5);
    ids.push(...p.data.map((m) => m.id));
  }
  assert.deepEqual(ids, sent.map((m) => m.id));

  const beyond = await srv.history(conv.id, '?page=4&limit=10');
  assert.deepEqual(beyond.data, []);
  assert.equal(beyond.total, 25);
  assert.equal(beyond.page, 4);

  const one = await srv.history(conv.id, '?page=7&limit=3');
  assert.deepEqual(one.data.map((m) => m.content), ['m18', 'https://img.example.com/m19.png', 'm20']);
});

test('GET messages: only page given → limit defaults to 20; only limit given → page defaults to 1', async () => {
  const { conv, sent } = await conversationWithMessages(22);
  const p2 = await srv.history(conv.id, '?page=2');
  assert.deepEqual([p2.page, p2.limit, p2.total], [2, 20, 22]);
  assert.deepEqual(p2.data.map((m) => m.id), sent.slice(20).map((m) => m.id));
  const l5 = await srv.history(conv.id, '?limit=5');
  assert.deepEqual([l5.page, l5.limit, l5.total], [1, 5, 22]);
  assert.deepEqual(l5.data.map((m) => m.id), sent.slice(0, 5).map((m) => m.id));
});

test('GET messages: limit above 100 is capped to 100', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const N = 105;
  const all = srv.collect(sa, 'message-sent', N, 15_000);
  for (let i = 0; i < N; i++) {
    sa.emit('send-message', { sender_id: a, conversation_id: conv.id, message_type: 'text', content: `bulk ${i}` });
  }
  const sent = await all;
  const res = await srv.history(conv.id, '?limit=500');
  assert.equal(res.limit, 100);
  assert.equal(res.page, 1);
  assert.equal(res.total, N);
  assert.equal(res.data.length, 100);
  assert.deepEqual(res.data.map((m) => m.id), sent.slice(0, 100).map((m) => m.id));
  const p2 = await srv.history(conv.id, '?limit=101&page=2');
  assert.equal(p2.limit, 100);
  assert.deepEqual(p2.data.map((m) => m.id), sent.slice(100).map((m) => m.id));
  const exact = await srv.history(conv.id, '?limit=100');
  assert.equal(exact.limit, 100);
});

test('GET messages of an empty conversation → 200 {data: [], page: 1, limit: 20, total: 0}', async () => {
  const [a, b] = srv.users(2);
  const conv = await srv.openConversation(a, b);
  const res = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { data: [], page: 1, limit: 20, total: 0 });
});

test('GET messages only returns messages of that conversation', async () => {
  const [a, b, c] = srv.users(3);
  const ab = await srv.openConversation(a, b);
  const ac = await srv.openConversation(a, c);
  const sa = await srv.connect(a);
  await srv.send(sa, a, ab.id, 'ab-1');
  await srv.send(sa, a, ac.id, 'ac-1');
  await srv.send(sa, a, ab.id, 'ab-2');
  const h = await srv.history(ab.id);
  assert.equal(h.total, 2);
  assert.deepEqual(h.data.map((m) => m.content), ['ab-1', 'ab-2']);
  assert.ok(h.data.every((m) => m.conversation_id === ab.id));
});

for (const q of ['page=0', 'page=-1', 'page=abc', 'limit=0', 'limit=-1', 'limit=abc', 'page=1.5', 'limit=2.5']) {
  test(`GET messages with ${q} → 400`, async () => {
    const [a, b] = srv.users(2);
    const conv = await srv.openConversation(a, b);
    const res = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages?${q}`);
    assertErrorBody(res, 400);
  });
}

test('GET messages of an unknown conversation → 404 "Conversation not found"', async () => {
  const res = await srv.api('GET', '/api/chats/conversations/999999999/messages');
  assertErrorBody(res, 404);
  assert.equal(res.body.message, 'Conversation not found');
});

test('GET messages with a non-numeric conversation id → 400', async () => {
  for (const id of ['abc', '1.5']) {
    const res = await srv.api('GET', `/api/chats/conversations/${id}/messages`);
    assertErrorBody(res, 400);
  }
});

// --- GET /api/chats/users/{userId}/conversations ----------------------------

test('GET /api/chats/users/{id}/conversations → 200 {data, total_unread, limit, next_before} newest first, as sender or receiver', async () => {
  const [u, v1, v2, v3, other] = srv.users(5);
  const c1 = await srv.openConversation(u, v1);
  await new Promise((r) => setTimeout(r, 15));
  const c2 = await srv.openConversation(v2, u); // u as receiver
  await new Promise((r) => setTimeout(r, 15));
  const c3 = await srv.openConversation(u, v3);
  await srv.openConversation(v1, other); // not u's

  const res = await srv.api('GET', `/api/chats/users/${u}/conversations`);
  assert.equal(res.status, 200, res.text);
  assert.deepEqual(Object.keys(res.body), ['data', 'total_unread', 'limit', 'next_before']);
  assert.deepEqual(res.body.data.map((c) => c.id), [c3.id, c2.id, c1.id]);
  // Each entry is the conversation as POST answered it, with the inbox's fields added.
  const asOpened = ({ id, type, sender_id, receiver_id, created_at }) => ({ id, type, sender_id, receiver_id, created_at });
  assert.deepEqual(res.body.data.map(asOpened), [c3, c2, c1]);
  for (const c of res.body.data) {
    assert.equal(c.last_message, null, 'no messages yet');
    assert.equal(c.unread_count, 0);
    assert.equal(c.last_activity_at, c.created_at, 'activity is the creation until a message');
  }
  for (const c of res.body.data) {
    for (const k of ['id', 'sender_id', 'receiver_id', 'created_at']) assert.ok(k in c, `missing ${k}`);
    assertIsoDate(c.created_at, 'created_at');
  }
  const ts = res.body.data.map((c) => Date.parse(c.created_at));
  assert.ok(ts[0] >= ts[1] && ts[1] >= ts[2], `created_at not newest-first: ${JSON.stringify(ts)}`);
});

test('GET /api/chats/users/{id}/conversations for a user without conversations → 200 {data: [], total_unread: 0}', async () => {
  const [u] = srv.users(1);
  const res = await srv.api('GET', `/api/chats/users/${u}/conversations`);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body, { data: [], total_unread: 0, limit: 50, next_before: null });
});
