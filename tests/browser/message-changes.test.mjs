// Edits, deletes and reactions through the test client page, in a real browser: two users, each
// in a browser context of their own, on two gateways in cluster mode. Each change is made by
// clicking the message's controls, and each page is checked to show it; a page opened (or
// reloaded) later gets it from the history. Every wait is for a selector in a given state, never
// a sleep: an event's effect shows some time after the event.

import assert from 'node:assert/strict';
import { test, useServer } from '../e2e/harness.mjs';
import {
  createConversation, inboxItem, joinConversation, messageRow, openClient, screenshot, shownChanges, useBrowser,
  waitForText,
} from './browser.mjs';

const srv = useServer();
const browser = useBrowser();
const gatewayA = () => srv.gateways[0];
const gatewayB = () => srv.gateways[srv.gateways.length - 1];

const THUMBS = '\u{1F44D}';
const HEART = '\u2764\uFE0F';
const LAUGH = '\u{1F602}';
/** What a message's reaction buttons show: the page's fixed three, with `counts` ({emoji: [count, mine]}). */
function reactions(counts = {}) {
  const shown = {};
  for (const emoji of [THUMBS, HEART, LAUGH, ...Object.keys(counts)]) {
    const [count, mine] = counts[emoji] ?? [0, false];
    shown[emoji] = { count, mine };
  }
  return shown;
}
const TOMBSTONE = { content: 'message deleted', edited: false, deleted: true, actions: [], reactions: {} };

/** Two new users, each on a page of their own: A creates their conversation, B joins it by id. */
async function twoUsersTalking() {
  const [a, b] = srv.users(2);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  const pageB = await openClient(browser(), gatewayB(), { userId: b });
  const conversationId = await createConversation(pageA.page, b);
  await joinConversation(pageB.page, conversationId);
  return { a, b, pageA, pageB, conversationId };
}

/** Sends `text` from the page; resolves with the stored message's id once it shows as sent. */
async function sendFromPage(page, text) {
  await page.fill('#message', text);
  await page.click('#send');
  const row = page.locator('#messages > li.own[data-state="sent"]', { hasText: text }).last();
  await row.waitFor({ state: 'attached', timeout: 10_000 });
  const id = Number(await row.getAttribute('data-id'));
  assert.ok(Number.isSafeInteger(id) && id > 0, `stored id: ${id}`);
  return id;
}

/** Waits until the page shows message `id` as a tombstone: "message deleted", no controls. */
async function waitForTombstone(page, id) {
  await page.waitForSelector(`${messageRow(id)}[data-deleted="true"]`, { state: 'attached', timeout: 10_000 });
  await waitForText(page, `${messageRow(id)} .content`, 'message deleted');
  await page.waitForSelector(`${messageRow(id)} .reactions`, { state: 'detached', timeout: 10_000 });
  assert.deepEqual(await shownChanges(page, id), TOMBSTONE);
}

