#!/usr/bin/env python3
"""Where a send waits, by stage: the stage histograms of the roles' /metrics (ARCHITECTURE.md,
Observability) over a measured window, from scrapes taken before and after it.

    stages.py window BEFORE.prom... -- AFTER.prom...   one JSON object: each stage's count, mean
                                                        and the bucket bounds of its p50 and p99
    stages.py table RUN.json...                         the Markdown table of stages.sh's runs
    stages.py selftest                                  checks the arithmetic on a made-up scrape

The scrapes of one moment (a gateway's and the persister's, say) are summed; the window is
after minus before, so what the processes counted before it does not count. Quantiles are
bucket upper bounds (Prometheus's own `histogram_quantile` interpolates within the bucket;
a bound is coarser but never flatters).
"""

import json
import math
import re
import sys
from collections import defaultdict

# The stages in the order a send crosses them, with the words the table uses.
STAGES = [
    ("chat_gateway_outbox_wait_seconds", "in the outbox lane (per command)"),
    ("chat_gateway_enqueue_seconds", "onto the work queue (per lane batch)"),
    ("chat_persister_queue_wait_seconds", "held in the work queue (per job)"),
    ("chat_persister_batch_fill_seconds", "filling the batch (per batch)"),
    ("chat_persister_insert_seconds", "the transaction (per batch)"),
    ("chat_gateway_outcome_wait_seconds", "stored to outcome (per lane batch)"),
    ("chat_gateway_send_ack_seconds", "send to ack, on the gateway (per send)"),
]

SERIES = re.compile(r'^(?P<name>\w+?)_(?P<part>bucket|sum|count)(?:\{(?P<labels>[^}]*)\})? (?P<value>\S+)$')
LE = re.compile(r'le="(?P<le>[^"]+)"')


def parse(text):
    """{histogram: {"sum": s, "count": c, "buckets": {bound: cumulative count}}} of the stages."""
    wanted = {name for name, _ in STAGES}
    found = defaultdict(lambda: {"sum": 0.0, "count": 0.0, "buckets": defaultdict(float)})
    for line in text.splitlines():
        m = SERIES.match(line)
        if not m or m["name"] not in wanted:
            continue
        h = found[m["name"]]
        value = float(m["value"])
        if m["part"] == "bucket":
            le = LE.search(m["labels"] or "")
            if le:
                h["buckets"][math.inf if le["le"] == "+Inf" else float(le["le"])] += value
        else:
            h[m["part"]] += value
    return found


def add(into, other):
    for name, h in other.items():
        into[name]["sum"] += h["sum"]
        into[name]["count"] += h["count"]
        for le, c in h["buckets"].items():
            into[name]["buckets"][le] += c


def window(before_texts, after_texts):
    """Each stage's count, mean (ms) and p50 / p99 bucket bounds (ms) between the scrapes."""
    before, after = parse(""), parse("")
    for text in before_texts:
        add(before, parse(text))
    for text in after_texts:
        add(after, parse(text))
    out = {}
    for name, _ in STAGES:
        a, b = after.get(name), before.get(name)
        if a is None:
            out[name] = None  # not exported: an older build
            continue
        count = a["count"] - (b["count"] if b else 0)
        total = a["sum"] - (b["sum"] if b else 0)
        bounds = sorted(a["buckets"])
        cumulative = [a["buckets"][le] - (b["buckets"].get(le, 0) if b else 0) for le in bounds]

        def bound(q):
            for le, c in zip(bounds, cumulative):
                if count > 0 and c >= q * count:
                    return None if le == math.inf else round(le * 1000, 3)
            return None

        out[name] = {
            "count": int(count),
            "mean_ms": round(total / count * 1000, 3) if count > 0 else None,
            "p50_at_most_ms": bound(0.5),
            "p99_at_most_ms": bound(0.99),
        }
    return out


def table(runs):
    """The Markdown table: a column per run (configuration and rate), a row per stage."""
    def cell(stage):
        if not stage or stage["mean_ms"] is None:
            return "–"
        p99 = stage["p99_at_most_ms"]
        return f'{stage["mean_ms"]:.2f} (≤ {p99:g})' if p99 is not None else f'{stage["mean_ms"]:.2f}'

    head = [f'{r["gateways"]} gw, {r["rate"]:,}/s' for r in runs]
    lines = ["| stage: mean ms (p99 at most) | " + " | ".join(head) + " |", "|---" * (len(runs) + 1) + "|"]
    for name, words in STAGES:
        lines.append(f"| {words} | " + " | ".join(cell(r["stages"].get(name)) for r in runs) + " |")
    lines.append("| delivery p50 / p99, client (ms) | " + " | ".join(
        f'{r["delivery_p50_ms"]:.1f} / {r["delivery_p99_ms"]:.1f}' for r in runs) + " |")
    lines.append("| delivered (msg/s) | " + " | ".join(f'{r["delivered_per_s"]:,.0f}' for r in runs) + " |")
    return "\n".join(lines)


def selftest():
    def scrape(count, total, buckets):
        rows = [f'chat_persister_insert_seconds_bucket{{le="{le}"}} {c}' for le, c in buckets]
        return "\n".join(rows + [f"chat_persister_insert_seconds_sum {total}",
                                 f"chat_persister_insert_seconds_count {count}", "# HELP other", "x_total 3"])
    before = scrape(10, 0.5, [("0.001", 5), ("0.005", 10), ("+Inf", 10)])
    after = scrape(110, 1.5, [("0.001", 6), ("0.005", 100), ("+Inf", 110)])
    got = window([before], [after])["chat_persister_insert_seconds"]
    assert got == {"count": 100, "mean_ms": 10.0, "p50_at_most_ms": 5.0, "p99_at_most_ms": None}, got
    # Two processes' scrapes of one moment add up.
    two = window([before, before], [after, after])["chat_persister_insert_seconds"]
    assert two["count"] == 200 and two["mean_ms"] == 10.0, two
    assert window([""], [""])["chat_gateway_outbox_wait_seconds"] is None
    print("stages.py selftest: ok")


def main(argv):
    if argv[:1] == ["window"] and "--" in argv:
        split = argv.index("--")
        read = lambda paths: [open(p, encoding="utf-8").read() for p in paths]
        print(json.dumps(window(read(argv[1:split]), read(argv[split + 1:]))))
    elif argv[:1] == ["table"]:
        print(table([json.load(open(p, encoding="utf-8")) for p in argv[1:]]))
    elif argv == ["selftest"]:
        selftest()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
