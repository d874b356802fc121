// The test client page in a real browser: two users, each in a browser context of their own,
// talk through the page the way people would. The server is the real binary, started by the
// end-to-end harness (all-in-one, or a cluster with the two pages on different gateways).

import assert from 'node:assert/strict';
import { test, useServer } from '../e2e/harness.mjs';
import {
  createConversation, inboxItem, joinConversation, openClient, screenshot, shownMessages, shownReceipt, typeMessage,
  useBrowser, waitForText,
} from './browser.mjs';

const srv = useServer();
const browser = useBrowser();
/** Page A talks to the first gateway, page B to the last (the same server in all-in-one mode). */
const gatewayA = () => srv.gateways[0];
const gatewayB = () => srv.gateways[srv.gateways.length - 1];

/** Two new users, each on a page of their own: A creates their conversation, B joins it by id. */
async function twoUsersTalking() {
  const [a, b] = srv.users(2);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  const pageB = await openClient(browser(), gatewayB(), { userId: b });
  const conversationId = await createConversation(pageA.page, b);
  await joinConversation(pageB.page, conversationId);
  return { a, b, pageA, pageB, conversationId };
}

test('two users connect, open a conversation, type, talk, and see each other leave', async () => {
  const { a, b, pageA, pageB } = await twoUsersTalking();

  // A types: B sees the indicator, which goes once A has been idle for a while.
  await typeMessage(pageA.page, 'Hello B', 30);
  await waitForText(pageB.page, '#typing', `User ${a} is typing…`);
  assert.equal(await pageB.page.isVisible('#typing'), true);
  await pageB.page.waitForSelector('#typing', { state: 'hidden', timeout: 5000 });

  // A sends: "sending", then "sent" on A; the message arrives on B.
  await pageA.page.click('#send');
  await pageA.page.waitForSelector('#messages > li.own[data-state="sent"]');
  await waitForText(pageB.page, '#messages > li:last-child .content', 'Hello B');
  const [sentOnA] = await shownMessages(pageA.page);
  const [seenOnB] = await shownMessages(pageB.page);
  assert.deepEqual(sentOnA, { id: sentOnA.id, state: 'sent', content: 'Hello B', own: true });
  assert.ok(Number.isInteger(sentOnA.id) && sentOnA.id > 0, `stored id: ${sentOnA.id}`);
  assert.deepEqual(seenOnB, { id: sentOnA.id, state: 'received', content: 'Hello B', own: false });
  assert.equal(await pageA.page.inputValue('#message'), '', 'the box is cleared after sending');

  // B answers with Enter; typing stops on send, so A's indicator goes without waiting.
  await typeMessage(pageB.page, 'Hi A!');
  await waitForText(pageA.page, '#typing', `User ${b} is typing…`);
  await pageB.page.keyboard.press('Enter');
  await waitForText(pageA.page, '#messages > li:last-child .content', 'Hi A!');
  await pageA.page.waitForSelector('#typing', { state: 'hidden', timeout: 2000 });
  assert.deepEqual((await shownMessages(pageA.page)).map((m) => [m.content, m.own]), [['Hello B', true], ['Hi A!', false]]);
  assert.deepEqual((await shownMessages(pageB.page)).map((m) => [m.content, m.state]), [['Hello B', 'received'], ['Hi A!', 'sent']]);

  // B closes the page: A sees B go offline.
  pageB.check();
  await pageB.close();
  await waitForText(pageA.page, `#presence li[data-user="${b}"]`, `User ${b}: offline`);
  await screenshot(pageA.page, `conversation-${srv.mode}`);
  pageA.check();
  await pageA.close();
});

test('a message with HTML in it shows as text, on both pages and in the history', async () => {
  const { b, pageA, pageB, conversationId } = await twoUsersTalking();

  const attack = '<img src=x onerror="window.__injected = 1"><b>bold</b> & <script>window.__injected = 2</script>';
  await pageA.page.fill('#message', attack);
  await pageA.page.click('#send');
  await pageA.page.waitForSelector('#messages > li.own[data-state="sent"]');
  await waitForText(pageB.page, '#messages > li:last-child .content', attack);

  // Reloaded from the history API, it is still text.
  const pageC = await openClient(browser(), gatewayB(), { userId: b });
  await joinConversation(pageC.page, conversationId);
  await waitForText(pageC.page, '#messages > li:last-child .content', attack);

  for (const { page } of [pageA, pageB, pageC]) {
    const found = await page.evaluate(() => ({
      elements: document.querySelectorAll('#messages img, #messages b, #messages script').length,
      injected: window.__injected,
      content: document.querySelector('#messages > li:last-child .content').textContent,
    }));
    assert.deepEqual(found, { elements: 0, injected: undefined, content: attack });
  }
  for (const client of [pageA, pageB, pageC]) {
    client.check();
    await client.close();
  }
});

