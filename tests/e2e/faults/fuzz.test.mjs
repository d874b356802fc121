// Bad input in bulk, against the cluster (E2E_MODE=cluster only; run with
// tests/e2e/run-faults.sh): thousands of random and malformed payloads at every Socket.IO event
// (those of the API and unknown ones; wrong types, nested junk, huge strings, binary
// attachments, extra arguments, raw broken packets, floods of joins and leaves) and at every
// REST route (junk bodies, ids, query strings, paths and methods). Then the server must still
// run, answer a normal client correctly on both gateways, and the database must hold no
// invalid row:
//   messages:      message_type in (text, image, file); content non-empty (empty only for a
//                  deleted message, which keeps none) and at most 10 000 characters; the sender
//                  is a participant of the message's conversation;
//   conversations: sender_id ≠ receiver_id, both > 0.
// The generator is seeded: the seed is printed, and FUZZ_SEED=<seed> replays a run.

import assert from 'node:assert/strict';
import http from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import { test, useServer, psql, safeJson, USERID_ERROR } from '../harness.mjs';

// The per-user rate limits are tested in limits.test.mjs; here every payload must reach
// validation and, when valid, storage: the limits are lifted (settings the binary does not
// know are ignored).
for (const k of ['CHAT_SEND_RATE', 'CHAT_SEND_BURST', 'CHAT_TYPING_RATE', 'CHAT_JOIN_RATE']) process.env[k] = '100000';
const srv = useServer({ only: 'cluster' });

const SEED = Number(process.env.FUZZ_SEED ?? (Date.now() % 2 ** 31));
const SOCKET_ROUNDS = 6000; // random event payloads, spread over the attacker sockets
const RAW_ROUNDS = 800; // raw (hand-written) Socket.IO packets
const JOIN_FLOOD = 1000; // join/leave requests in one burst
const REST_ROUNDS = 3000; // random REST requests
const MAX_CHARS = 10_000;

// ---------------------------------------------------------------------------------------------
// Seeded randomness

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = mulberry32(SEED);
const int = (n) => Math.floor(rand() * n);
const pick = (xs) => xs[int(xs.length)];
const chance = (p) => rand() < p;

const KEYS = ['sender_id', 'conversation_id', 'message_type', 'content', 'client_msg_id', 'conversationId',
  'userId', 'isTyping', 'lastMessageId', 'receiver_id', 'messageId', 'emoji', 'on', 'changeId', '__proto__', 'constructor', 'toString', '', ' ', 'ä',
  '$ne', 'x'.repeat(300)];

function randomString() {
  switch (int(12)) {
    case 0: return '';
    case 1: return ' ';
    case 2: return pick(['text', 'image', 'file', 'TEXT', 'Text', 'text ', 'video', 'text\u0000', 'image/png']);
    case 3: return String(int(1e6));
    case 4: return pick(['-1', '0', '1.5', '1e3', '0x10', 'NaN', 'Infinity', 'null', 'true', '[]', '{}', '9'.repeat(40)]);
    case 5: return '\u0000\u0001\u001f\u007f\u200b\u202e\ufeff\uffff';
    case 6: return '😀'.repeat(1 + int(50));
    case 7: return pick(['<script>alert(1)</script>', "'; drop table messages; --", '${jndi:ldap://x}', '%s%n%x', '../../etc/passwd']);
    case 8: return 'y'.repeat(int(3) === 0 ? MAX_CHARS + int(3) : 1 + int(2000));
    case 9: return chance(0.1) ? 'z'.repeat(100_000 + int(300_000)) : 'w'.repeat(int(50));
    case 10: return Array.from({ length: 1 + int(20) }, () => String.fromCharCode(int(0xd7ff))).join('');
    default: return rand().toString(36).slice(2);
  }
}

function randomNumber() {
  return pick([0, -0, 1, -1, 2, 7, 1.5, -1.5, 1e-300, 1e308, -1e308, 2 ** 31, 2 ** 32, 2 ** 53, 2 ** 53 + 2,
    2 ** 63, -(2 ** 63), 2 ** 64, Number.MAX_SAFE_INTEGER, Number.MIN_SAFE_INTEGER, NaN, Infinity, -Infinity,
    int(1000), -int(1000)]);
}

