#!/usr/bin/env bash
# INBOX.md from the raw JSON of inbox.sh: RAW=DIR/raw-inbox bash deploy/bench/inbox-report.sh
# (inbox.sh runs it; it can be re-run on raw-inbox/ alone). Needs jq.
set -euo pipefail
raw=${RAW:?RAW=<the raw-inbox directory>}
machine=$raw/machine.json
settings=$raw/settings.json

# The messaging runs, one object each: mode, variant, repeat, the report, its CPU file.
runs=$(for f in "$raw"/receipts-*-*-*.json; do
  [[ $f == *.cpu.json ]] && continue
  name=$(basename "$f" .json)
  IFS=- read -r _ mode variant repeat <<<"$name"
  cpu=$raw/$name.cpu.json
  jq -c --arg mode "$mode" --arg variant "$variant" --argjson repeat "$repeat" --slurpfile cpu "$cpu" \
    '{mode: $mode, variant: $variant, repeat: $repeat, r: ., cpu: $cpu[0]}' "$f"
done | jq -s 'sort_by(.mode, (if .mode == "search" then .variant else "" end), .repeat, .variant)')

jq -rn --slurpfile m "$machine" --slurpfile s "$settings" --argjson runs "$runs" \
  --slurpfile seed "$raw/seed.json" --slurpfile pids "$raw/list-pids.json" \
  --slurpfile first "$raw/list-first.json" --slurpfile walk "$raw/list-walk.json" \
  --slurpfile conc "$raw/list-concurrent.json" --slurpfile first_cpu "$raw/list-first.cpu.json" \
  --slurpfile walk_cpu "$raw/list-walk.cpu.json" --slurpfile conc_cpu "$raw/list-concurrent.cpu.json" '
def r1: if . == null then "–" else . * 10 | round / 10 | tostring end;
def r2: if . == null then "–" else . * 100 | round / 100 | tostring end;
def r0: if . == null then "–" else round | tostring end;
def median: sort | if length == 0 then null elif length % 2 == 1 then .[length / 2 | floor]
  else (.[length / 2 - 1] + .[length / 2]) / 2 end;
def mark(ok): if ok then "met" else "**not met**" end;
def checks: .r | "\(.lost) / \(.duplicated) / \(.out_of_order) / \(.unanswered) / \(.message_errors + .errors)";
def delivered: .r.throughput_delivered_per_s;
# Sustained as run.sh means it: >= 95 % of the target delivered, p99 delivery < 100 ms, checks passed.
def sustained: .r.mode == "rate" and .r.ok and .r.delivery_latency_ms.p99 < 100
  and .r.throughput_delivered_per_s >= 0.95 * .r.rate_target;
$m[0] as $m | $s[0] as $s | $seed[0] as $seed | $pids[0] as $pids |
def side(mode; variant): [$runs[] | select(.mode == mode and .variant == variant)];
def ratio(mode): (side(mode; "read") | map(delivered) | median) as $w | (side(mode; "plain") | map(delivered) | median) as $wo
  | if $wo == null or $wo == 0 or $w == null then null else $w / $wo end;
def other(c): c.box_busy_cores - (c.roles_cores | add);
# CPU ms per message of a run by role (whole run: its busy cores × wall time / messages acknowledged).
def cost(mode; variant; $name): side(mode; variant) | map(.cpu.wall_s as $r_wall | .r.acked as $r_acked | (if $name == "other" then other(.cpu) elif $name == "total" then .cpu.box_busy_cores else .cpu.roles_cores[$name] end) * $r_wall * 1000 / $r_acked) | median;
def roles(c): "\(c.box_busy_cores | r2) (gateway \(c.roles_cores.gateway | r2), persister \(c.roles_cores.persister | r2), presence \(c.roles_cores.presence | r2), nats \(c.roles_cores.nats | r2), Postgres \(c.roles_cores.postgres | r2), other \(other(c) | r2))";
def list_cpu(r): (r.server_cpu | map(select(.pid == $pids.gateway)) | first | .cpu_ms_per_request) as $g
  | (r.server_cpu | map(select(.pid == $pids.persister)) | first | .cpu_ms_per_request) as $p
  | (r.server_cpu | map(select(.pid != $pids.gateway and .pid != $pids.persister) | .cpu_ms_per_request) | add) as $pg
  | {gateway: $g, persister: $p, postgres: $pg};
