// The Grafana dashboards in deploy/dashboards/ query only metrics that the roles export: every
// metric name in a panel's PromQL must appear in GET /metrics of the role it belongs to, after
// a little traffic (E2E_MODE=cluster; the scrape test is skipped in single mode).
// The name extraction and the role mapping are checked on their own first, in both modes
// (node:test's `test`: they need no server).

import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { test as unitTest } from 'node:test';
import { test, useServer } from './harness.mjs';

const srv = useServer({ only: 'cluster' });

const DASHBOARDS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'deploy', 'dashboards');
/** How long the scrape is retried for names that show up only once a gauge or counter has moved. */
const SCRAPE_PATIENCE_MS = 8000;

/** The metric families of the contract between the roles and the dashboards (deploy/dashboards/README.md). */
const CONTRACT = new Set([
  'chat_build_info', 'chat_nats_reconnects_total', 'process_resident_memory_bytes', 'process_cpu_seconds_total',
  'chat_gateway_connections', 'chat_gateway_rooms', 'chat_gateway_events_in_total', 'chat_gateway_events_out_total',
  'chat_gateway_errors_total', 'chat_gateway_send_ack_seconds', 'chat_gateway_receipt_ack_seconds',
  'chat_gateway_receipts_superseded_total', 'chat_gateway_receipts_held_total', 'chat_http_requests_total', 'chat_http_request_duration_seconds',
  'chat_gateway_outbox_wait_seconds', 'chat_gateway_enqueue_seconds', 'chat_gateway_outcome_wait_seconds',
  'chat_persister_batch_size', 'chat_persister_insert_seconds', 'chat_persister_messages_stored_total',
  'chat_persister_queue_wait_seconds', 'chat_persister_batch_fill_seconds',
  'chat_persister_consumer_pending', 'chat_persister_receipts_superseded_total',
  'chat_presence_online_users', 'chat_presence_sockets',
]);

/** PromQL words that look like metric names but are not. */
const PROMQL_WORDS = new Set([
  'by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset',
  'atan2', 'inf', 'nan',
]);

/**
 * The metric names a PromQL expression selects (as written, e.g. `x_bucket`): without string
 * literals, label matchers, range selectors, grouping label lists, Grafana variables, functions
 * and aggregations (a name followed by `(`), keywords and numbers.
 */
export function metricNames(expr) {
  const bare = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, ' ')
    .replace(/\{[^}]*\}/g, ' ')
    .replace(/\[[^\]]*\]/g, ' ')
    .replace(/\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/gi, ' ')
    .replace(/\$\{[^}]*\}|\$\w+/g, ' ');
  const names = new Set();
  for (const m of bare.matchAll(/(?<![\w.:])([a-zA-Z_:][\w:]*)(\s*\()?/g)) {
    const [, name, call] = m;
    if (call || PROMQL_WORDS.has(name.toLowerCase())) continue;
    names.add(name);
  }
  return [...names];
}

/** The family of a series name: a histogram's `_bucket`, `_sum` and `_count` series belong to it. */
export function familyOf(name) {
  return name.replace(/_(?:bucket|sum|count)$/, '');
}

/** Roles (subcommands) that export a metric family. */
export function rolesOf(family) {
  if (family.startsWith('chat_gateway_') || family.startsWith('chat_http_')) return ['gateway'];
  if (family.startsWith('chat_persister_')) return ['persister'];
  if (family.startsWith('chat_presence_')) return ['presence'];
  if (family.startsWith('process_') || family.startsWith('chat_nats_') || family === 'chat_build_info') {
    return ['gateway', 'persister', 'presence'];
  }
  throw new Error(`no role is known to export ${family}`);
}

/** Every `expr` of every panel (rows included) of every dashboard: [{ dashboard, panel, expr }]. */
function dashboardQueries() {
  const files = readdirSync(DASHBOARDS).filter((f) => f.endsWith('.json'));
  assert.ok(files.length > 0, `no dashboards in ${DASHBOARDS}`);
  const out = [];
  const walk = (file, panels) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) if (t.expr) out.push({ dashboard: file, panel: p.title, expr: t.expr });
      walk(file, p.panels);
    }
  };
  for (const f of files) walk(f, JSON.parse(readFileSync(path.join(DASHBOARDS, f), 'utf8')).panels);
  return out;
}

/** Sample names (first token of each sample line) and `# TYPE` families of a text exposition. */
export function parseExposition(text) {
  const samples = new Map(); // name → [label text, …]
  const families = new Set();
  for (const line of text.split('\n')) {
    const type = line.match(/^# TYPE (\S+) /);
    if (type) families.add(type[1]);
    const sample = line.match(/^([a-zA-Z_:][\w:]*)(\{[^}]*\})?\s/);
    if (sample) {
      if (!samples.has(sample[1])) samples.set(sample[1], []);
      samples.get(sample[1]).push(sample[2] ?? '');
    }
  }
  return { samples, families };
}