test('history loads newest first, then older pages on demand, in order', async () => {
  const [a, b] = srv.users(2);
  const conversation = await srv.openConversation(a, b);
  const socket = await srv.connect(a);
  await srv.join(socket, conversation.id);
  const sent = [];
  for (let i = 1; i <= 27; i++) sent.push(await srv.send(socket, a, conversation.id, `m${i}`));
  socket.disconnect();

  const pageB = await openClient(browser(), gatewayB(), { userId: b });
  await joinConversation(pageB.page, conversation.id);
  await waitForText(pageB.page, '#messages > li:first-child .content', 'm8');
  let shown = await shownMessages(pageB.page);
  assert.deepEqual(shown.map((m) => m.content), sent.slice(7).map((m) => m.content), 'the newest 20');
  assert.deepEqual(shown.map((m) => m.id), sent.slice(7).map((m) => m.id));
  assert.equal(await pageB.page.isEnabled('#load-older'), true);

  await pageB.page.click('#load-older');
  await waitForText(pageB.page, '#messages > li:first-child .content', 'm1');
  shown = await shownMessages(pageB.page);
  assert.deepEqual(shown.map((m) => m.id), sent.map((m) => m.id), 'every message once, oldest first');
  assert.ok(shown.every((m) => m.state === 'stored' && !m.own));
  await waitForText(pageB.page, '#load-older', 'No older messages');
  assert.equal(await pageB.page.isEnabled('#load-older'), false);
  pageB.check();
  await pageB.close();
});

test('a send the server refuses shows as failed, with the reason', async () => {
  const [a, b] = srv.users(2);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  await createConversation(pageA.page, b);

  await pageA.page.fill('#message', 'x'.repeat(10_001));
  await pageA.page.click('#send');
  const reason = 'content must be shorter than or equal to 10000 characters';
  await waitForText(pageA.page, '#messages > li:last-child .state', `failed: ${reason}`);
  const [row] = await shownMessages(pageA.page);
  assert.deepEqual({ ...row, content: row.content.length }, { id: null, state: 'failed', content: 10_001, own: true });
  await waitForText(pageA.page, '#errors > li:last-child', new RegExp(`message-error: ${reason}$`));

  // The next send still works, and is not mistaken for the failed one.
  await pageA.page.fill('#message', 'short enough');
  await pageA.page.click('#send');
  await pageA.page.waitForSelector('#messages > li[data-state="sent"]');
  assert.deepEqual((await shownMessages(pageA.page)).map((m) => m.state), ['failed', 'sent']);
  pageA.check();
  await pageA.close();
});

test('joining a conversation of other users is refused and shown as an error', async () => {
  const [a, b, c] = srv.users(3);
  const theirs = await srv.openConversation(b, c);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  await pageA.page.fill('#conversation-id', String(theirs.id));
  await pageA.page.click('#join');
  await waitForText(pageA.page, '#errors > li:last-child', /error: Unauthorized to join this conversation$/);
  assert.equal(await pageA.page.textContent('#joined'), '');
  assert.equal(await pageA.page.isEnabled('#send'), false, 'nothing to send to');
  pageA.check();
  await pageA.close();
});

