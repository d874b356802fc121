#!/usr/bin/env bash
# Writes GROUPS.md (on stdout) from the raw JSON of deploy/bench/groups.sh: RAW_DIR P99_LIMIT_MS.
set -euo pipefail
raw=$1
limit=$2
machine=$raw/machine.json

echo "# Group fan-out"
echo
echo "Written by \`$(head -1 "$raw/commands.txt")\` from its raw results in \`raw-groups/\` (every"
echo "load generator command is in \`raw-groups/commands.txt\`)."
echo
jq -r '"- **When and where:** \(.date), commit `\(.commit[0:7])`, \(.cpus) × \(.cpu), \(.memory), kernel \(.kernel); load average at the start \(.load_at_start)." +
  (if .quick then "\n- **Quick run** (`--quick`): steps of 2 s and two rates only; directions, not numbers." else "" end)' "$machine"
echo "- **Load:** 1,000 members connected in every step (groups of 10, 100 or 1,000: 100, 10 or 1 groups), each"
echo "  group spanning both gateways in the cluster; one sender per group on the open loop's one clock,"
echo "  evenly paced; every member's socket (the sender's included) must receive every message once,"
echo "  in order. Latency from the scheduled send time. A step holds when p99 delivery < $limit ms"
echo "  and nothing was lost, duplicated or reordered; rates rise until a step does not hold."
echo "- **Server CPU:** every server process in the measured window, in cores: the all-in-one process;"
echo "  the cluster's gateways, persister, presence, nats-server and (runs from 2026-12-07 on) the"
echo "  Postgres backends of its database."
echo "- **The load generator shares the two cores** with the servers: it parses every delivery too."
echo
echo "## Sustained fan-out"
echo
echo "| configuration | group size | groups | highest step held: deliveries/s | messages/s | p50 / p99 delivery (ms) | server CPU (cores) | first step missed |"
echo "|---|---|---|---|---|---|---|---|"
for config in all-in-one cluster; do
  for size in 10 100 1000; do
    files=$(ls "$raw"/"$config"-g"$size"-d*.json 2>/dev/null | sort -t d -k3 -n || true)
    [[ -z $files ]] && continue
    best="—" missed="none: the highest step held"
    for f in $(for f in $files; do echo "$(jq '.rate_target * .members' "$f") $f"; done | sort -n | cut -d' ' -f2); do
      held=$(jq --argjson limit "$limit" '.ok and .delivery_latency_ms.p99 < $limit' "$f")
      if [[ $held == true ]]; then
        best=$f
      else
        missed=$(jq -r '"\(.rate_target * .members | floor) " + if .run_failed then "(not run: \(.run_failed))" else
          "(p99 \(.delivery_latency_ms.p99 | . * 10 | round / 10) ms, lost \(.lost), errors \(.errors + .message_errors))" end' "$f")
        break
      fi
    done
    if [[ $best == "—" ]]; then
      echo "| $config | $size | $((1000 / size)) | — | — | — | — | $missed |"
    else
      jq -r --arg config "$config" --arg missed "$missed" '"| \($config) | \(.members) | \(.groups) | **\(.deliveries_per_s | round)** | \(.messages_per_s | round) | \(.delivery_latency_ms.p50 | . * 10 | round / 10) / \(.delivery_latency_ms.p99 | . * 10 | round / 10) | \(if .server_cpu_s then (.server_cpu_s / .duration_s * 100 | round / 100) else "—" end) | \($missed) |"' "$best"
    fi
  done
done
echo
echo "## Every step"
echo
echo "| run | offered deliveries/s | measured deliveries/s | p50 / p99 / max delivery (ms) | lost | duplicates | out of order | errors |"
echo "|---|---|---|---|---|---|---|---|"
for f in "$raw"/*-g*-d*.json; do
  if jq -e '.run_failed' "$f" >/dev/null; then
    jq -r --arg name "$(basename "$f" .json)" '"| \($name) | \(.rate_target * .members | floor) | not run: \(.run_failed) | | | | | |"' "$f"
    continue
  fi
  jq -r --arg name "$(basename "$f" .json)" '"| \($name) | \(.rate_target * .members | floor) | \(.deliveries_per_s | round) | \(.delivery_latency_ms.p50 | . * 10 | round / 10) / \(.delivery_latency_ms.p99 | . * 10 | round / 10) / \(.delivery_latency_ms.max | round) | \(.lost) | \(.duplicates) | \(.out_of_order) | \(.errors + .message_errors) |"' "$f"
done