function randomValue(depth = 3) {
  const kinds = depth > 0 ? 9 : 5;
  switch (int(kinds)) {
    case 0: return null;
    case 1: return chance(0.5);
    case 2: return randomNumber();
    case 3: return randomString();
    case 4: return chance(0.5) ? Buffer.from(Array.from({ length: int(64) }, () => int(256))) : undefined;
    case 5: return Array.from({ length: int(5) }, () => randomValue(depth - 1));
    case 6:
    case 7: {
      const o = {};
      for (let i = int(6); i > 0; i--) setKey(o, pick(KEYS), randomValue(depth - 1));
      return o;
    }
    default: return chance(0.5) ? Buffer.alloc(int(4096), int(256)) : { nested: randomValue(depth - 1) };
  }
}

/** o[k] = v as an own property, even for k = '__proto__' (which would otherwise set the prototype). */
function setKey(o, k, v) {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

function deep(depth) {
  let o = { leaf: 1 };
  for (let i = 0; i < depth; i++) o = chance(0.5) ? { sender_id: o } : [o];
  return o;
}

// ---------------------------------------------------------------------------------------------
// Payloads around a real setting: user `me` in conversation `mine`, another conversation
// `theirs` without `me`.

function validPayload(event, ctx) {
  switch (event) {
    case 'send-message':
      return { sender_id: ctx.me, conversation_id: ctx.mine, message_type: pick(['text', 'image', 'file']), content: `fuzz ${int(1e9)}` };
    case 'typing':
      return { conversationId: ctx.mine, userId: ctx.me, isTyping: chance(0.5) };
    // Message ids of the test's first messages: some are `me`'s, some another's, some none.
    case 'edit-message':
      return { conversationId: ctx.mine, messageId: 1 + int(60), content: `fuzz edit ${int(1e9)}` };
    case 'delete-message':
      return { conversationId: ctx.mine, messageId: 1 + int(60) };
    case 'react':
      return { conversationId: ctx.mine, messageId: 1 + int(60), emoji: pick(['👍', '🎉', ':+1:']), on: chance(0.5) };
    default:
      return { conversationId: ctx.mine };
  }
}

/** A valid payload with one to three fields replaced, removed or added. */
function mutated(event, ctx) {
  const p = validPayload(event, ctx);
  const keys = Object.keys(p);
  for (let i = 1 + int(3); i > 0; i--) {
    const k = chance(0.8) ? pick(keys) : pick(KEYS);
    switch (int(6)) {
      case 0: delete p[k]; break;
      case 1: setKey(p, k, randomString()); break;
      case 2: setKey(p, k, randomNumber()); break;
      case 3: setKey(p, k, pick([ctx.theirs, ctx.other, 999_999_999, 0, -ctx.mine, String(ctx.mine), `${ctx.mine}.0`, [ctx.mine], { id: ctx.mine }])); break;
      case 4: setKey(p, k, pick(['x'.repeat(MAX_CHARS + 1), 'x'.repeat(MAX_CHARS), '😀'.repeat(MAX_CHARS), '😀'.repeat(MAX_CHARS + 1), '', ' ', '\u0000'])); break;
      default: setKey(p, k, randomValue(2)); break;
    }
  }
  return p;
}

const UNKNOWN_EVENTS = ['hack', 'sendMessage', 'send_message', 'SEND-MESSAGE', 'send-message ', ' typing', 'join',
  'leave', 'message', 'error', 'toString', 'constructor', '__proto__', 'hasOwnProperty', 'joined-conversation',
  'receive-message', 'message-sent', 'user:online', 'x'.repeat(5000), '😀', '\u0000', ''];
const EVENTS = ['send-message', 'join-conversation', 'leave-conversation', 'typing', 'edit-message', 'delete-message',
  'react'];

function randomEmit(ctx) {
  const event = chance(0.8) ? pick(EVENTS) : pick(UNKNOWN_EVENTS);
  const roll = int(10);
  const payload = roll < 5 ? mutated(event, ctx) : roll < 8 ? randomValue(3) : roll < 9 ? deep(50 + int(150)) : validPayload(event, ctx);
  const args = [payload];
  if (chance(0.15)) for (let i = int(4); i > 0; i--) args.push(randomValue(2));
  if (chance(0.3)) args.push(() => {}); // with an acknowledgement callback
  return { event, args };
}

const nestedArrayJson = (depth) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
const nestedObjectJson = (depth) => `${'{"sender_id":'.repeat(depth)}1${'}'.repeat(depth)}`;

/** A raw engine.io message: a Socket.IO packet as text, often broken. */
function randomRawPacket(ctx) {
  const ev = JSON.stringify(chance(0.7) ? pick(EVENTS) : pick(UNKNOWN_EVENTS));
  const valid = JSON.stringify(validPayload('send-message', ctx));
  return pick([
    `2/chat,[${ev},${nestedArrayJson(500 + int(5000))}]`,
    `2/chat,[${ev},${nestedObjectJson(500 + int(5000))}]`,
    `2/chat,[${ev},{"sender_id":1e999999,"conversation_id":-0,"content":"\\ud800"}]`,
    `2/chat,[${ev},{"a":1,"a":2,"sender_id":${ctx.me},"sender_id":"${ctx.me}"}]`,
    `2/chat,[${ev},{`,
    `2/chat,[${ev}`,
    `2/chat,${ev}`,
    '2/chat,[]',
    '2/chat,[null]',
    '2/chat,[1,2,3]',
    '2/chat,[{},{}]',
    `2/chat,{"not":"an array"}`,
    `2/chat,[${ev},${valid}]garbage`,
    `2/chat,${int(1e6)}[${ev},${valid}]`,
    `2/chat,-1[${ev},${valid}]`,
    `2/chat,99999999999999999999[${ev},${valid}]`,
    `2/nope,[${ev},${valid}]`,
    `2[${ev},${valid}]`,
    `51-/chat,[${ev},{"_placeholder":true,"num":0}]`,
    `52-/chat,[${ev},{"_placeholder":true,"num":7}]`,
    `5999999999-/chat,[${ev},{"_placeholder":true,"num":0}]`,
    `3/chat,${int(1000)}[{"success":true}]`,
    '0/chat,{"userId":1}',
    '0/chat,',
    '4/chat,{"message":"x"}',
    '9/chat,[]',
    '',
    '2',
    `2/chat,["connect"]`,
    `2/chat,["disconnect","forced"]`,
    `2/chat,["disconnecting"]`,
    `2/chat,["newListener","send-message"]`,
    `2/chat,["__proto__",{"polluted":true}]`,
    `2/chat,[${ev},"${'q'.repeat(int(200_000))}"]`,
    `2/chat,[${JSON.stringify('e'.repeat(int(100_000)))},1]`,
    `2/chat,[${ev},${JSON.stringify(validPayload('send-message', ctx)).replace('"text"', '"text\\u0000"')}]`,
  ]);
}

// ---------------------------------------------------------------------------------------------
// REST

const ID_JUNK = ['0', '-1', '1.5', 'abc', '%00', '%FF', '%2e%2e', '..', '1e3', '0x10', ' 1', '1%20', '+1', '9'.repeat(40),
  '9223372036854775807', '9223372036854775808', '-9223372036854775808', '😀', 'null', 'undefined', '[]', '{}', '%252F', 'a/b',
  ''.padEnd(3000, '7')];
const QUERY_KEYS = ['page', 'limit', 'after', 'before', 'sort', 'x', '', 'page[]', 'limit[0]', '__proto__'];
const QUERY_VALUES = ['', '0', '-1', '1', '20', '100', '101', '1e3', '1.5', 'abc', '%00', '%FF', '%', '4294967296', '9'.repeat(30),
  '9223372036854775807', '-9223372036854775808', 'null', '😀', '%E2%82', ' 5', '5 '];

function randomQuery() {
  if (chance(0.1)) return pick(['?', '??', '?&&&', '?=', '?page', '?%', '?page=1&page=2', '?after=1&before=2', `?${'a'.repeat(10_000)}=1`]);
  const n = int(4);
  if (n === 0) return '';
  return `?${Array.from({ length: n }, () => `${pick(QUERY_KEYS)}=${pick(QUERY_VALUES)}`).join('&')}`;
}

/** One random REST request: { method, path, body?, headers?, expect } with `expect` 'ok' | 'bad' | 'any'. */
function randomRequest(ctx) {
  switch (int(7)) {
    case 0:
    case 1: {
      // POST /api/chats/conversations with a body of every kind.
      const roll = int(8);
      if (roll === 0) {
        const a = 2_000_000 + int(1000);
        const b = chance(0.2) ? a : 2_000_000 + int(1000);
        return { method: 'POST', path: '/api/chats/conversations', body: JSON.stringify({ sender_id: a, receiver_id: b }), expect: a === b ? 'bad' : 'ok' };
      }
      if (roll === 1) {
        const bad = pick([0, -1, 1.5, '5', null, true, [], {}, 2 ** 63, -(2 ** 63), 'x', undefined]);
        const o = chance(0.5) ? { sender_id: bad, receiver_id: 2_000_001 } : { sender_id: 2_000_001, receiver_id: bad };
        return { method: 'POST', path: '/api/chats/conversations', body: JSON.stringify(o), expect: 'bad' };
      }
      if (roll === 2) {
        return {
          method: 'POST',
          path: '/api/chats/conversations',
          body: pick(['', '{', 'null', '[]', '"x"', '1', 'true', '{"sender_id":1,}', '{"sender_id":9223372036854775808,"receiver_id":1}',
            '{"sender_id":1e2,"receiver_id":2}', '{"sender_id":1.0,"receiver_id":2}', `{"sender_id":${nestedArrayJson(3000)}}`,
            '\u0000\u0001', '{"sender_id":1,"receiver_id":1}', '{"sender_id":-5,"receiver_id":-6}']),
          expect: 'bad',
        };
      }
      if (roll === 3) return { method: 'POST', path: '/api/chats/conversations', body: Buffer.from(Array.from({ length: int(2048) }, () => int(256))), headers: { 'content-type': 'application/octet-stream' }, expect: 'bad' };
      if (roll === 4) return { method: 'POST', path: '/api/chats/conversations', body: JSON.stringify({ sender_id: 2_000_002, receiver_id: 2_000_003, pad: 'p'.repeat(int(3) === 0 ? 1_200_000 : 50_000) }), expect: 'any' };
      return { method: 'POST', path: '/api/chats/conversations', body: JSON.stringify(randomValue(3) ?? null), headers: chance(0.3) ? { 'content-type': pick(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '']) } : {}, expect: 'any' };
    }
    case 2:
    case 3: {
      const good = chance(0.4);
      const id = good ? String(pick([ctx.mine, ctx.theirs, 999_999_999])) : pick(ID_JUNK);
      return { method: 'GET', path: `/api/chats/conversations/${id}/messages${randomQuery()}`, expect: 'any' };
    }
    case 4: {
      const id = chance(0.4) ? String(pick([ctx.me, 1, 999_999_999])) : pick(ID_JUNK);
      return { method: 'GET', path: `/api/chats/users/${id}/conversations${chance(0.3) ? randomQuery() : ''}`, expect: 'any' };
    }
    case 5: {
      const method = pick(['PUT', 'DELETE', 'PATCH', 'OPTIONS', 'HEAD', 'GET', 'POST', 'TRACE']);
      const path = pick(['/api/chats/conversations', `/api/chats/conversations/${ctx.mine}/messages`, `/api/chats/users/${ctx.me}/conversations`,
        '/healthz', '/api/chats', '/api', '/', '/socket.io/', '/chat']);
      return { method, path, body: ['GET', 'HEAD', 'TRACE'].includes(method) ? undefined : JSON.stringify(randomValue(2) ?? null), expect: 'any' };
    }
    default: {
      const path = pick(['/api/chats/conversations/', '/api/chats/conversations//messages', `/api/chats/conversations/${ctx.mine}/messages/x`,
        '/api/chats/users//conversations', '/api/chats/users/1/conversations/2', '//api//chats', '/api/chats/conversations/%2F/messages',
        `/${'x'.repeat(8000)}`, '/api/chats/../../etc/passwd', '/api/chats/conversations/1/messages?page=1#frag', '/%00', '/api/%E2%82',
        '/socket.io/?EIO=4&transport=polling', '/socket.io/?EIO=3&transport=polling', '/socket.io/?EIO=4&transport=websocket',
        '/socket.io/?EIO=4&transport=polling&sid=nope', `/socket.io/?EIO=4&transport=polling&sid=${'s'.repeat(500)}`]);
      const method = pick(['GET', 'POST']);
      return { method, path, body: method === 'POST' ? pick(['40/chat,{}', '2/chat,["send-message",{}]', '', 'x']) : undefined, expect: 'any' };
    }
  }
}