unitTest('dashboards: metric names are extracted from PromQL (no functions, labels, keywords or variables) and from /metrics text', () => {
  assert.deepEqual(
    metricNames('histogram_quantile(0.99, sum by (le) (rate(chat_gateway_send_ack_seconds_bucket{job="x"}[$__rate_interval])))'),
    ['chat_gateway_send_ack_seconds_bucket'],
  );
  assert.deepEqual(
    metricNames('sum by (role) (process_resident_memory_bytes * on (instance, job) group_left (role) chat_build_info)'),
    ['process_resident_memory_bytes', 'chat_build_info'],
  );
  assert.deepEqual(
    metricNames('sum(rate(a_total{kind=~"x|y"}[5m] offset 1h)) / ignoring(kind) b > bool 1e3 and c unless on() d'),
    ['a_total', 'b', 'c', 'd'],
  );
  assert.deepEqual(metricNames('max(chat_presence_online_users)'), ['chat_presence_online_users']);
  assert.equal(familyOf('chat_persister_insert_seconds_count'), 'chat_persister_insert_seconds');
  assert.equal(familyOf('chat_gateway_connections'), 'chat_gateway_connections');
  assert.deepEqual(rolesOf('chat_nats_reconnects_total'), ['gateway', 'persister', 'presence']);
  assert.deepEqual(rolesOf('chat_persister_batch_size'), ['persister']);
  assert.throws(() => rolesOf('http_requests_total'), /no role/);
  const { samples, families } = parseExposition([
    '# HELP chat_gateway_send_ack_seconds From send to ack.',
    '# TYPE chat_gateway_send_ack_seconds histogram',
    'chat_gateway_send_ack_seconds_bucket{le="0.005"} 3',
    'chat_gateway_send_ack_seconds_count 3',
    '# TYPE chat_gateway_errors_total counter',
    'chat_build_info{role="gateway",version="0.1.0"} 1',
    'process_cpu_seconds_total 0.25',
  ].join('\n'));
  assert.deepEqual([...samples.keys()], [
    'chat_gateway_send_ack_seconds_bucket', 'chat_gateway_send_ack_seconds_count', 'chat_build_info',
    'process_cpu_seconds_total',
  ]);
  assert.deepEqual(samples.get('chat_build_info'), ['{role="gateway",version="0.1.0"}']);
  assert.deepEqual([...families], ['chat_gateway_send_ack_seconds', 'chat_gateway_errors_total']);
});

unitTest('dashboards: every queried metric belongs to the metrics contract and to a role', () => {
  const queries = dashboardQueries();
  const families = new Set();
  for (const q of queries) {
    const names = metricNames(q.expr);
    assert.ok(names.length > 0, `${q.dashboard} / ${q.panel}: no metric in ${q.expr}`);
    for (const n of names) {
      const family = familyOf(n);
      assert.ok(CONTRACT.has(family), `${q.dashboard} / ${q.panel}: ${n} is not in the metrics contract`);
      rolesOf(family);
      families.add(family);
    }
  }
  // The overview shows every metric of the contract.
  assert.deepEqual([...CONTRACT].filter((f) => !families.has(f)), [], 'contract metrics no dashboard shows');
});

test('dashboards: every metric a panel queries appears in /metrics of its role', async () => {
  // Traffic on both gateways: joins, typing, sends both ways (stored, delivered, acked), and an
  // unknown event (an error).
  const [a, b] = srv.users(2); // a on gateway A, b on gateway B
  const conv = await srv.openConversation(a, b);
  const sa = await srv.connect(a);
  const sb = await srv.connect(b);
  await srv.join(sa, conv.id);
  await srv.join(sb, conv.id);
  const typing = srv.once(sb, 'user-typing', 5000);
  sa.emit('typing', { conversationId: conv.id, userId: a, isTyping: true });
  await typing;
  const delivered = srv.once(sb, 'receive-message', 5000);
  await srv.send(sa, a, conv.id, 'counted');
  await delivered;
  await srv.send(sb, b, conv.id, 'counted too');
  const refused = srv.once(sa, 'error', 3000);
  sa.emit('no-such-event', {});
  await refused;

  // Which names each role must show.
  const wanted = new Map([['gateway', new Set()], ['persister', new Set()], ['presence', new Set()]]);
  for (const q of dashboardQueries()) {
    for (const n of metricNames(q.expr)) for (const role of rolesOf(familyOf(n))) wanted.get(role).add(n);
  }
  const processes = [['gwa', 'gateway'], ['gwb', 'gateway'], ['persister', 'persister'], ['presence', 'presence']];

  // A name is there when a sample of it is, or (for a labelled family nothing has touched yet on
  // that process) its `# TYPE` line. Gauges may lag a heartbeat: retry for a while.
  let missing = [];
  const deadline = Date.now() + SCRAPE_PATIENCE_MS;
  for (;;) {
    missing = [];
    for (const [proc, role] of processes) {
      const res = await fetch(`${srv.roleUrl(proc)}/metrics`, { signal: AbortSignal.timeout(5000) });
      const text = await res.text();
      assert.equal(res.status, 200, `GET /metrics of ${proc}: ${res.status} ${text.slice(0, 200)}`);
      const { samples, families } = parseExposition(text);
      for (const n of wanted.get(role)) {
        if (!samples.has(n) && !families.has(familyOf(n))) missing.push(`${n} (${proc})`);
      }
      // The per-role panels join on chat_build_info's `role` label.
      const info = samples.get('chat_build_info') ?? [];
      assert.ok(
        info.some((labels) => labels.includes(`role="${role}"`)),
        `chat_build_info of ${proc} must carry role="${role}": ${JSON.stringify(info)}`,
      );
    }
    if (missing.length === 0 || Date.now() > deadline) break;
    await sleep(500);
  }
  assert.deepEqual(missing, [], 'metrics the dashboards query but the roles do not export');
});