test('edit, react and delete through the page: both users see each change, and a reload shows the tombstone', async () => {
  const { b, pageA, pageB, conversationId } = await twoUsersTalking();
  const id = await sendFromPage(pageA.page, 'Meet at 10?');
  const row = messageRow(id);
  await waitForText(pageB.page, `${row} .content`, 'Meet at 10?');

  // A may edit and delete its own message; B may only react to it.
  await pageA.page.waitForSelector(`${row} .message-actions .edit-message`, { state: 'visible' });
  await pageB.page.waitForSelector(`${row} .reactions .reaction[data-emoji="${THUMBS}"]`, { state: 'visible' });
  assert.deepEqual(await shownChanges(pageA.page, id),
    { content: 'Meet at 10?', edited: false, deleted: false, actions: ['edit', 'delete'], reactions: reactions() });
  assert.deepEqual(await shownChanges(pageB.page, id),
    { content: 'Meet at 10?', edited: false, deleted: false, actions: [], reactions: reactions() });

  // A edits in place (HTML in the new text shows as text): both pages show the new content, "(edited)".
  const edited = 'Meet at <b>11</b>?';
  await pageA.page.click(`${row} .edit-message`);
  await pageA.page.waitForSelector(`${row} .edit-input`, { state: 'visible' });
  assert.equal(await pageA.page.inputValue(`${row} .edit-input`), 'Meet at 10?', 'the box starts with the text');
  await pageA.page.fill(`${row} .edit-input`, edited);
  await pageA.page.click(`${row} .edit-save`);
  await pageA.page.waitForSelector(`${row} .edit-form`, { state: 'detached' });
  for (const { page } of [pageA, pageB]) {
    await page.waitForSelector(`${row}[data-edited="true"] .edited`, { state: 'visible' });
    await waitForText(page, `${row} .content`, edited);
    await waitForText(page, `${row} .edited`, '(edited)');
    assert.equal(await page.locator('#messages b').count(), 0, 'no markup from the content');
  }

  // B reacts with a thumbs up: its own (pressed) on B's page, a count of 1 on both.
  await pageB.page.click(`${row} .reaction[data-emoji="${THUMBS}"]`);
  await pageB.page.waitForSelector(`${row} .reaction[data-emoji="${THUMBS}"][data-count="1"][data-mine="true"]`);
  await pageA.page.waitForSelector(`${row} .reaction[data-emoji="${THUMBS}"][data-count="1"][data-mine="false"]`);
  await waitForText(pageA.page, `${row} .reaction[data-emoji="${THUMBS}"]`, `${THUMBS} 1`);
  assert.deepEqual((await shownChanges(pageA.page, id)).reactions, reactions({ [THUMBS]: [1, false] }));

  // Another page of B, opened now, gets all that from the history (B's own reaction included).
  const pageB2 = await openClient(browser(), gatewayA(), { userId: b });
  await joinConversation(pageB2.page, conversationId);
  await pageB2.page.waitForSelector(`${row} .reaction[data-emoji="${THUMBS}"][data-count="1"]`);
  assert.deepEqual(await shownChanges(pageB2.page, id),
    { content: edited, edited: true, deleted: false, actions: [], reactions: reactions({ [THUMBS]: [1, true] }) });
  await screenshot(pageA.page, `message-changes-${srv.mode}`);

  // A deletes it: a tombstone without controls on every page.
  await pageA.page.click(`${row} .delete-message`);
  for (const { page } of [pageA, pageB, pageB2]) await waitForTombstone(page, id);

  // B's page reloaded: the history shows the tombstone.
  await pageB.page.reload();
  await pageB.page.waitForSelector('body[data-ready="true"]');
  await pageB.page.fill('#user-id', String(b));
  await pageB.page.click('#connect');
  await waitForText(pageB.page, '#status', `connected as user ${b}`);
  await joinConversation(pageB.page, conversationId);
  await waitForTombstone(pageB.page, id);

  for (const client of [pageA, pageB, pageB2]) {
    client.check();
    await client.close();
  }
});

test('a refused edit shows the reason on the message and in the errors; the content stays until an edit is accepted', async () => {
  const [a, b] = srv.users(2);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  await createConversation(pageA.page, b);
  const id = await sendFromPage(pageA.page, 'short');
  const row = messageRow(id);

  await pageA.page.click(`${row} .edit-message`);
  await pageA.page.waitForSelector(`${row} .edit-input`, { state: 'visible' });
  await pageA.page.fill(`${row} .edit-input`, 'x'.repeat(10_001));
  await pageA.page.click(`${row} .edit-save`);
  const reason = 'content must be shorter than or equal to 10000 characters';
  await waitForText(pageA.page, `${row} .change-error`, `edit-message failed: ${reason}`);
  // The ack's reason, and the server's `error` event.
  await pageA.page.locator('#errors > li', { hasText: `edit-message #${id}: ${reason}` }).waitFor({ timeout: 10_000 });
  await pageA.page.locator('#errors > li', { hasText: `error: ${reason}` }).waitFor({ timeout: 10_000 });
  // The box stays open with the text, to be fixed; the message is unchanged.
  await pageA.page.waitForSelector(`${row} .edit-input:not([disabled])`, { state: 'visible' });
  assert.equal((await pageA.page.inputValue(`${row} .edit-input`)).length, 10_001);
  assert.deepEqual({ ...(await shownChanges(pageA.page, id)), reactions: null },
    { content: 'short', edited: false, deleted: false, actions: ['edit', 'delete'], reactions: null });

  // Cancel, then an edit that is accepted (Enter saves): the reason goes.
  await pageA.page.click(`${row} .edit-cancel`);
  await pageA.page.waitForSelector(`${row} .edit-form`, { state: 'detached' });
  await pageA.page.waitForSelector(`${row} .content`, { state: 'visible' });
  await pageA.page.click(`${row} .edit-message`);
  await pageA.page.fill(`${row} .edit-input`, 'short, and fixed');
  await pageA.page.press(`${row} .edit-input`, 'Enter');
  await pageA.page.waitForSelector(`${row}[data-edited="true"] .edited`, { state: 'visible' });
  await waitForText(pageA.page, `${row} .content`, 'short, and fixed');
  await pageA.page.waitForSelector(`${row} .change-error`, { state: 'detached' });
  pageA.check();
  await pageA.close();
});