/** One HTTP request with node:http (any method, the path as written); { status, text }, status 0 when no answer. */
function rawRequest(base, req) {
  return new Promise((resolve) => {
    const url = new URL(base);
    const headers = { ...(req.headers ?? {}) };
    if (req.body !== undefined && headers['content-type'] === undefined) headers['content-type'] = 'application/json';
    if (req.body !== undefined) headers['content-length'] = Buffer.byteLength(req.body);
    let done = false;
    const finish = (r) => {
      if (done) return;
      done = true;
      resolve(r);
    };
    let r;
    try {
      // Spaces and non-ASCII go out percent-encoded (as a browser would send them); the rest as written.
      const wirePath = req.path.replace(/[^\x21-\x7e]/gu, (ch) => encodeURIComponent(ch));
      // A connection of its own per request (agent: false): the server closes a connection after
      // answering early a request whose body it did not read, and a kept-alive connection reused
      // for the next request would then fail with EPIPE on the client side.
      r = http.request({ host: url.hostname, port: url.port, method: req.method, path: wirePath, headers, timeout: 15_000, agent: false }, (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => finish({ status: res.statusCode, text: Buffer.concat(chunks).toString() }));
        res.on('error', (e) => finish({ status: 0, text: `response: ${e.code ?? e.message}` }));
      });
    } catch (err) {
      finish({ status: -1, text: `not sent: ${err.message}` });
      return;
    }
    r.on('timeout', () => r.destroy(new Error('timeout after 15 s')));
    r.on('error', (e) => finish({ status: 0, text: `request: ${e.code ?? e.message}` }));
    if (req.body !== undefined) r.write(req.body);
    r.end();
  });
}

