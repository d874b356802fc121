// Headless Chromium for the browser tests, and helpers that drive the test client page the way a
// person would: fill the fields, press the buttons, read what the page shows.
//
// The server comes from the end-to-end harness (../e2e/harness.mjs: `useServer()`), so these
// tests run against the real binary in the same modes. Chromium: $CHROMIUM_BIN, else
// /usr/bin/chromium (Debian's package; run.sh installs it). Every page is offline: a request
// to any host other than the server's is aborted and fails the test, so the page cannot lean
// on a CDN. Console errors, uncaught exceptions and CSP violations fail the test too.

import assert from 'node:assert/strict';
import { existsSync, mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after } from 'node:test';
import { chromium } from 'playwright-core';

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Screenshots and other artifacts: $BROWSER_ARTIFACTS, else tests/browser/artifacts (git-ignored). */
export const ARTIFACTS = path.resolve(process.env.BROWSER_ARTIFACTS || path.join(HERE, 'artifacts'));
const WAIT_MS = 10_000;

export function chromiumBinary() {
  return process.env.CHROMIUM_BIN || '/usr/bin/chromium';
}

/**
 * One Chromium for the test file: `browser()` resolves with it, launching it on first use (in a
 * test, not a hook: when the server's start-up hook fails no test runs, and no browser is left
 * running to keep the process alive); closed after the file. Call at the top level of a test
 * file.
 */
export function useBrowser() {
  let launched = null;
  after(async () => {
    if (launched) await (await launched).close();
  });
  return () => {
    if (!launched) {
      const bin = chromiumBinary();
      assert.ok(existsSync(bin), `Chromium not found at ${bin} (run tests/browser/run.sh, which installs it)`);
      // --no-sandbox: the tests run as root in CI, where Chromium's sandbox refuses to start.
      launched = chromium.launch({ executablePath: bin, args: ['--no-sandbox'] });
    }
    return launched;
  };
}

/**
 * A new context of `browser` (a Browser or a promise of one; its own cookies and storage: one
 * user) with one page at `url`, offline but for `url`'s origin. `problems` collects what went wrong in the page; `check()`
 * asserts there was nothing.
 */
export async function openPage(browser, url, { ignore = [] } = {}) {
  const origin = new URL(url).origin;
  const context = await (await browser).newContext({ viewport: { width: 1200, height: 900 } });
  const problems = [];
  await context.route('**/*', (route) => {
    const target = route.request().url();
    if (new URL(target).origin === origin) return route.continue();
    problems.push(`request to another origin: ${target}`);
    return route.abort('blockedbyclient');
  });
  const page = await context.newPage();
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    const text = message.text();
    if (!ignore.some((pattern) => pattern.test(text))) problems.push(`console error: ${text}`);
  });
  page.on('pageerror', (error) => problems.push(`uncaught exception: ${error.message}`));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: WAIT_MS });
  const check = () => assert.deepEqual(problems, [], `problems in the page at ${url}`);
  return { context, page, problems, check, close: () => context.close() };
}

/** Waits until `selector`'s text (trimmed) satisfies `expected` (a string or a RegExp). */
export async function waitForText(page, selector, expected, timeout = WAIT_MS) {
  const isRegExp = expected instanceof RegExp;
  try {
    await page.waitForFunction(
      ([sel, source, flags, exact]) => {
        const el = document.querySelector(sel);
        if (!el) return false;
        const text = el.textContent.trim();
        return exact === null ? new RegExp(source, flags).test(text) : text === exact;
      },
      [selector, isRegExp ? expected.source : null, isRegExp ? expected.flags : null, isRegExp ? null : expected],
      { timeout },
    );
  } catch (error) {
    const actual = await page.locator(selector).first().textContent({ timeout: 500 }).catch(() => '(no element)');
    throw new Error(`${selector}: waited ${timeout} ms for ${expected}, text is ${JSON.stringify(actual)} (${error.message.split('\n')[0]})`);
  }
}

/** The test client page, connected as `userId` (or with `token`). */
export async function openClient(browser, baseUrl, { userId, token, ignore } = {}) {
  const client = await openPage(browser, `${baseUrl}/`, { ignore });
  const { page } = client;
  assert.equal(await page.inputValue('#server-url'), baseUrl, 'the server URL defaults to the page origin');
  if (userId !== undefined) await page.fill('#user-id', String(userId));
  if (token !== undefined) await page.fill('#token', token);
  await page.click('#connect');
  await waitForText(page, '#status', /^connected as user \d+$/);
  return client;
}

/** Creates a conversation with `otherUser` from the page; resolves with its id once joined. */
export async function createConversation(page, otherUser) {
  await page.fill('#other-user', String(otherUser));
  await page.click('#create');
  await waitForText(page, '#joined', /^joined conversation \d+$/);
  return Number(await page.inputValue('#conversation-id'));
}

/** Joins conversation `id` from the page. */
export async function joinConversation(page, id) {
  await page.fill('#conversation-id', String(id));
  await page.click('#join');
  await waitForText(page, '#joined', `joined conversation ${id}`);
  await page.waitForSelector('#send:not([disabled])', { timeout: WAIT_MS });
}

/** What the message list shows: `{id, state, content, own}` per row, top to bottom. */
export function shownMessages(page) {
  return page.$$eval('#messages > li', (rows) => rows.map((row) => ({
    id: row.dataset.id === undefined ? null : Number(row.dataset.id),
    state: row.dataset.state,
    content: row.querySelector('.content').textContent,
    own: row.classList.contains('own'),
  })));
}

/** The row of stored message `id` in the message list (a selector). */
export const messageRow = (id) => `#messages > li[data-id="${id}"]`;

/**
 * What the page shows of stored message `id`: its content, whether it shows as edited or as a
 * deleted tombstone, the controls it offers (`edit`, `delete`), and its reaction buttons as
 * `{emoji: {count, mine}}`.
 */
export function shownChanges(page, id) {
  return page.$eval(messageRow(id), (row) => {
    const edited = row.querySelector('.edited');
    return {
      content: row.querySelector('.content').textContent,
      edited: row.dataset.edited === 'true' && Boolean(edited) && !edited.hidden,
      deleted: row.dataset.deleted === 'true',
      actions: [...row.querySelectorAll('.message-actions button')].map((button) => button.dataset.action),
      reactions: Object.fromEntries([...row.querySelectorAll('.reactions .reaction')].map((button) => [
        button.dataset.emoji, { count: Number(button.dataset.count), mine: button.dataset.mine === 'true' },
      ])),
    };
  });
}

/** The inbox item of conversation `id` (a selector). */
export const inboxItem = (id) => `#inbox > li[data-conversation="${id}"]`;

/**
 * What the page shows of the other member's receipt of message `id` (one of ours): its row's
 * `data-receipt` ("none", "delivered", "read"), the tick marks, and their colour.
 */
export function shownReceipt(page, id) {
  return page.$eval(`#messages > li[data-id="${id}"]`, (row) => {
    const ticks = row.querySelector('.ticks');
    return { receipt: row.dataset.receipt, ticks: ticks.textContent, color: getComputedStyle(ticks).color };
  });
}

/** Types `text` into the message box key by key, as a person does. */
export async function typeMessage(page, text, delay = 0) {
  await page.click('#message');
  await page.keyboard.type(text, { delay });
}

/** Saves a full-page screenshot under ARTIFACTS and prints its path. */
export async function screenshot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const file = path.join(ARTIFACTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  console.log(`# screenshot: ${file}`);
  return file;
}