def list_row(name; r; c): list_cpu(r) as $cpu |
  "| \(name) | \(r.requests) | \(r.concurrency) | \(r.first_page_ms | "\(.p50 | r2) / \(.p90 | r2) / \(.p99 | r2) / \(.max | r2)") | \(if r.later_pages_ms.count > 0 then (r.later_pages_ms | "\(.p50 | r2) / \(.p90 | r2) / \(.p99 | r2) / \(.max | r2)") else "–" end) | \(r.requests_per_s | r0) | \($cpu.gateway | r2) / \($cpu.persister | r2) / \($cpu.postgres | r2) | \(c.box_busy_cores | r2) | \(r.errors) | \(if r.ok then "yes" else "**no**" end) |";
(ratio("max")) as $max_ratio | (ratio("rate")) as $rate_ratio |
(if ($s.sustained_plain // 0) > 0 and $s.sustained_read != null then $s.sustained_read / $s.sustained_plain else null end) as $sustained_ratio |
def steps(variant): [$runs[] | select(.mode == "search" and .variant == variant)]
  | map("\(.r.rate_target | r0) (\(.r.delivery_latency_ms.p99 | r1) ms, \(delivered | r0)/s) \(if sustained then "✓" else "✗" end)") | join(", ");
$first[0] as $first | $walk[0] as $walk | $conc[0] as $conc |
([$first, $conc] | map(.first_page_ms.p99) | max) as $worst_first |
"# Inbox benchmark (issue 16)

\(if $m.quick then "**QUICK RUN: seconds per step, one repeat, few requests; not for numbers.**\n\n" else "" end)The two performance targets of issue 16, measured by [`inbox.sh`](inbox.sh) (see [README.md](README.md#inbox-benchmark-inboxsh)); raw JSON of every run in [`raw-inbox/`](raw-inbox/).

- date: \($m.date); commit \($m.commit[0:7]) (the `chat` binary measured)
- machine: \($m.cpus) CPUs (\($m.cpu)), \($m.memory) memory, Linux \($m.kernel)
- software: \($m.nats_server), Postgres \($m.postgres)
- load average (1 / 5 / 15 min): \($m.load_at_start) at the start, before anything of the benchmark ran; \($s.load_before_receipts) before the receipts runs, \($s.load_before_list) before the list runs, \($s.load_at_end) at the end (these include the benchmark\u0027s own processes). The numbers only mean something on an otherwise quiet box: the \u0022other\u0022 share of the busy cores below is the load generator and anything else that ran
- command: `\($s.command)`
- Postgres autovacuum: \($s.autovacuum // "unknown")\(if ($s.autovacuum // "on") != "on" then " on this machine, so the script runs `VACUUM ANALYZE` on the receipts database before every messaging run, as autovacuum would keep it (without statistics the planner picks parallel plans for the receipts\u0027 unread counts, ~10 ms of worker start-up per batch, and latencies grow run after run)" else "" end)

## Targets

| target | measured | |
|---|---|---|
| receipts: closed-loop messages/s with every receiver marking each message read / without, median of \($s.repeats) ≥ 0.80 | \($max_ratio | r2) | \(mark($max_ratio != null and $max_ratio >= 0.8)) |
| receipts: the same, open loop at \($s.rate) msg/s (delivered) | \($rate_ratio | r2) | \(mark($rate_ratio != null and $rate_ratio >= 0.8)) |
| receipts: open-loop rate sustained (p99 delivery < 100 ms) with receipts / without | \(if $sustained_ratio == null then "–" else "\($s.sustained_read) / \($s.sustained_plain) = \($sustained_ratio | r2)" end) | \(if $sustained_ratio == null then "–" else mark($sustained_ratio >= 0.8) end) |
| inbox list: the 50 newest of 1,000 conversations, 1,000,000 messages stored, p99 < 20 ms (first page; worst of the sequential and the concurrent run) | \($worst_first | r2) ms | \(mark($worst_first != null and $worst_first < 20)) |
| inbox list: pages after it (`before`), p99 < 20 ms | \($walk.later_pages_ms.p99 | r2) ms | \(mark($walk.later_pages_ms.p99 != null and $walk.later_pages_ms.p99 < 20)) |

## 1. Receipts

1 gateway, a persister and presence (`chat gateway|persister|presence`, \(if $s.worker_threads then "each with `--worker-threads \($s.worker_threads)`" else "each with one worker thread per core" end)) on a nats-server of the run\u0027s own (JetStream) and a fresh Postgres database; \($s.users) users in pairs sharing a conversation, warm-up \($s.warmup), measured \($s.duration) per run. The same run without and with `--mark-read` (every receiver emits `mark-read {conversationId, messageId}` with an acknowledgement for each message of its partner, as it arrives), \($s.repeats) run(s) each, alternating which goes first. Messages/s: delivered in the measured window. The closed loop (`max`, \($s.window) unanswered sends per user) is what the configuration carries at any latency; the open-loop step (`rate`, evenly paced) shows what the receipts cost at a fixed load: its delivered rate and its latency.

| mode | repeat | without: msg/s | p99 delivery (ms) | with receipts: msg/s | p99 delivery (ms) | receipts acked/s | receipt ack p99 (ms) | with / without |
|---|---|---|---|---|---|---|---|---|
\([$runs[] | select(.variant == "plain" and (.mode == "max" or .mode == "rate"))] | map(. as $p | ($runs[] | select(.mode == $p.mode and .repeat == $p.repeat and .variant == "read")) as $w |
  "| \(if $p.mode == "max" then "closed loop" else "open loop \($p.r.rate_target | r0) msg/s" end) | \($p.repeat) | \($p | delivered | r0) | \($p.r.delivery_latency_ms.p99 | r1) | \($w | delivered | r0) | \($w.r.delivery_latency_ms.p99 | r1) | \($w.r.receipts.acked_per_s | r0) | \($w.r.receipts.ack_latency_ms.p99 | r1) | \(($w | delivered) / ($p | delivered) | r2) |") | join("\n"))
\(["max", "rate"] | map(. as $mode | "| **\(if $mode == "max" then "closed loop" else "open loop" end), median** | | \(side($mode; "plain") | map(delivered) | median | r0) | \(side($mode; "plain") | map(.r.delivery_latency_ms.p99) | median | r1) | \(side($mode; "read") | map(delivered) | median | r0) | \(side($mode; "read") | map(.r.delivery_latency_ms.p99) | median | r1) | \(side($mode; "read") | map(.r.receipts.acked_per_s) | median | r0) | \(side($mode; "read") | map(.r.receipts.ack_latency_ms.p99) | median | r1) | **\(ratio($mode) | r2)** |") | join("\n"))

Open-loop steps sustained as `run.sh` means it (≥ 95 % of the target delivered, p99 delivery < 100 ms, every check passed): without receipts \(side("rate"; "plain") | map(select(sustained)) | length) of \(side("rate"; "plain") | length), with receipts \(side("rate"; "read") | map(select(sustained)) | length) of \(side("rate"; "read") | length).

### The open-loop searches

The highest evenly paced rate sustained as above, without receipts (starting at half the closed loop\u0027s median; its result is the step of the paired runs unless `--rate` was given) and with them (starting at 80 % of that step): 20 % lower after a failure, 15 % higher after a pass, then halving the gap, at most \([$runs[] | select(.mode == "search")] | group_by(.variant) | map(length) | max // 0) runs. Each step: target msg/s (p99 delivery, delivered/s), ✓ sustained.

| | steps | sustained (msg/s) |
|---|---|---|
| without receipts | \(steps("plain") | if . == "" then "– (`--rate` given)" else . end) | \($s.sustained_plain // "–") |
| with receipts | \(steps("read")) | \($s.sustained_read // "–") |

### Checks

Messages: lost / duplicated / out of order / unanswered / errors. Receipts: every message received from the partner marked (sent = delivered), each answered `success: true` with the marked message as the position (moved) or a newer one (superseded: the reader was past it already, mostly by its own newer message, which counts as read when stored; nothing is announced then), none refused or unanswered; each moved position announced once to each member (`message-read` expected = 2 × moved); no `message-delivered` (reading implies delivered).

| run | messages | receipts sent / acked (moved, superseded) / errors / unanswered | message-read events / expected | message-delivered | check |
|---|---|---|---|---|---|
\($runs | map("| \(.mode)-\(.variant)-\(.repeat) | \(checks) | \(if .r.receipts then (.r.receipts | "\(.sent) / \(.acked) (\(.moved), \(.superseded)) / \(.errors) / \(.unanswered)") else "–" end) | \(if .r.receipts then (.r.receipts | "\(.read_events) / \(.read_events_expected)") else "–" end) | \(.r.receipts.delivered_events // "–") | \(if .r.ok then "passed" else "**FAILED**" end) |") | join("\n"))
\([$runs[] | .r.error_samples[]] | unique | .[:5] | if length > 0 then "\nError samples: " + (map("`\(.)`") | join("; ")) else "" end)

### Where the CPU went

Server CPU: the gateway, the persister, presence, nats-server and the Postgres backends, in the measured window, per 1,000 messages acknowledged in it (receipts included with `--mark-read`). The load generator runs on the same two cores. Box: busy cores over the whole run (set-up to drain, /proc/stat), each role\u0027s share of them, and the rest (other: the load generator, and anything else on the box).

CPU ms per message by role (median over the runs; the role\u0027s busy cores over the whole run × its length / the messages acknowledged in it, receipts included with `--mark-read`):

| role | closed loop, without | with receipts | increase | open loop \($s.rate) msg/s, without | with receipts | increase |
|---|---|---|---|---|---|---|
\(["gateway", "persister", "presence", "nats", "postgres", "other", "total"] | map(. as $n | "| \(if $n == "other" then "other (the load generator, anything else)" elif $n == "total" then "**box**" elif $n == "nats" then "nats-server" elif $n == "postgres" then "Postgres" else $n end) | \(cost("max"; "plain"; $n) | if . == null then "–" else . * 1000 | round / 1000 | tostring end) | \(cost("max"; "read"; $n) | if . == null then "–" else . * 1000 | round / 1000 | tostring end) | \(if (cost("max"; "plain"; $n) // 0) > 0 then (cost("max"; "read"; $n) / cost("max"; "plain"; $n) - 1) * 100 | round | "\(if . >= 0 then "+" else "" end)\(.) %" else "–" end) | \(cost("rate"; "plain"; $n) | if . == null then "–" else . * 1000 | round / 1000 | tostring end) | \(cost("rate"; "read"; $n) | if . == null then "–" else . * 1000 | round / 1000 | tostring end) | \(if (cost("rate"; "plain"; $n) // 0) > 0 then (cost("rate"; "read"; $n) / cost("rate"; "plain"; $n) - 1) * 100 | round | "\(if . >= 0 then "+" else "" end)\(.) %" else "–" end) |") | join("\n"))

Each run:

| run | server CPU s per 1,000 msgs | load generator CPU in the window (s) | box busy cores (by role) |
|---|---|---|---|
\($runs | map("| \(.mode)-\(.variant)-\(.repeat) | \(.r.server_cpu_s_per_1000_msgs | if . == null then "–" else . * 1000 | round / 1000 | tostring end) | \(.r.loadgen_cpu_s | r2) | \(roles(.cpu)) |") | join("\n"))

## 2. Inbox list

A fresh database migrated by `chat migrate`, then seeded with plain SQL through psql (`generate_series`) in \($seed.seconds) s: user \($seed.user) with \($seed.user_conversations) conversations, \($seed.messages) messages spread evenly over them (100 ms apart, every third from the user), and \($seed.conversations - $seed.user_conversations) conversations of other users without messages (so that the tables are not the user\u0027s alone and the queries take the indexes, as in a database of many users); \($seed.conversation_members) `conversation_members` rows (both members of each conversation: last message, activity time, read and delivered positions, unread counts as the persister keeps them), then `VACUUM ANALYZE`; \($seed.database_bytes / 1048576 | r0) MiB. A gateway, a persister and presence on it. `chat-loadgen inbox-list` first walks the whole inbox (pages of 100) and checks it: \($first.walk.conversations) conversations in \($first.walk.pages) pages, newest activity first (order violations: \($first.walk.order_violations), other: \($first.walk.other_violations)), `total_unread` \($first.walk.total_unread) (the unread counts add up to \($first.walk.unread_sum); recounted from the messages: \($seed.expected_total_unread)). Then `GET /api/chats/users/\($seed.user)/conversations?limit=50`, each connection one request after another, after \($first.warmup_requests) unmeasured requests per connection; latency from the request to the whole body.

| run | measured requests | connections | first page p50 / p90 / p99 / max (ms) | pages by `before` p50 / p90 / p99 / max (ms) | requests/s | server CPU ms per request: gateway / persister / Postgres | box busy cores | errors | check |
|---|---|---|---|---|---|---|---|---|---|
\(list_row("first page, one after another"; $first; $first_cpu[0]))
\(list_row("walks of \($s.walk_pages) pages by `before`"; $walk; $walk_cpu[0]))
\(list_row("first page, \($s.list_connections) connections at once"; $conc; $conc_cpu[0]))
\([$first, $walk, $conc] | map(.error_samples[]) | unique | .[:5] | if length > 0 then "\nError samples: " + (map("`\(.)`") | join("; ")) else "" end)

## What bounded the numbers

\(def busy(mode; variant): side(mode; variant) | map(.cpu.box_busy_cores) | median;
  def per1000(mode; variant): side(mode; variant) | map(.r.server_cpu_s_per_1000_msgs) | median;
  def role(mode; variant; name): side(mode; variant) | map(.cpu.roles_cores[name]) | median;
  def servers(mode; variant): ["gateway", "persister", "presence", "nats", "postgres"] | map(. as $n | cost(mode; variant; $n)) | add;
  def r3: if . == null then "–" else . * 1000 | round / 1000 | tostring end;
  def lg(mode; variant): side(mode; variant) | map(.r.loadgen_cpu_s / .r.duration_s) | median;
  $m.cpus as $n |
  "- **Closed loop.** The box was busy \(busy("max"; "plain") | r2) of \($n) cores without receipts and \(busy("max"; "read") | r2) with them (medians over the runs)\(if (busy("max"; "plain") // 0) >= 0.9 * $n then ": the two cores were saturated, so the machine bounds both numbers, shared between the servers and the load generator" else "" end). Without receipts: gateway \(role("max"; "plain"; "gateway") | r2), persister \(role("max"; "plain"; "persister") | r2), nats-server \(role("max"; "plain"; "nats") | r2), Postgres \(role("max"; "plain"; "postgres") | r2) cores, the load generator \(lg("max"; "plain") | r2) in the window; with receipts: \(role("max"; "read"; "gateway") | r2), \(role("max"; "read"; "persister") | r2), \(role("max"; "read"; "nats") | r2), \(role("max"; "read"; "postgres") | r2), and \(lg("max"; "read") | r2). The servers spent \(per1000("max"; "plain") | r2) CPU s per 1,000 messages without receipts and \(per1000("max"; "read") | r2) with them (each message then also carries its receipt, stored through the persister, and its ack; and the receipts that moved a position, their `message-read` events). Per message over the whole runs (table above), the servers alone went from \(servers("max"; "plain") | r3) to \(servers("max"; "read") | r3) ms of CPU: even with the load generator on another machine, a CPU-bound box would carry at most \((servers("max"; "plain") / servers("max"; "read")) | r2) of the messages with receipts; the load generator\u0027s own extra work (a receipt to send, an ack to read per message) takes the rest of the gap here.\n" +
  "- **Open loop.** \(if $s.sustained_plain != null then "Without receipts the search found \($s.sustained_plain) msg/s sustained (p99 delivery < 100 ms), with receipts \($s.sustained_read // 0)." else "" end) At \($s.rate) msg/s: busy cores \(busy("rate"; "plain") | r2) without receipts, \(busy("rate"; "read") | r2) with; server CPU \(per1000("rate"; "plain") | r2) and \(per1000("rate"; "read") | r2) s per 1,000 messages; the load generator \(lg("rate"; "plain") | r2) and \(lg("rate"; "read") | r2) cores in the window. A step that is carried delivers its target whatever it costs, so its ratio is 1 until the receipts push the box past what it carries; the p99 delivery shows how close that is. \(def steps_of(v): [$runs[] | select(.mode == "search" and .variant == v)];
    def at(v; rate): steps_of(v) | map(select(.r.rate_target == rate)) | first;
    (at("plain"; $s.sustained_plain)) as $p | (at("read"; $s.sustained_read)) as $w |
    if $p == null then "" else "At the sustained steps the box was busy \($p.cpu.box_busy_cores | r2)\(if $w != null then " (without receipts, \($s.sustained_plain) msg/s) and \($w.cpu.box_busy_cores | r2) (with, \($s.sustained_read) msg/s)" else "" end) of \($m.cpus) cores, and the servers spent \($p.r.server_cpu_s_per_1000_msgs | r2)\(if $w != null then " and \($w.r.server_cpu_s_per_1000_msgs | r2)" else "" end) CPU s per 1,000 messages, against \(per1000("max"; "plain") | r2) in the closed loop: at these rates the persister\u0027s batches are small and each pays a whole transaction (and with receipts their statements too), so the box nears saturation and the p99 crosses 100 ms far below the closed loop\u0027s rate." end)\n" +
  (list_cpu($first) as $c | "- **Inbox list, one request after another.** A first page takes p50 \($first.first_page_ms.p50 | r2) ms, of which the gateway, the persister and Postgres spend \($c.gateway | r2) + \($c.persister | r2) + \($c.postgres | r2) ms of CPU; the rest is the hops (HTTP, the NATS request to the persister and its answer, the query\u0027s round trip) and waiting for a core. The box was busy \($first_cpu[0].box_busy_cores | r2) of \($n) cores.\n") +
  "- **Inbox list, \($s.list_connections) connections.** \($conc.requests_per_s | r0) requests/s with the box busy \($conc_cpu[0].box_busy_cores | r2) of \($n) cores\(if $conc_cpu[0].box_busy_cores >= 0.9 * $n then ": CPU-bound, so the latency there is mostly queueing for the two cores" else "" end).")
"' 
