// The fault summary table (no dependencies: run-faults.sh loads it on its own to print the
// rows every test file appended to $FAULTS_REPORT).

export const COLUMNS = ['fault', 'nats', 'sent', 'acknowledged', 'stored', 'delivered', 'lost', 'duplicated', 'reordered', 'unacked', 'missing', 'repeats', 'errors', 'resends', 'reconnects', 'slowest ack ms'];

/** Rows ({ fault, sent, … }) as a Markdown-style table. */
export function formatTable(rows) {
  const cells = [COLUMNS, ...rows.map((r) => COLUMNS.map((k) => String(r[k] ?? '')))];
  const widths = COLUMNS.map((_, i) => Math.max(...cells.map((r) => r[i].length)));
  const line = (r) => `| ${r.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join(' | ')} |`;
  return [line(cells[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`, ...cells.slice(1).map(line)].join('\n');
}

/** The legend printed under the table. */
export const LEGEND = 'nats: NATS servers (and replicas of the work queue and bucket); ' +
  'sent: distinct messages the clients made; acknowledged: with message-sent; stored: rows in the database; ' +
  'delivered: distinct stored messages received / expected (every member gets every message of its conversation); ' +
  'lost: acknowledged but not stored; duplicated: extra rows of one (sender, seq); ' +
  'reordered: new ids a client received below the highest it had already received; unacked: never acknowledged; ' +
  'missing: stored but never received by a member; repeats: ids received again; errors: message-error received; ' +
  'resends: sends repeated with the same client_msg_id; reconnects: client reconnections; ' +
  'slowest ack ms: the longest a send waited for its message-sent, retries included. Pass: lost = 0 and duplicated = 0 ' +
  '(and every other check of the test).';
