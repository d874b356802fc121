// The secure mode: JWT authentication (HS256 secret, RS256 and ES256 keys from a JWKS file),
// authorization on every path, and what an attacker gets for each attack: the documented
// error, and nothing of anybody else's.

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test, useServer } from './harness.mjs';

const SECRET = crypto.randomBytes(32).toString('hex');
const AUDIENCE = 'chat-api';
const rsa = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const intruder = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const jwk = (key, kid, alg) => ({ ...key.export({ format: 'jwk' }), kid, alg, use: 'sig' });
const keysDir = mkdtempSync(path.join(os.tmpdir(), 'chat-jwks-'));
const jwksFile = path.join(keysDir, 'jwks.json');
writeFileSync(jwksFile, JSON.stringify({ keys: [jwk(rsa.publicKey, 'rsa-1', 'RS256'), jwk(ec.publicKey, 'ec-1', 'ES256')] }));

// This file's server runs in the secure mode.
Object.assign(process.env, {
  CHAT_AUTH: 'jwt',
  CHAT_JWT_SECRET: SECRET,
  CHAT_JWT_JWKS_FILE: jwksFile,
  CHAT_JWT_AUDIENCE: AUDIENCE,
});

const srv = useServer();

const b64 = (value) => Buffer.from(typeof value === 'string' ? value : JSON.stringify(value)).toString('base64url');
const now = () => Math.floor(Date.now() / 1000);

/** A signed JWT; `alg` HS256 (the shared secret), RS256 or ES256 (`key`, `kid`). */
function sign(claims, { alg = 'HS256', secret = SECRET, key, kid } = {}) {
  const header = { alg, typ: 'JWT', ...(kid ? { kid } : {}) };
  const input = `${b64(header)}.${b64({ aud: AUDIENCE, exp: now() + 300, ...claims })}`;
  let signature;
  if (alg === 'HS256') signature = crypto.createHmac('sha256', secret).update(input).digest();
  else if (alg === 'RS256') signature = crypto.sign('sha256', Buffer.from(input), key);
  else signature = crypto.sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}
const tokenFor = (userId, extra = {}) => sign({ sub: String(userId), ...extra });

/** Connects with a token in the Socket.IO auth payload (or other options); resolves the socket. */
function connectAs(userId, opts = {}) {
  const { token = tokenFor(userId), query = {}, ...rest } = opts;
  const s = srv.socket({ ...query }, { gateway: userId % 2 === 1 ? 0 : 1, auth: { token }, ...rest });
  return new Promise((resolve, reject) => {
    s.once('connect', () => resolve(s));
    s.once('error', (e) => reject(new Error(e.message)));
    s.once('connect_error', reject);
  });
}

/** A connection attempt that must be refused with `message`. */
async function refused(message, query, opts) {
  const s = srv.socket(query, opts);
  const [error, reason] = await Promise.all([srv.once(s, 'error'), srv.once(s, 'disconnect')]);
  assert.deepEqual(error, { message });
  assert.equal(reason, 'io server disconnect');
}

const bearer = (userId) => ({ headers: { authorization: `Bearer ${tokenFor(userId)}` } });

test('without a token nobody connects, whatever userId they claim', async () => {
  await refused('Authentication required: present a bearer token', { userId: 1 });
  await refused('Authentication required: present a bearer token', {});
});

test('a token is accepted from the auth payload, the query, or an Authorization header', async () => {
  const [a] = srv.users(1);
  await connectAs(a);
  await connectAs(a, { auth: {}, query: { token: tokenFor(a) } });
  await connectAs(a, { auth: {}, extraHeaders: { authorization: `Bearer ${tokenFor(a)}` } });
  await connectAs(a, { query: { userId: a } }); // a userId that agrees is fine
});

test('RS256 and ES256 tokens verify against the JWKS keys named by kid', async () => {
  const [a] = srv.users(1);
  await connectAs(a, { token: sign({ sub: String(a) }, { alg: 'RS256', key: rsa.privateKey, kid: 'rsa-1' }) });
  await connectAs(a, { token: sign({ sub: String(a) }, { alg: 'ES256', key: ec.privateKey, kid: 'ec-1' }) });
});