// ---------------------------------------------------------------------------------------------
// Database invariants

async function invariantViolations() {
  const sql = `select jsonb_build_object(
    'bad_type', (select count(*) from messages where message_type not in ('text', 'image', 'file')),
    'bad_content', (select count(*) from messages where (content = '' and deleted_at is null) or char_length(content) > ${MAX_CHARS}),
    'bad_tombstone', (select count(*) from messages where deleted_at is not null and content <> ''),
    'not_participant', (select count(*) from messages m left join conversations c on c.id = m.conversation_id
                        where c.id is null or m.sender_id not in (c.sender_id, c.receiver_id)),
    'bad_conversation', (select count(*) from conversations where sender_id = receiver_id or sender_id <= 0 or receiver_id <= 0),
    'messages', (select count(*) from messages),
    'conversations', (select count(*) from conversations))`;
  const res = await psql(sql, { database: srv.dbName });
  assert.ok(res.ok, `psql: ${res.stderr}`);
  return JSON.parse(res.stdout.trim());
}

async function examples(where) {
  const res = await psql(`select jsonb_agg(x) from (select id, conversation_id, sender_id, message_type, left(content, 80) as content, char_length(content) as chars from messages ${where} limit 5) x`, { database: srv.dbName });
  return res.stdout.trim();
}

