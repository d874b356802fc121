#!/usr/bin/env bash
# Writes the scale lab's SCALE.md (on stdout) from the raw JSON of scale.sh. Called by
# scale.sh; it can be re-run on an existing raw-scale/ directory:
#   RAW=deploy/bench/raw-scale REPO=. bash deploy/bench/scale-report.sh > deploy/bench/SCALE.md
set -euo pipefail
export LC_ALL=C
RAW=${RAW:?directory of the raw JSON}
REPO=${REPO:-.}
meta=$RAW/meta.json
[[ -s $meta ]] || { echo "no $meta" >&2; exit 1; }
m() { jq -r "$1" "$meta"; }

# Every configuration's summary, one array, ordered by experiment and count.
summaries=$(cat "$RAW"/*.summary.json 2>/dev/null | jq -s 'sort_by(.experiment != "gateways", .n)')
steps=$(cat "$RAW"/*.cpu.json 2>/dev/null | jq -s '.')

cpu_model=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
mem_gib=$(awk '/^MemTotal/ { printf "%.1f", $2 / 1048576 }' /proc/meminfo)
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo unknown)
# The lab's own output does not count as a change.
if [[ -n $(git -C "$REPO" status --porcelain -- . ':!deploy/bench/SCALE.md' ':!deploy/bench/raw-scale' 2>/dev/null) ]]; then
  commit+=" (with uncommitted changes)"
fi

if [[ $(m .quick) == true ]]; then
  echo "# Scale lab — QUICK RUN (2-second steps, at most 3 per configuration; not for numbers)"
else
  echo "# Scale lab"
fi
echo
if [[ $(m .limits) != true ]]; then
  echo "**WITHOUT CPU LIMITS: cgroup v1 cpu was not writable, so the replicas were not confined and"
  echo "competed for the same CPUs. These numbers show that the script runs, nothing about scaling.**"
  echo
fi
echo "Does adding gateways add capacity, and adding persister replicas? Each replica of the tier"
echo "under test is confined to the same CPU share (a cgroup v1 CFS quota, what a container CPU"
echo "limit is in Kubernetes); the other tier, NATS, Postgres and the load generator are not"
echo "limited. See [README.md](README.md#scale-lab-scalesh)."
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit"
echo "- machine: $(nproc) CPUs ($cpu_model), $mem_gib GiB memory, $(uname -sr)"
echo "- software: $(nats-server --version 2>/dev/null || echo nats-server), Postgres $(psql "${PG_URL:-postgres://postgres@127.0.0.1:5432}/postgres" -Atc 'show server_version' 2>/dev/null || echo '?')"
echo "- command: \`$(m .command)\`"
echo "- limits: each gateway $(m .gateway_cpu) core (quota $(jq -r '.gateway_cpu * .gateway_period_us | round' "$meta") µs per $(m .gateway_period_us) µs period) in experiment 1; each persister $(m .persister_cpu) core (quota $(jq -r '.persister_cpu * .persister_period_us | round' "$meta") µs per $(m .persister_period_us) µs) in experiment 2"
echo "- load: \`chat-loadgen rate\`, open loop, arrivals: $(m .arrival); $(m .users_per_gateway) users per loaded gateway (experiment 1), $(m .persister_users) users on $(m .persister_gateways) gateways (experiment 2); warm-up $(m .warmup), measured $(m .duration) per step, at most $(m .max_steps) steps per configuration"
echo "- persister settings: $(jq -r '.persister_settings // {} | to_entries | map("`\(.key)` \(.value)") | join(", ")' "$meta")"
echo "- sustained: the fastest step that delivered ≥ 95 % of its target with p99 delivery < $(m .p99_limit_ms) ms and nothing lost, duplicated, reordered or answered with an error"

# table EXPERIMENT: the table of one experiment.
table() {
  jq -r --arg exp "$1" '
    def r(d): if . == null then "–" else . * pow(10; d) | round / pow(10; d) | tostring end;
    def pct: if . == null then "–" else (. * 100 | round | tostring) + " %" end;
    map(select(.experiment == $exp)) as $rows |
    ($rows | min_by(.n)) as $base |
    (if $base == null or $base.sustained_per_s == null then null else $base.sustained_per_s / $base.n end) as $per |
    $rows[] |
    "| \(.n) | \(.sustained_per_s | r(0)) | \(.p99_delivery_ms | r(1)) | \(.p99_ack_ms | r(1)) | \(.lost) / \(.duplicated) / \(.out_of_order) | \(.own_ms_per_1000 | r(1)) | \(.foreign_ms_per_1000 | r(2)) | \(if $per == null or .sustained_per_s == null then "–" else (.sustained_per_s / (.n * $per)) | r(2) end) | \(.tier_quota_used | pct) | \(.throttled_periods_pct | if . == null then "–" else (round | tostring) + " %" end) | \(.box_cores | r(2)) | \(.bounded_by) | \(if .most_delivered == null then "–" else "\(.most_delivered.delivered_per_s | r(0)) (p99 \(.most_delivered.p99_delivery_ms | r(0)) ms)" end) |"' <<<"$summaries"
}

echo
echo "## Experiment 1: gateways ($(m .gateway_cpu) core each)"
echo
echo "N loaded gateways, each limited, plus one limited gateway with no socket; one persister and"
echo "presence unlimited. Own CPU: the N loaded gateways' CPU time in the measured window, summed,"
echo "per 1,000 messages delivered in it. Foreign CPU: the gateway with no socket's, per 1,000"
echo "messages of the cluster (traffic that is not its own). Efficiency: rate(N) / (N × rate(1))."
echo
echo "| N | sustained msg/s | p99 delivery (ms) | p99 ack (ms) | lost / dup / ooo | own CPU-ms / 1,000 | foreign CPU-ms / 1,000 | efficiency | quota used | periods throttled | box CPU (cores) | bounded by (the failed step above) | most delivered in one step, any p99 (msg/s) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
table gateways

echo
echo "## Experiment 2: persister replicas ($(m .persister_cpu) core each)"
echo
echo "P persister replicas, each limited; $(m .persister_gateways) gateways and presence unlimited. Own CPU: the P"
echo "replicas' CPU time per 1,000 messages (foreign: not applicable, replicas share the partitions'"
echo "consumers and none sees another's work). Efficiency: rate(P) / (P × rate(1))."
echo
echo "| P | sustained msg/s | p99 delivery (ms) | p99 ack (ms) | lost / dup / ooo | own CPU-ms / 1,000 | foreign CPU-ms / 1,000 | efficiency | quota used | periods throttled | box CPU (cores) | bounded by (the failed step above) | most delivered in one step, any p99 (msg/s) |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
table persisters

# ---- the model
echo
echo "## MODEL: gateways at any N"
echo
if [[ $(m .limits) != true ]]; then
  echo "No model: the gateways ran without CPU limits, so B (their CPU budget) is not known."
else
jq -r --argjson gw "$(m .gateway_cpu)" '
  def r(d): . * pow(10; d) | round / pow(10; d);
  def big: if . >= 1e6 then "more than 10^6" else (r(0) | tostring) end;
  map(select(.experiment == "gateways" and .sustained_per_s != null and .foreign_ms_per_1000 != null and .own_ms_per_1000 != null)) as $rows |
  if ($rows | length) == 0 then
    "No gateway configuration was sustained with its CPU measured: no model."
  else
    ($rows | max_by(.n)) as $m |
    ($gw * 1000) as $B |
    ($m.foreign_ms_per_1000 / 1000) as $cf |
    ($m.own_ms_per_1000 / 1000 - $m.n * $cf) as $cown |
    def X(n): $B / ($cown / n + $cf);
    if $cown <= 0 then "The measured own cost (\($m.own_ms_per_1000 | r(3)) CPU-ms per 1,000 over N = \($m.n)) is not above N × the foreign cost: no model."
    else
    [
      "A gateway with CPU budget B (ms of CPU per second) in a cluster of N gateways at X messages/s",
      "spends c_own·X/N on the messages it serves and c_f·X on the cluster'"'"'s traffic it receives",
      "for others, so the cluster'"'"'s capacity is X(N) = B / (c_own/N + c_f). From the largest",
      "measured configuration (N = \($m.n), at its sustained \($m.sustained_per_s | r(0)) msg/s):",
      "",
      "- c_f = \($cf * 1000 | r(4)) CPU-ms per 1,000 cluster messages (the gateway with no socket: \($m.foreign_cpu_ms_per_s | r(3)) CPU-ms/s during the window\(if $m.foreign_idle_cpu_ms_per_s == null then "" else ", \($m.foreign_idle_cpu_ms_per_s | r(3)) CPU-ms/s with the cluster idle" end))",
      "- c_own = own − N·c_f = \($m.own_ms_per_1000 | r(3)) − \($m.n) × \($cf * 1000 | r(4)) = \($cown * 1000 | r(3)) CPU-ms per 1,000 messages",
      "- B = \($gw) core = \($B | r(1)) ms/s per gateway (the quota; the measured steps used the share in the \"quota used\" column)",
      "",
      "| N | X(N) = B / (c_own/N + c_f), msg/s | linear N·B/c_own | X(N) / linear | measured |",
      "|---|---|---|---|---|",
      ( ([ $rows[].n ] + [10, 100, 1000] | unique) [] as $n |
        ($rows | map(select(.n == $n)) | first) as $row |
        "| \($n) | \(X($n) | r(0)) | \($n * $B / $cown | r(0)) | \(X($n) / ($n * $B / $cown) | r(3)) | \(if $row == null then "–" else ($row.sustained_per_s | r(0) | tostring) + " msg/s" end) |"),
      "",
      (if $m.foreign_idle_cpu_ms_per_s != null and $m.foreign_cpu_ms_per_s != null and $m.foreign_cpu_ms_per_s <= 1.5 * $m.foreign_idle_cpu_ms_per_s + 0.05 then
        "The gateway with no socket spent about as much during the window as with the cluster idle: it received (next to) nothing of the cluster'"'"'s traffic, so this c_f is its idle cost (heartbeats, timers) spread over the messages, an upper bound, and the N below a lower bound.\n"
      else "" end) +
      (if $cf <= 0 then
        "The foreign cost measured 0: at this resolution a gateway spends nothing on traffic that is not its own, and X(N) stays linear."
      else
        "X(N) falls below 85 % of linear when c_own/(c_own + N·c_f) < 0.85, i.e. at N ≈ 0.176·c_own/c_f = **\(0.17647 * $cown / $cf | big)** gateways. Why: every gateway receives some traffic for others, and that share, c_f·X per gateway, grows with the cluster'"'"'s rate rather than with the gateway'"'"'s own, so at large N each new gateway spends a growing part of its budget on messages it does not serve."
      end)
    ] | .[]
    end
  end' <<<"$summaries"
fi

# ---- every step
echo
echo "## Every step"
echo
echo "| step | target msg/s | delivered msg/s | p99 delivery (ms) | p99 ack (ms) | lost / dup / ooo / errors | tier CPU-ms (loadgen's reading) | foreign CPU-ms | box CPU (cores) | quota used | periods throttled | result |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
jq -r '
  def r(d): if . == null then "–" else . * pow(10; d) | round / pow(10; d) | tostring end;
  .[] | if .measured | not then "| \(.name) | | | | | | | | | | | no report (loadgen exit \(.loadgen_exit)) |" else
  "| \(.name) | \(if .mode == "max" then "closed loop" else (.rate_target | r(0)) end) | \(.delivered_per_s | r(0)) | \(.p99_delivery_ms | r(1)) | \(.p99_ack_ms | r(1)) | \(.lost) / \(.duplicated) / \(.out_of_order) / \(.errors) | \(.tier_cpu_ms | r(0)) (\(.tier_cpu_ms_loadgen | r(0))) | \(.foreign_cpu_ms | r(1)) | \(.box_cores | r(2)) | \(if .tier_quota_used == null then "–" else (.tier_quota_used * 100 | round | tostring) + " %" end) | \(if .throttled_periods_pct == null then "–" else (.throttled_periods_pct | round | tostring) + " %" end) | \(if .mode == "max" then "estimate" elif .pass then "pass" else "fail" end)\(if .window_covered then "" else " (CPU window not covered)" end) |" end' \
  <<<"$(jq 'sort_by(.name | [splits("-")] | [(.[0] | test("^ps")), (.[0] | ltrimstr("gw") | ltrimstr("ps") | tonumber), (.[1] | if . == "estimate" then 0 else ltrimstr("s") | tonumber end)])' <<<"$steps")"

cat <<EOF

## How it is measured

- **The limit.** Each replica of the tier under test runs in a cgroup v1 \`cpu\` group of its own
  with \`cpu.cfs_quota_us\` / \`cpu.cfs_period_us\` = its share: the kernel's CFS bandwidth
  control, which is what a Kubernetes container CPU limit sets. The period is 10 ms (not the
  kernel's and Kubernetes' 100 ms) so that a throttled replica waits ~10 ms at most for its next
  slice, instead of stalls near 100 ms that would land in the p99 and make the lab measure the
  throttling (the kernel's smallest quota is 1 ms: shares under 0.1 core get 1 ms per
  1 ms/share).
- **CPU time** of every process the lab starts comes from its own \`cpuacct\` group
  (\`cpuacct.usage\`, ns, all threads), sampled every 100 ms and interpolated to the loadgen's
  measured window (its start: the loadgen's start + its set-up time + 100 ms + warm-up). The
  loadgen also reads the tier's \`/proc/<pid>/stat\` at its window's edges: the figure in
  parentheses in "Every step", a check on the window. Box CPU: \`/proc/stat\` over the window,
  everything on the machine included.
- **Quota used**: the tier's CPU time in the window / (replicas × share × window). Near 100 %,
  the tier is what bounds the step; well below it, something else is (the unlimited tiers, the
  box, the latency of the throttling).
- **The search**: open-loop steps from a first guess (a closed-loop \`chat-loadgen max\` run and
  90 % of it for the first configuration; N × the first configuration's sustained target for
  the next ones), 12 % lower after each failure until one passes, then once 10 % higher. Each
  step waits for the work queue to be empty first. "Bounded by" is the failed step above the
  sustained one and why it failed.
- **Most delivered in one step**: the most messages/s any open-loop step of the configuration
  delivered with nothing lost, duplicated, reordered or in error, whatever its p99: a lower
  bound of what the tier carries when the latency criterion is out of reach (a throttling
  floor of the p99, see README.md). It depends on the steps the search tried (a configuration
  whose first step already passed was never pushed), so it is not turned into an efficiency.
- **Lost / dup / ooo**: summed over every step of the configuration, the estimate included; the
  script exits 1 if any is not 0.

## Commands

\`\`\`
$(cat "$RAW/commands.txt" 2>/dev/null)
\`\`\`

Raw JSON of every step: [raw-scale/](raw-scale/) (\`NAME.json\`: the loadgen's report;
\`NAME.cpu.json\`: CPU per process, box, throttling; \`KEY.summary.json\`: a configuration).
EOF