test('the inbox shows an unread message; opening it reads it: two ticks for the sender, no badge left', async () => {
  const [a, b] = srv.users(2);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  const pageB = await openClient(browser(), gatewayB(), { userId: b });
  // B's page loads its inbox a moment after connecting; were that load to come after A's send,
  // it would bring the message to B's device (one tick) before the test looks.
  await pageB.page.waitForSelector('#inbox[data-pages]');
  const conversationId = await createConversation(pageA.page, b);
  const item = inboxItem(conversationId);

  const text = 'Lunch at <b>noon</b> & <img src=x onerror="window.__injected = 1">?';
  await pageA.page.fill('#message', text);
  await pageA.page.click('#send');
  await pageA.page.waitForSelector('#messages > li.own[data-state="sent"]');
  const [sent] = await shownMessages(pageA.page);
  assert.deepEqual(await shownReceipt(pageA.page, sent.id).then((r) => [r.receipt, r.ticks]), ['none', ''], 'B has not got it yet');

  // B has joined nothing, so no event tells its page about the message: Refresh asks the server.
  await pageB.page.click('#inbox-refresh');
  await waitForText(pageB.page, `${item} .unread`, '1');
  await waitForText(pageB.page, '#total-unread', '1');
  const listed = await pageB.page.$eval(item, (li) => ({
    unread: li.dataset.unread,
    badgeShown: !li.querySelector('.unread').hidden,
    peer: li.querySelector('.inbox-peer').textContent,
    preview: li.querySelector('.inbox-preview').textContent,
    markup: li.querySelectorAll('b, img').length,
  }));
  assert.deepEqual(listed, { unread: '1', badgeShown: true, peer: `User ${a}`, preview: text, markup: 0 });
  assert.equal(await pageB.page.evaluate(() => window.__injected), undefined);
  await screenshot(pageB.page, `inbox-unread-${srv.mode}`);

  // The list brought the message to B's device: A sees one tick.
  await pageA.page.waitForSelector(`#messages > li[data-id="${sent.id}"][data-receipt="delivered"]`);
  const delivered = await shownReceipt(pageA.page, sent.id);
  assert.equal(delivered.ticks, '\u2713');

  // B opens the conversation from the inbox, in a visible tab: it is read.
  assert.equal(await pageB.page.evaluate(() => document.visibilityState), 'visible');
  await pageB.page.click(`${item} .inbox-open`);
  await waitForText(pageB.page, '#joined', `joined conversation ${conversationId}`);
  await waitForText(pageB.page, '#messages > li:last-child .content', text);
  await pageA.page.waitForSelector(`#messages > li[data-id="${sent.id}"][data-receipt="read"]`);
  const read = await shownReceipt(pageA.page, sent.id);
  assert.equal(read.ticks, '\u2713\u2713');
  assert.notEqual(read.color, delivered.color, 'read ticks look different from delivered ones');

  // B's badge goes to 0, and its item is the open one.
  await pageB.page.waitForSelector(`${item}[data-unread="0"].current`);
  await waitForText(pageB.page, '#total-unread', '0');
  assert.equal(await pageB.page.isHidden(`${item} .unread`), true, 'no badge for 0');
  assert.equal(await pageB.page.textContent(`${item} .unread`), '0');

  // A's own inbox: its message counts as read by A, and shows B's two ticks.
  await pageA.page.waitForSelector(`${item} .ticks[data-receipt="read"]`);
  await waitForText(pageA.page, `${item} .inbox-preview`, `You: ${text}`);
  await waitForText(pageA.page, '#total-unread', '0');
  await screenshot(pageA.page, `inbox-sender-${srv.mode}`);
  await screenshot(pageB.page, `inbox-reader-${srv.mode}`);

  // A page opened later gets no receipt event for what happened before it joined: its ticks
  // come from the inbox list's positions.
  const pageA2 = await openClient(browser(), gatewayB(), { userId: a });
  await joinConversation(pageA2.page, conversationId);
  await pageA2.page.waitForSelector(`#messages > li[data-id="${sent.id}"][data-receipt="read"]`);

  for (const client of [pageA, pageB, pageA2]) {
    client.check();
    await client.close();
  }
});

test('a group from the page: create it, talk, add a member, make a moderator, remove a member', async () => {
  const [a, b, c] = srv.users(3);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  const pageB = await openClient(browser(), gatewayB(), { userId: b });
  const pageC = await openClient(browser(), gatewayB(), { userId: c });

  await pageA.page.fill('#group-name', 'Book club');
  await pageA.page.fill('#group-members', String(b));
  await pageA.page.click('#create-group');
  await waitForText(pageA.page, '#joined', /^joined conversation \d+$/);
  const groupId = Number(await pageA.page.inputValue('#conversation-id'));
  // The panel shows once the join has loaded the history (after "joined" is written).
  await pageA.page.waitForSelector('#members-panel:not([hidden])', { timeout: 5000 });

  // B finds the group in the inbox, by its name, and opens it.
  await pageB.page.click('#inbox-refresh');
  await waitForText(pageB.page, `${inboxItem(groupId)} .inbox-peer`, 'Group Book club');
  await pageB.page.click(`${inboxItem(groupId)} .inbox-open`);
  await waitForText(pageB.page, '#joined', `joined conversation ${groupId}`);
  await pageB.page.waitForSelector('#members-panel:not([hidden])');

  await pageA.page.fill('#message', 'Welcome to the club');
  await pageA.page.click('#send');
  await waitForText(pageB.page, '#messages > li:last-child .content', 'Welcome to the club');

  // A adds C: everyone in the room sees the line; C can then open the group.
  await pageA.page.fill('#member-id', String(c));
  await pageA.page.click('#add-member');
  for (const { page } of [pageA, pageB]) {
    await waitForText(page, '#messages > li.member-change:last-child', `User ${c} added (member) by user ${a}`);
  }
  await joinConversation(pageC.page, groupId);

  // A makes B a moderator; B removes C, whose page leaves the group.
  await pageA.page.fill('#member-id', String(b));
  await pageA.page.selectOption('#member-role', 'moderator');
  await pageA.page.click('#set-role');
  await waitForText(pageB.page, '#messages > li.member-change:last-child', `You made moderator by user ${a}`);
  await pageB.page.fill('#member-id', String(c));
  await pageB.page.click('#remove-member');
  await waitForText(pageA.page, '#messages > li.member-change:last-child', `User ${c} removed (member) by user ${b}`);
  await waitForText(pageC.page, '#messages > li.member-change:last-child', `You removed (member) by user ${b}`);
  await pageC.page.waitForSelector('#send[disabled]');
  await screenshot(pageA.page, `group-${srv.mode}`);
  for (const client of [pageA, pageB, pageC]) {
    client.check();
    await client.close();
  }
});