test("in a group the owner deletes a member's message, and a member made moderator may delete others'", async () => {
  const [a, b] = srv.users(2);
  const pageA = await openClient(browser(), gatewayA(), { userId: a });
  const pageB = await openClient(browser(), gatewayB(), { userId: b });

  await pageA.page.fill('#group-name', 'Moderated');
  await pageA.page.fill('#group-members', String(b));
  await pageA.page.click('#create-group');
  await waitForText(pageA.page, '#joined', /^joined conversation \d+$/);
  const groupId = Number(await pageA.page.inputValue('#conversation-id'));
  await pageA.page.waitForSelector('#members-panel:not([hidden])');
  await pageB.page.click('#inbox-refresh');
  await waitForText(pageB.page, `${inboxItem(groupId)} .inbox-peer`, 'Group Moderated');
  await pageB.page.click(`${inboxItem(groupId)} .inbox-open`);
  await waitForText(pageB.page, '#joined', `joined conversation ${groupId}`);
  await pageB.page.waitForSelector('#members-panel:not([hidden])');

  // B (a member) writes; A, the owner, may delete it but not edit it.
  const fromB = await sendFromPage(pageB.page, 'spam spam spam');
  await waitForText(pageA.page, `${messageRow(fromB)} .content`, 'spam spam spam');
  await pageA.page.waitForSelector(`${messageRow(fromB)} .delete-message`, { state: 'visible' });
  assert.deepEqual((await shownChanges(pageA.page, fromB)).actions, ['delete']);
  assert.deepEqual((await shownChanges(pageB.page, fromB)).actions, ['edit', 'delete']);

  // A writes; B, a plain member, may not delete it, until A makes B a moderator.
  const fromA = await sendFromPage(pageA.page, 'house rules');
  await waitForText(pageB.page, `${messageRow(fromA)} .content`, 'house rules');
  await pageB.page.waitForSelector(`${messageRow(fromA)} .reactions`, { state: 'visible' });
  assert.deepEqual((await shownChanges(pageB.page, fromA)).actions, []);
  await pageA.page.fill('#member-id', String(b));
  await pageA.page.selectOption('#member-role', 'moderator');
  await pageA.page.click('#set-role');
  await waitForText(pageB.page, '#messages > li.member-change:last-child', `You made moderator by user ${a}`);
  await pageB.page.waitForSelector(`${messageRow(fromA)} .delete-message`, { state: 'visible' });
  assert.deepEqual((await shownChanges(pageB.page, fromA)).actions, ['delete']);

  // The owner deletes the member's message: a tombstone on both pages.
  await pageA.page.click(`${messageRow(fromB)} .delete-message`);
  for (const { page } of [pageA, pageB]) await waitForTombstone(page, fromB);
  assert.equal((await shownChanges(pageA.page, fromA)).deleted, false, 'only that one');
  await screenshot(pageB.page, `message-changes-group-${srv.mode}`);
  for (const client of [pageA, pageB]) {
    client.check();
    await client.close();
  }
});