test('expired, early, forged, wrong-key, wrong-audience and impersonating tokens are refused', async () => {
  const [a, b] = srv.users(2);
  const cases = [
    ['Invalid token: expired', tokenFor(a, { exp: now() - 600 })],
    ['Invalid token: not valid yet', tokenFor(a, { nbf: now() + 600 })],
    ['Invalid token: bad signature', sign({ sub: String(a) }, { secret: 'not-the-secret' })],
    ['Invalid token: bad signature', sign({ sub: String(a) }, { alg: 'RS256', key: intruder.privateKey, kid: 'rsa-1' })],
    ['Invalid token: wrong audience', tokenFor(a, { aud: 'another-api' })],
    ['Invalid token: malformed', 'garbage'],
    ['Invalid token: malformed', `${b64({ alg: 'none', typ: 'JWT' })}.${b64({ sub: String(a), exp: now() + 60 })}.`],
    ['Invalid token: no key for its algorithm or key id', (() => {
      const input = `${b64({ alg: 'HS384', typ: 'JWT' })}.${b64({ sub: String(a), aud: AUDIENCE, exp: now() + 60 })}`;
      return `${input}.${crypto.createHmac('sha384', SECRET).update(input).digest('base64url')}`;
    })()],
  ];
  for (const [message, token] of cases) await refused(message, {}, { auth: { token } });
  // impersonation through the query: the token says a, the query says b
  await refused('userId does not match the token', { userId: b }, { auth: { token: tokenFor(a) } });
});

test('a socket sends only as itself, and only into its own conversations', async () => {
  const [victim, other, attacker] = srv.users(3);
  const conv = (await srv.api('POST', '/api/chats/conversations', { sender_id: victim, receiver_id: other }, bearer(victim))).body;
  const s = await connectAs(attacker);
  const err = (payload) => {
    const answer = srv.once(s, 'message-error');
    s.emit('send-message', { message_type: 'text', content: 'hi', ...payload });
    return answer;
  };
  assert.deepEqual(await err({ sender_id: victim, conversation_id: conv.id }), { error: 'Unauthorized to send as another user' });
  assert.deepEqual(await err({ sender_id: attacker, conversation_id: conv.id }), { error: 'Unauthorized to send to this conversation' });
  const history = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages`, undefined, bearer(victim));
  assert.equal(history.body.total, 0, 'nothing was stored');
});

test("joining, typing into and reading someone else's conversation leak nothing", async () => {
  const [victim, other, attacker] = srv.users(3);
  const conv = (await srv.api('POST', '/api/chats/conversations', { sender_id: victim, receiver_id: other }, bearer(victim))).body;
  const v = await connectAs(victim);
  await srv.join(v, conv.id);
  const s = await connectAs(attacker);
  const leaked = [];
  for (const event of ['receive-message', 'user-typing', 'user:online', 'user:offline']) s.on(event, (d) => leaked.push([event, d]));

  const ack = await s.timeout(3000).emitWithAck('join-conversation', { conversationId: conv.id });
  assert.deepEqual(ack, { success: false, conversationId: conv.id, error: 'Unauthorized to join this conversation' });
  const typing = srv.once(s, 'error');
  s.emit('typing', { conversationId: conv.id, userId: attacker, isTyping: true });
  assert.deepEqual(await typing, { message: 'Join the conversation before typing in it' });
  const replay = await s.timeout(3000).emitWithAck('join-conversation', { conversationId: conv.id, lastMessageId: 0 });
  assert.equal(replay.success, false, 'no replay of history either');

  await srv.send(v, victim, conv.id, 'private');
  const read = await srv.api('GET', `/api/chats/conversations/${conv.id}/messages`, undefined, bearer(attacker));
  assert.equal(read.status, 403);
  assert.equal(read.body.message, 'Unauthorized to read this conversation');
  assert.ok(!JSON.stringify(read.body).includes('private'));
  const list = await srv.api('GET', `/api/chats/users/${victim}/conversations`, undefined, bearer(attacker));
  assert.equal(list.status, 403);
  const open = await srv.api('POST', '/api/chats/conversations', { sender_id: victim, receiver_id: other }, bearer(attacker));
  assert.equal(open.status, 403, 'a conversation is opened only by one of its pair');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(leaked, [], 'the attacker heard nothing');
});

test('REST needs a valid bearer token in the secure mode', async () => {
  const [a, b] = srv.users(2);
  const none = await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: b });
  assert.equal(none.status, 401);
  assert.equal(none.body.message, 'Authentication required: present a bearer token');
  const expired = await srv.api('GET', `/api/chats/users/${a}/conversations`, undefined, {
    headers: { authorization: `Bearer ${tokenFor(a, { exp: now() - 600 })}` },
  });
  assert.equal(expired.status, 401);
  assert.equal(expired.body.message, 'Invalid token: expired');
  const mine = await srv.api('POST', '/api/chats/conversations', { sender_id: a, receiver_id: b }, bearer(a));
  assert.equal(mine.status, 201);
  const own = await srv.api('GET', `/api/chats/users/${a}/conversations`, undefined, bearer(a));
  assert.deepEqual(own.body.data.map((c) => c.id), [mine.body.id]);
});
