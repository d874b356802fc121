// The REST API documentation: the OpenAPI document lists every route (checked against the
// README's API table and against the running server), each of its examples validates against
// its own schemas, and the human docs page renders it in the browser with no internet.
// Also the static files themselves: served by the server, under a Content-Security-Policy.

import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import Ajv2020Module from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import { test, useServer } from '../e2e/harness.mjs';
import { openPage, useBrowser } from './browser.mjs';

const Ajv2020 = Ajv2020Module.default ?? Ajv2020Module;
const addFormats = addFormatsModule.default ?? addFormatsModule;
const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.resolve(HERE, '..', '..');
const METHODS = ['get', 'post', 'put', 'patch', 'delete'];
const DOC_ID = 'https://chat.invalid/openapi.json';

const srv = useServer();
const browser = useBrowser();

async function fetchDocument() {
  const res = await srv.api('GET', '/api/docs/openapi.json');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-type'), /^application\/json/);
  assert.match(res.body.openapi, /^3\.1\./);
  return res.body;
}

/** `METHOD /path` of every operation in the document. */
function operations(doc) {
  return Object.entries(doc.paths).flatMap(([p, item]) =>
    METHODS.filter((m) => item[m]).map((m) => ({ method: m.toUpperCase(), path: p, op: item[m] })));
}

/** `METHOD /path` of every route in the README's REST table (rows that continue another, `…`, skipped). */
function readmeRoutes() {
  const readme = readFileSync(path.join(REPO, 'README.md'), 'utf8');
  const routes = new Set();
  for (const line of readme.split('\n')) {
    const match = /^\| `(GET|POST|PUT|PATCH|DELETE) (\/[^`?\s]*)/.exec(line);
    if (match) routes.add(`${match[1]} ${match[2]}`);
  }
  return routes;
}

test('the OpenAPI document lists exactly the REST routes of the README, and the server has each', async () => {
  const doc = await fetchDocument();
  const documented = operations(doc).map(({ method, path: p }) => `${method} ${p}`).sort();
  const inReadme = [...readmeRoutes()].sort();
  assert.ok(inReadme.length >= 3, `README routes found: ${inReadme}`);
  assert.deepEqual(documented, inReadme);

  // The server answers each documented route itself (not its fallback, not "wrong method").
  const [a, b] = srv.users(2);
  const isFallback = (res) => res.status === 405 || (res.status === 404 && res.body?.message === 'Not found');
  for (const { method, path: p } of operations(doc)) {
    const concrete = p.replace(/\{id\}/g, String(a));
    const body = method === 'POST' ? { sender_id: a, receiver_id: b } : undefined;
    const res = await srv.api(method, concrete, body);
    assert.ok(!isFallback(res), `${method} ${concrete} → ${res.status} ${JSON.stringify(res.body)}`);
    assert.ok(res.status < 500, `${method} ${concrete} → ${res.status}`);
  }
  // …and the probe can tell: an undocumented route is the fallback.
  assert.ok(isFallback(await srv.api('GET', '/api/chats/unknown')));
  assert.ok(isFallback(await srv.api('DELETE', '/api/chats/conversations')));
});

test('the document describes the bearer scheme, the paging parameters and the JSON errors', async () => {
  const doc = await fetchDocument();
  assert.deepEqual(
    { type: doc.components.securitySchemes.bearer_jwt.type, scheme: doc.components.securitySchemes.bearer_jwt.scheme },
    { type: 'http', scheme: 'bearer' },
  );
  const history = doc.paths['/api/chats/conversations/{id}/messages'].get;
  // `user_id`: whose `my_reactions` the history lists, in development mode (README, "The API").
  assert.deepEqual(history.parameters.map((p) => `${p.in}:${p.name}`),
    ['path:id', 'query:page', 'query:limit', 'query:after', 'query:before', 'query:user_id']);
  for (const { method, path: p, op } of operations(doc)) {
    for (const [status, response] of Object.entries(op.responses)) {
      if (Number(status) >= 400) {
        assert.equal(response.content['application/json'].schema.$ref, '#/components/schemas/ErrorJson', `${method} ${p} ${status}`);
      }
    }
    if (p.startsWith('/api/')) assert.deepEqual(op.security, [{}, { bearer_jwt: [] }], `${method} ${p}: open in development mode, bearer with JWT`);
  }
});