// ---------------------------------------------------------------------------------------------

test('fuzz: thousands of random and malformed payloads at every event and REST route; the server keeps working and stores nothing invalid', async () => {
  console.log(`fuzz seed ${SEED} (FUZZ_SEED=${SEED} replays this run)`);
  const [me, peer, other1, other2] = srv.users(4);
  const mine = (await srv.openConversation(me, peer)).id;
  const theirs = (await srv.openConversation(other1, other2)).id;
  const ctx = { me, mine, theirs, other: other1 };
  const findings = []; // failures asserted at the end, once the server and database are checked
  const stats = { emits: 0, raw: 0, closedByServer: 0, reconnects: 0, sentAcks: 0, errors: 0, joinAcks: 0, rest: 0, restStatus: {} };
  const started = Date.now();

  // Attacker sockets: some per gateway, all user `me`; reopened when the server closes one.
  const attackers = [];
  const sentByAttackers = [];
  const open = async (gateway) => {
    const s = await srv.connect(me, { gateway });
    s.on('message-sent', (m) => { stats.sentAcks++; sentByAttackers.push(m); });
    s.on('message-error', () => { stats.errors++; });
    return s;
  };
  for (let i = 0; i < 4; i++) attackers.push(await open(i % 2));
  const live = async (i) => {
    if (!attackers[i].connected) {
      stats.closedByServer++;
      attackers[i].removeAllListeners();
      attackers[i] = await open(i % 2);
      stats.reconnects++;
    }
    return attackers[i];
  };

  // 1. Random events.
  for (let round = 0; round < SOCKET_ROUNDS; round++) {
    const i = round % attackers.length;
    const s = await live(i);
    const { event, args } = randomEmit(ctx);
    try {
      s.emit(event, ...args);
      stats.emits++;
    } catch (err) {
      // socket.io-client refuses reserved names itself; those go out raw below.
      assert.match(err.message, /reserved event name/);
    }
    if (round % 50 === 49) await sleep(20); // let the server breathe; payloads still overlap
  }

  // 2. Raw packets, broken on purpose.
  for (let round = 0; round < RAW_ROUNDS; round++) {
    const s = await live(round % attackers.length);
    s.io.engine.write(randomRawPacket(ctx));
    stats.raw++;
    if (round % 20 === 19) await sleep(20);
  }

  // 3. A flood of joins and leaves on one socket: own conversation (with and without
  //    lastMessageId), someone else's, unknown ones, junk ids, all at once with acks.
  const flooder = await srv.connect(me, { gateway: 0 });
  const floodEvents = {}; // what the flooding socket received, by event name
  flooder.onAny((name) => { floodEvents[name] = (floodEvents[name] ?? 0) + 1; });
  flooder.on('disconnect', (reason) => { floodEvents[`disconnect (${reason})`] = 1; });
  const noAck = [];
  const floodAcks = [];
  for (let k = 0; k < JOIN_FLOOD; k++) {
    const roll = int(6);
    const conversationId = pick([mine, mine, theirs, 999_999_999 - k, k + 1, -k, `${mine}`, null]);
    const payload = roll === 0 && k % 10 === 0
      ? { conversationId: mine, lastMessageId: pick([0, 1, mine, 2 ** 53, -1, 'x']) }
      : { conversationId };
    const event = roll < 4 ? 'join-conversation' : 'leave-conversation';
    // Every join is acknowledged (success or not); a leave only when its id is valid (a bad
    // one gets an `error` event instead).
    const acked = event === 'join-conversation' || (Number.isInteger(conversationId) && conversationId > 0);
    if (acked) {
      floodAcks.push(flooder.timeout(30_000).emitWithAck(event, payload).then(
        () => { stats.joinAcks++; },
        () => { noAck.push([event, payload]); },
      ));
    } else {
      flooder.emit(event, payload);
    }
  }
  await Promise.all(floodAcks);
  console.log(`fuzz: join flood: ${stats.joinAcks}/${floodAcks.length} acknowledged; the socket got ${safeJson(floodEvents)}`);
  // Every request is answered, or the socket is closed (a client too slow to read may be
  // disconnected; it then knows to reconnect): never left open with answers silently dropped.
  // (Checked at the end, after the server and the database.)
  if (stats.joinAcks !== floodAcks.length && flooder.connected) {
    findings.push(`join/leave acknowledgements within 30 s: ${stats.joinAcks}/${floodAcks.length}, and the socket is still connected ` +
      `(it got ${safeJson(floodEvents)}); unanswered, e.g. ${safeJson(noAck.slice(0, 8))}`);
  }
  // Ends out of the room: later messages of the conversation must not reach it.
  let leakedToFlooder = 0;
  if (flooder.connected) {
    assert.deepEqual(await flooder.timeout(5000).emitWithAck('leave-conversation', { conversationId: mine }), { success: true, conversationId: mine });
    flooder.on('receive-message', () => { leakedToFlooder++; });
  }

  // 4. REST, several requests in flight at a time, alternating gateways.
  const unexpected = [];
  const serverErrors = [];
  const oversized = []; // bodies over 1 MB that were accepted (checked by the next test)
  for (let round = 0; round < REST_ROUNDS; round += 12) {
    const batch = Array.from({ length: Math.min(12, REST_ROUNDS - round) }, (_, j) => {
      const req = randomRequest(ctx);
      const base = srv.gateways[(round + j) % srv.gateways.length];
      return rawRequest(base, req).then((res) => ({ req, res }));
    });
    for (const { req, res } of await Promise.all(batch)) {
      stats.rest++;
      stats.restStatus[res.status] = (stats.restStatus[res.status] ?? 0) + 1;
      const shown = { method: req.method, path: req.path.slice(0, 120), body: typeof req.body === 'string' ? req.body.slice(0, 120) : req.body ? `<${req.body.length} bytes>` : undefined, status: res.status, answer: res.text.slice(0, 200) };
      const huge = typeof req.body === 'string' && req.body.length > 1_000_000;
      if (res.status === -1) throw new Error(`the fuzzer built a request node:http refuses: ${safeJson(shown)}`);
      // A route that reads no body may answer (405, 404) before the body is sent, and close:
      // the client then sees a reset while still writing. Any other missing answer counts.
      const readsBody = req.method === 'POST' && req.path === '/api/chats/conversations';
      const earlyClose = res.status === 0 && req.body !== undefined && !readsBody && /ECONNRESET|EPIPE/.test(res.text);
      if (res.status >= 500) serverErrors.push(shown);
      else if (res.status === 0 && !huge && !earlyClose) serverErrors.push(shown); // no answer at all
      else if (req.expect === 'bad' && !(res.status >= 400 && res.status < 500)) unexpected.push(shown);
      else if (req.expect === 'ok' && !(res.status === 200 || res.status === 201)) unexpected.push(shown);
      else if (huge && !(res.status === 413 || res.status === 0)) oversized.push(shown);
    }
  }

  // 5. Junk handshakes.
  for (const userId of ['', '0', '-1', 'abc', '1.5', '0x10', ' ', '9'.repeat(40), '-0', '1e3', '😀', '%00', 'null', 'undefined', 'NaN']) {
    const s = srv.socket({ userId });
    const outcome = await new Promise((resolve) => {
      const timer = setTimeout(() => resolve('timeout'), 5000);
      s.on('error', (e) => { clearTimeout(timer); resolve(e?.message ?? 'error'); });
      s.on('connect_error', (e) => { clearTimeout(timer); resolve(`connect_error ${e.message}`); });
    });
    assert.equal(outcome, USERID_ERROR, `handshake with userId ${JSON.stringify(userId)}`);
    s.disconnect();
  }

  await sleep(1000); // the last sends are stored
  console.log(`fuzz: ${safeJson(stats)} in ${Date.now() - started} ms`);

  // The server is alive and healthy on both gateways.
  assert.ok(srv.isAlive(), 'every role still runs');
  for (const base of srv.gateways) {
    const health = await rawRequest(base, { method: 'GET', path: '/healthz' });
    assert.equal(health.status, 200, `${base}/healthz`);
  }
  if (serverErrors.length > 0) findings.push(`REST requests answered with 5xx or not at all: ${safeJson(serverErrors.slice(0, 5))}`);
  if (unexpected.length > 0) findings.push(`REST requests answered other than expected: ${safeJson(unexpected.slice(0, 5))}`);
  if (oversized.length > 0) console.log(`fuzz: ${oversized.length} request bodies over 1 MB were accepted (see the test "REST: …maximum payload…")`);
  assert.ok(stats.emits + stats.raw >= SOCKET_ROUNDS, `emitted ${stats.emits} + ${stats.raw} raw`);

  // Every message-sent an attacker got is a stored message of a conversation of theirs.
  for (const m of sentByAttackers) {
    assert.equal(m.sender_id, me);
    assert.ok(m.conversation?.sender_id === me || m.conversation?.receiver_id === me, `message-sent for a conversation without the sender: ${safeJson(m)}`);
  }

  // A normal pair of clients, one per gateway, works in every respect.
  const [x, y] = srv.users(2);
  const conv = await srv.openConversation(x, y);
  const sy = await srv.connect(y, { gateway: 1 });
  const online = srv.once(sy, 'user:online', 5000, (p) => p?.userId === x);
  const sx = await srv.connect(x, { gateway: 0 });
  assert.deepEqual(await online, { userId: x });
  await srv.join(sx, conv.id);
  await srv.join(sy, conv.id);
  const recv = srv.once(sy, 'receive-message', 5000);
  const sent = await srv.send(sx, x, conv.id, 'hello after the fuzz', 'text', 5000);
  assert.deepEqual(await recv, sent);
  assert.equal(sent.content, 'hello after the fuzz');
  const typing = srv.once(sy, 'user-typing', 5000);
  sx.emit('typing', { conversationId: conv.id, userId: x, isTyping: true });
  assert.deepEqual(await typing, { conversationId: conv.id, userId: x, isTyping: true });
  for (const gateway of [0, 1]) {
    const page = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages?page=1&limit=20`, undefined, { gateway });
    assert.equal(page.status, 200);
    // History items carry no conversation object, and what happened to the message since.
    const { conversation: _, ...stored } = sent;
    const untouched = { ...stored, edited_at: null, deleted_at: null, reactions: {} };
    assert.deepEqual(page.body.data, [untouched], `history via gateway ${gateway}`);
    const list = await srv.api('GET', `/api/chats/users/${x}/conversations`, undefined, { gateway });
    assert.equal(list.status, 200);
    assert.deepEqual(list.body.data.map((c) => c.id), [conv.id]);
  }
  const bad = await srv.api('POST', '/api/chats/conversations', { sender_id: x, receiver_id: x });
  assert.equal(bad.status, 400);

  // The attacked conversation still works, and the socket that flooded joins and left is out.
  const sme = await srv.connect(me, { gateway: 1 });
  const speer = await srv.connect(peer, { gateway: 0 });
  await srv.join(sme, mine);
  await srv.join(speer, mine);
  const recvMe = srv.once(sme, 'receive-message', 5000, (m) => m.content === 'still fine');
  const fine = await srv.send(speer, peer, mine, 'still fine', 'text', 5000);
  assert.deepEqual(await recvMe, fine);
  await sleep(500);
  assert.equal(leakedToFlooder, 0, 'the socket that left the conversation got its messages');

  // Nothing invalid reached the database.
  const v = await invariantViolations();
  console.log(`fuzz: database after the fuzz: ${safeJson(v)}`);
  assert.equal(v.bad_type, 0, `messages with a bad message_type: ${await examples("where message_type not in ('text','image','file')")}`);
  assert.equal(v.bad_content, 0, `messages with empty or too long content: ${await examples(`where (content = '' and deleted_at is null) or char_length(content) > ${MAX_CHARS}`)}`);
  assert.equal(v.bad_tombstone, 0, `deleted messages that kept content: ${await examples("where deleted_at is not null and content <> ''")}`);
  assert.equal(v.not_participant, 0, `messages whose sender is not a participant: ${await examples('m where not exists (select 1 from conversations c where c.id = m.conversation_id and m.sender_id in (c.sender_id, c.receiver_id))')}`);
  assert.equal(v.bad_conversation, 0, 'conversations with equal or non-positive users');
  assert.ok(v.messages >= 2, 'the normal messages are stored');

  assert.deepEqual(findings, [], 'the server answered the fuzz badly');
});

test('REST: a body over the maximum payload (1 MB) is refused, and bad input is answered in the documented error shape', async () => {
  // README: "A Socket.IO packet or HTTP body over the maximum payload (1 MB) closes that
  // client's connection"; GatewayConfig::max_payload_bytes: "Largest Socket.IO packet or HTTP
  // body accepted". And "REST (errors are {statusCode, error, message}, …)".
  const problems = [];
  const [a, b] = [3_000_001, 3_000_002];
  for (const gateway of srv.gateways) {
    const big = JSON.stringify({ sender_id: a, receiver_id: b, pad: 'p'.repeat(1_200_000) });
    const res = await rawRequest(gateway, { method: 'POST', path: '/api/chats/conversations', body: big });
    if (!(res.status === 413 || res.status === 0)) problems.push(`POST /api/chats/conversations with a ${big.length}-byte body → ${res.status} ${res.text.slice(0, 120)}`);
    for (const [method, path] of [
      ['GET', '/api/chats/conversations/%FF/messages'],
      ['GET', '/api/chats/users/%FF/conversations'],
      ['PUT', '/api/chats/conversations'],
      ['DELETE', '/api/chats/conversations/1/messages'],
    ]) {
      const r = await rawRequest(gateway, { method, path });
      let body = null;
      try { body = JSON.parse(r.text); } catch { /* checked below */ }
      const shaped = body !== null && body.statusCode === r.status && typeof body.error === 'string' && body.message !== undefined;
      if (!(r.status >= 400 && r.status < 500 && shaped)) problems.push(`${method} ${path} → ${r.status} ${JSON.stringify(r.text.slice(0, 120))}`);
    }
  }
  const stored = await psql(`select count(*) from conversations where sender_id = ${a}`, { database: srv.dbName });
  if (stored.stdout.trim() !== '0') problems.push(`the oversized request created a conversation (${stored.stdout.trim()} rows)`);
  assert.deepEqual(problems, [], 'REST contract violations');
});
