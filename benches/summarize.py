#!/usr/bin/env python3
"""Turns the raw `tern bench --json` results of benches/compare.sh into a markdown
table: median and min–max per workload and system, and the ratios the
performance targets are stated in.

Usage: summarize.py RAW_DIR OUTPUT.md TERN_VERSION NATS_VERSION ROUNDS DURATION [RABBITMQ_VERSION]
"""

import glob
import json
import os
import platform
import re
import statistics
import sys
from collections import defaultdict


def load(raw):
    runs = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(raw, "*.json"))):
        name, system, _round, _ = os.path.basename(path).rsplit(".", 3)
        try:
            with open(path) as handle:
                runs[(name, system)].append(json.load(handle))
        except (json.JSONDecodeError, OSError):
            pass
    return runs


def spread(values, digits=0):
    if not values:
        return "–"
    fmt = f"{{:,.{digits}f}}"
    median = fmt.format(statistics.median(values))
    if len(values) == 1:
        return median
    return f"{median} ({fmt.format(min(values))}–{fmt.format(max(values))})"


def median(runs, key, sub=None):
    values = [run[key][sub] if sub else run[key] for run in runs]
    return statistics.median(values) if values else None


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, Linux {platform.release()}"


def main():
    raw, output, tern_version, nats_version, rounds, duration = sys.argv[1:7]
    rabbitmq_version = sys.argv[7] if len(sys.argv) > 7 else 'rabbitmq-server'
    runs = load(raw)
    workloads = []
    for (name, _system) in runs:
        if name not in workloads:
            workloads.append(name)
    order = ["pubsub-1x1-128B", "pubsub-1x4-128B", "queue-2x2-128B-acks", "pubsub-1x1-64KiB",
             "latency-20k", "latency-100k", "req-1x1-128B", "queue-2x2-128B-fire-and-forget",
             "queue-2x2-128B-durable"]
    workloads.sort(key=lambda name: order.index(name) if name in order else 99)
    systems = ["tern", "terndurable", "nats", "rabbitmq", "relay", "direct"]

    lines = [
        f"# Tern vs nats-server, {os.path.basename(output).removeprefix('comparison-').removesuffix('.md')}",
        "",
        f"- Machine: {machine()}; everything on loopback, client and server sharing the cores.",
        f"- Versions: {tern_version}; {nats_version} (JetStream on, memory storage for the queue workload); "
        "NATS driven through async-nats, the official Rust client.",
        f"- Method: `benches/compare.sh` — {rounds} interleaved rounds (tern, nats, relay, direct) of "
        f"{duration} s per workload; median and (min–max) over the rounds. The same tool, `tern bench`, "
        "drives every system and checks every message's sequence number.",
        "- Durable queues (`queue-2x2-128B-durable`): terndurable is Tern with `STORE_URL=file://` and "
        "`STORE_FSYNC=always` (PUBLISH_OK after fsync); nats is JetStream with **file** storage and PubAcks "
        f"(its default sync interval); rabbitmq is {rabbitmq_version} with a durable queue, persistent "
        "messages and publisher confirms, driven through lapin. Each publisher keeps 256 confirms in flight; "
        "consumers ack every message, prefetch 1000. All stores on the same disk.",
        "- relay: `tern relay`, a process that copies bytes between two sockets (no parsing, no routing): "
        "the ceiling a broker process can approach. direct: one TCP connection, publisher to reader.",
        "",
        "## Throughput and latency",
        "",
        "| workload | system | delivered msgs/s | MB/s | p50 µs | p99 µs | lost / dup / reordered |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in workloads:
        for system in systems:
            results = runs.get((name, system))
            if not results:
                continue
            rate = [r["delivered_per_sec"] for r in results]
            mb = [r["delivered_mb_per_sec"] for r in results]
            p50 = [r["latency"]["p50_us"] for r in results]
            p99 = [r["latency"]["p99_us"] for r in results]
            faults = "/".join(str(sum(r[k] for r in results)) for k in ("lost", "duplicated", "out_of_order"))
            dropped = sum(r["reported_dropped"] for r in results)
            if dropped:
                faults += f" ({dropped} reported dropped)"
            lines.append(f"| {name} | {system} | {spread(rate)} | {spread(mb, 1)} | {spread(p50, 1)} | "
                         f"{spread(p99, 1)} | {faults} |")

    durable = [(system, runs.get(("queue-2x2-128B-durable", system))) for system in ("terndurable", "nats", "rabbitmq")]
    if any(results and results[0].get("confirm_latency") for _, results in durable):
        lines += ["", "## Durable queues: publish-to-confirm latency", "",
                  "| system | confirm p50 µs | confirm p99 µs |", "|---|---|---|"]
        for system, results in durable:
            confirms = [r["confirm_latency"] for r in results or [] if r.get("confirm_latency")]
            if confirms:
                lines.append(f"| {system} | {spread([c['p50_us'] for c in confirms], 1)} | "
                             f"{spread([c['p99_us'] for c in confirms], 1)} |")

    def ratio(name, key, numerator, denominator, sub=None):
        top, bottom = runs.get((name, numerator)), runs.get((name, denominator))
        if not top or not bottom:
            return None
        a, b = median(top, key, sub), median(bottom, key, sub)
        return a / b if b else None

    def verdict(value, target, at_most=False):
        if value is None:
            return "not measured", "–"
        met = value <= target if at_most else value >= target
        return f"{value:.2f}×", "met" if met else "NOT met"

    targets = [
        ("broadcast 1→1 128 B: delivered msgs/s vs nats-server", ratio("pubsub-1x1-128B", "delivered_per_sec", "tern", "nats"), 3.0, False),
        ("broadcast 1→1 128 B: delivered msgs/s vs relay", ratio("pubsub-1x1-128B", "delivered_per_sec", "tern", "relay"), 0.5, False),
        ("broadcast 1→4 128 B: delivered msgs/s vs nats-server", ratio("pubsub-1x4-128B", "delivered_per_sec", "tern", "nats"), 3.0, False),
        ("queue 2→2 with acks: delivered msgs/s vs JetStream", ratio("queue-2x2-128B-acks", "delivered_per_sec", "tern", "nats"), 5.0, False),
        ("durable queue 2→2, confirmed, fsync always: msgs/s vs JetStream file", ratio("queue-2x2-128B-durable", "delivered_per_sec", "terndurable", "nats"), 3.0, False),
        ("durable queue 2→2, confirmed, fsync always: msgs/s vs RabbitMQ durable", ratio("queue-2x2-128B-durable", "delivered_per_sec", "terndurable", "rabbitmq"), 5.0, False),
        ("64 KiB 1→1: MB/s vs relay", ratio("pubsub-1x1-64KiB", "delivered_mb_per_sec", "tern", "relay"), 0.8, False),
        ("latency at 20k msgs/s: p99 vs nats-server", ratio("latency-20k", "latency", "tern", "nats", "p99_us"), 1.0, True),
        ("latency at 20k msgs/s: p50 vs relay", ratio("latency-20k", "latency", "tern", "relay", "p50_us"), 2.0, True),
    ]
    lines += ["", "## Targets (ratios of medians from this run)", "",
              "| target | ratio | goal | verdict |", "|---|---|---|---|"]
    for label, value, goal, at_most in targets:
        shown, met = verdict(value, goal, at_most)
        lines.append(f"| {label} | {shown} | {'≤' if at_most else '≥'} {goal}× | {met} |")

    metrics_path = os.path.join(raw, "store-metrics.txt")
    if os.path.exists(metrics_path):
        values = {}
        for line in open(metrics_path):
            parts = line.split()
            if len(parts) == 2:
                values[parts[0]] = float(parts[1])
        commits = values.get("tern_store_group_commits_total", 0)
        if commits:
            lines += ["", "## Tern's durable store over the whole run", "",
                      f"- fsyncs: {values.get('tern_store_fsyncs_total', 0):,.0f}; group commits: {commits:,.0f}; "
                      f"records per group commit: {values.get('tern_store_records_committed_total', 0) / commits:,.1f} "
                      "(each commit syncs the segment and its marks file)."]

    idle = {}
    for system in ("tern", "nats"):
        path = os.path.join(raw, f"idle.{system}.txt")
        if os.path.exists(path):
            match = re.search(r"RESULT \w+ (-?[0-9.]+)", open(path).read())
            if match:
                idle[system] = float(match.group(1))
    if idle:
        lines += ["", "## Memory: idle subscriber connections", "",
                  "| system | RSS per idle subscriber connection |", "|---|---|"]
        for system, kib in idle.items():
            lines.append(f"| {system} | {kib:.1f} KiB |")
        if "tern" in idle and "nats" in idle:
            met = "met" if idle["tern"] <= idle["nats"] else "NOT met"
            lines.append(f"\nTarget (no more than nats-server per connection): {met}.")
    with open(output, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
