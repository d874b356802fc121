// The page and the docs with JWT authentication on: the static files need no token, the REST
// API still does, and two users who hold tokens talk through the page (token field only; the
// page reads the user id from the token and sends it as `Authorization: Bearer` on REST).

import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import { test, useServer } from '../e2e/harness.mjs';
import {
  createConversation, joinConversation, openClient, openPage, shownMessages, useBrowser, waitForText,
} from './browser.mjs';

const SECRET = crypto.randomBytes(32).toString('hex');
Object.assign(process.env, { CHAT_AUTH: 'jwt', CHAT_JWT_SECRET: SECRET });

const srv = useServer();
const browser = useBrowser();

/** An HS256 token for `userId`, valid for five minutes. */
function tokenFor(userId) {
  const part = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
  const input = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: String(userId), exp: Math.floor(Date.now() / 1000) + 300 })}`;
  return `${input}.${crypto.createHmac('sha256', SECRET).update(input).digest('base64url')}`;
}

test('the page, its scripts and the docs load without a token; the REST API does not', async () => {
  for (const p of ['/', '/assets/client.js', '/assets/socket.io.min.js', '/assets/style.css', '/api/docs', '/api/docs/openapi.json']) {
    const res = await srv.api('GET', p);
    assert.equal(res.status, 200, `GET ${p} without a token`);
  }
  const [a] = srv.users(1);
  const refused = await srv.api('GET', `/api/chats/users/${a}/conversations`);
  assert.equal(refused.status, 401);
  assert.equal(refused.body.statusCode, 401);
});

test('with tokens, two users open a conversation and talk through the page', async () => {
  const [a, b] = srv.users(2);
  const pageA = await openClient(browser(), srv.gateways[0], { token: tokenFor(a) });
  const pageB = await openClient(browser(), srv.gateways[srv.gateways.length - 1], { token: tokenFor(b) });
  await waitForText(pageA.page, '#status', `connected as user ${a}`);

  const conversationId = await createConversation(pageA.page, b); // REST with the bearer token
  await joinConversation(pageB.page, conversationId);
  await pageA.page.fill('#message', 'signed and sealed');
  await pageA.page.click('#send');
  await waitForText(pageB.page, '#messages > li:last-child .content', 'signed and sealed');
  assert.deepEqual((await shownMessages(pageA.page)).map((m) => m.state), ['sent']);
  for (const client of [pageA, pageB]) {
    client.check();
    await client.close();
  }
});

test('a page with a bad token is refused and says why', async () => {
  const client = await openPage(browser(), `${srv.gateways[0]}/`);
  const token = tokenFor(1);
  await client.page.fill('#token', `${token.slice(0, -4)}${token.endsWith('AAAA') ? 'QQQQ' : 'AAAA'}`);
  await client.page.click('#connect');
  await waitForText(client.page, '#errors > li:last-child', /error: Invalid token: bad signature$/);
  await waitForText(client.page, '#status', 'disconnected (io server disconnect)');
  client.check();
  await client.close();
});