/**
 * Every example in the document with the JSON pointer of the schema it must satisfy:
 * `example` / `examples` of parameters and media types (against their `schema`), and of
 * schemas and their subschemas (against themselves).
 */
function examplesWithSchemas(doc) {
  const found = [];
  const escape = (key) => String(key).replace(/~/g, '~0').replace(/\//g, '~1');
  const schema = (node, pointer) => {
    if (node === null || typeof node !== 'object') return;
    if ('example' in node) found.push({ where: `${pointer}/example`, schemaPointer: pointer, value: node.example });
    for (const [i, value] of (Array.isArray(node.examples) ? node.examples : []).entries()) {
      found.push({ where: `${pointer}/examples/${i}`, schemaPointer: pointer, value });
    }
    for (const [key, child] of Object.entries(node.properties ?? {})) schema(child, `${pointer}/properties/${escape(key)}`);
    for (const key of ['oneOf', 'anyOf', 'allOf']) {
      for (const [i, child] of (node[key] ?? []).entries()) schema(child, `${pointer}/${key}/${i}`);
    }
    for (const key of ['items', 'not', 'additionalProperties']) schema(node[key], `${pointer}/${key}`);
  };
  /** A parameter or media type: its examples are of its schema. */
  const holder = (node, pointer) => {
    const schemaPointer = `${pointer}/schema`;
    if ('example' in node) found.push({ where: `${pointer}/example`, schemaPointer, value: node.example });
    for (const [name, example] of Object.entries(node.examples ?? {})) {
      found.push({ where: `${pointer}/examples/${name}`, schemaPointer, value: example.value });
    }
    schema(node.schema, schemaPointer);
  };
  for (const [name, s] of Object.entries(doc.components?.schemas ?? {})) schema(s, `/components/schemas/${escape(name)}`);
  for (const { method, path: p, op } of operations(doc)) {
    const base = `/paths/${escape(p)}/${method.toLowerCase()}`;
    for (const [i, parameter] of (op.parameters ?? []).entries()) holder(parameter, `${base}/parameters/${i}`);
    for (const [type, media] of Object.entries(op.requestBody?.content ?? {})) {
      holder(media, `${base}/requestBody/content/${escape(type)}`);
    }
    for (const [status, response] of Object.entries(op.responses ?? {})) {
      for (const [type, media] of Object.entries(response.content ?? {})) {
        holder(media, `${base}/responses/${status}/content/${escape(type)}`);
      }
    }
  }
  return found;
}

function validator(doc) {
  // The document is not a JSON schema, but holds them: added whole, its schemas are reached by
  // JSON pointer, and `#/components/schemas/…` refs resolve inside it.
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateSchema: false });
  addFormats(ajv);
  ajv.addSchema(doc, DOC_ID);
  return (schemaPointer, value) => {
    const fragment = schemaPointer.split('/').map(encodeURIComponent).join('/');
    const validate = ajv.compile({ $ref: `${DOC_ID}#${fragment}` });
    return validate(value) ? null : ajv.errorsText(validate.errors);
  };
}

