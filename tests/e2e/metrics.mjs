// Prometheus text parsing for the observability tests: every series of a /metrics answer.

/** GET `${baseUrl}/metrics`: `{ status, contentType, text, series }` (see parseMetrics). */
export async function scrape(baseUrl) {
  const res = await fetch(`${baseUrl}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.text();
  return { status: res.status, contentType: res.headers.get('content-type'), text, series: parseMetrics(text) };
}

/**
 * The series of a Prometheus text exposition: an array of `{ name, labels, value }`, labels
 * as an object (comment lines skipped).
 */
export function parseMetrics(text) {
  const series = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[3] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    series.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return series;
}

/** Names of the metric families present (a histogram `x` shows as x_bucket, x_sum, x_count). */
export function families(series) {
  return new Set(series.map((s) => s.name));
}

/** The value of the series `name` whose labels include `labels`, summed over the rest; 0 if none. */
export function value(series, name, labels = {}) {
  return series
    .filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))
    .reduce((sum, s) => sum + s.value, 0);
}
