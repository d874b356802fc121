#!/usr/bin/env bash
# Repeats the scale lab's gateway experiment (scale.sh, experiment 1) for 1 and N gateways, K
# times, and reports the efficiency rate(N) / (N × rate(1)) of each run and their median: one
# run's efficiency rests on its own 1-gateway baseline, which a busy moment of the box moves
# by 10–20 %, so a single run proves little. Writes SCALE-REPEATS.md and each run's raw JSON
# (raw-scale-repeats/run-<i>/) to the output directory. See README.md here.
#
# Usage: deploy/bench/scale-repeat.sh [--runs K] [--gateways N] [--out DIR] [-- scale.sh options]
#   --runs      how many runs (default 3)
#   --gateways  the larger gateway count (default 8)
#   --out       where SCALE-REPEATS.md and raw-scale-repeats/ go (default: this directory)
#   options after `--` go to every scale.sh run (e.g. -- --gateway-cpu 0.05)
# Needs what scale.sh needs.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)

runs=3 n=8 out=$here
while (($#)); do
  case $1 in
    --runs) runs=${2:?--runs needs a number}; shift ;;
    --gateways) n=${2:?--gateways needs a number}; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    --) shift; break ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument $1 (see -h)" >&2; exit 2 ;;
  esac
  shift
done
extra=("$@")

raw=$out/raw-scale-repeats
rm -rf "$raw"
mkdir -p "$raw"
status=0
for ((i = 1; i <= runs; i++)); do
  echo "== $(date -u +%H:%M:%S) run $i of $runs: 1 and $n gateways" >&2
  # The binaries are built once, by the first run.
  if ((i > 1)); then export SCALE_NO_BUILD=1; fi
  bash "$here/scale.sh" --gateways "1 $n" --persisters "" --out "$raw/run-$i" "${extra[@]}" >&2 || status=1
done

# One line per run: rate(1), rate(N), efficiency (0 when a configuration has no sustained rate).
table=$(for ((i = 1; i <= runs; i++)); do
  jq -rs --argjson n "$n" '
    (map(select(.n == 1)) | first | .sustained_per_s // 0) as $one |
    (map(select(.n == $n)) | first | .sustained_per_s // 0) as $many |
    "\($one | floor) \($many | floor) \(if $one > 0 then $many / ($n * $one) else 0 end)"' \
    "$raw/run-$i/raw-scale/gw1.summary.json" "$raw/run-$i/raw-scale/gw$n.summary.json" 2>/dev/null || echo "0 0 0"
done)
median=$(awk '{ print $3 }' <<<"$table" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }')
commit=$(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo unknown)

{
  echo "# Scale lab, repeated: 1 and $n gateways"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); commit $commit"
  echo "- machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo))"
  echo "- command: \`deploy/bench/scale-repeat.sh --runs $runs --gateways $n${extra[*]:+ -- ${extra[*]}}\`; each run is \`scale.sh --gateways \"1 $n\" --persisters \"\"\` (its SCALE.md, with every step, is in raw-scale-repeats/run-<i>/)"
  echo
  echo "| run | 1 gateway, sustained msg/s | $n gateways, sustained msg/s | efficiency = rate($n) / ($n × rate(1)) |"
  echo "|---|---|---|---|"
  i=0
  while read -r one many eff; do
    i=$((i + 1))
    printf '| %d | %s | %s | %.2f |\n' "$i" "$one" "$many" "$eff"
  done <<<"$table"
  printf '| **median** | | | **%.2f** |\n' "$median"
} >"$out/SCALE-REPEATS.md"
cat "$out/SCALE-REPEATS.md"
exit "$status"