test('every example in the document validates against its own schema', async () => {
  const doc = await fetchDocument();
  const check = validator(doc);
  const examples = examplesWithSchemas(doc);
  const responses = operations(doc).flatMap(({ op }) => Object.keys(op.responses));
  assert.ok(examples.length >= responses.length, `${examples.length} examples for ${responses.length} responses`);
  const failures = examples
    .map(({ where, schemaPointer, value }) => ({ where, error: check(schemaPointer, value) }))
    .filter(({ error }) => error !== null);
  assert.deepEqual(failures, []);

  // The validator is not blind: broken copies of real examples fail.
  const conversation = { id: 7, type: 'direct', sender_id: 1, receiver_id: 2, created_at: '2026-11-25T19:51:58.530Z' };
  assert.equal(check('/components/schemas/ConversationJson', conversation), null);
  assert.notEqual(check('/components/schemas/ConversationJson', { ...conversation, type: 'channel' }), null);
  const group = { id: 8, type: 'group', name: 'Team', created_at: conversation.created_at,
    members: [{ user_id: 1, role: 'owner', joined_at: conversation.created_at }] };
  assert.equal(check('/components/schemas/ConversationJson', group), null);
  assert.notEqual(check('/components/schemas/ConversationJson', { ...group, members: [{ user_id: 1, role: 'king', joined_at: group.created_at }] }), null);
  assert.notEqual(check('/components/schemas/ConversationJson', { ...conversation, id: 'seven' }), null);
  assert.notEqual(check('/components/schemas/ConversationJson', { ...conversation, created_at: 'yesterday' }), null);
  assert.notEqual(check('/components/schemas/ErrorJson', { statusCode: 404, error: 'Not Found', message: 3 }), null);
  const history = '/paths/~1api~1chats~1conversations~1{id}~1messages/get/responses/200/content/application~1json/schema';
  assert.notEqual(check(history, { data: [{ id: 1 }], limit: 20, total: 1 }), null);
});

test('the docs page renders every route, offline, under its CSP', async () => {
  const doc = await fetchDocument();
  const res = await srv.api('GET', '/api/docs');
  assert.equal(res.status, 200);
  assert.match(res.headers.get('content-security-policy'), /^default-src 'self';/);

  const docs = await openPage(browser(), `${srv.gateways[0]}/api/docs`);
  const titles = await docs.page.$$eval('#operations .operation h3', (hs) => hs.map((h) => h.textContent));
  assert.deepEqual(titles, operations(doc).map(({ method, path: p }) => `${method.toLowerCase()}${p}`));
  const text = await docs.page.textContent('body');
  for (const needle of ['bearer_jwt', 'before', 'Conversation not found', 'ErrorJson', 'MessagePageJson']) {
    assert.ok(text.includes(needle), `the docs page shows ${needle}`);
  }
  docs.check();
  await docs.close();
});

test('the page and its scripts come from the server: CSP, no inline script, the official client', async () => {
  const page = await srv.api('GET', '/');
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type'), /^text\/html/);
  const csp = page.headers.get('content-security-policy');
  assert.match(csp, /^default-src 'self';/);
  assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
  assert.equal(page.headers.get('x-content-type-options'), 'nosniff');
  const scripts = [...page.text.matchAll(/<script([^>]*)>([^<]*)<\/script>/g)];
  assert.deepEqual(scripts.map((s) => [/src="([^"]+)"/.exec(s[1])?.[1], s[2].trim()]),
    [['/assets/socket.io.min.js', ''], ['/assets/client.js', '']]);

  // Their errors are the API's JSON errors too.
  const wrongMethod = await srv.api('POST', '/', {});
  assert.deepEqual([wrongMethod.status, wrongMethod.body?.statusCode], [405, 405]);
  const missing = await srv.api('GET', '/assets/missing.js');
  assert.deepEqual([missing.status, missing.body?.message], [404, 'Not found']);

  const client = await srv.api('GET', '/assets/socket.io.min.js');
  assert.equal(client.status, 200);
  assert.match(client.headers.get('content-type'), /javascript/);
  assert.match(client.headers.get('cache-control'), /max-age=\d{5,}/);
  // The same file as the socket.io-client package the end-to-end suite installs from npm.
  const official = readFileSync(path.join(REPO, 'tests/e2e/node_modules/socket.io-client/dist/socket.io.min.js'), 'utf8');
  assert.ok(client.text === official, 'the served client is byte for byte the official bundle of tests/e2e\'s version');
});
