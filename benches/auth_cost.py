#!/usr/bin/env python3
"""The cost of permissions (AUTH_FILE), measured two ways in one interleaved run:
publish throughput, and the broker's CPU time per published message (from
/proc/PID/stat, which the noise of a shared 2-core machine moves far less than
throughput). Two brokers from the same binary, one with an AUTH_FILE whose user may
publish and subscribe everywhere but secret.> (so both lists are consulted), one
without; `tern bench` drives each in turn, ROUNDS times per workload.

Usage: benches/auth_cost.py [TERN_BINARY]   (ROUNDS=8 DURATION=4 by default)
Writes benches/results/auth-cost-<date>.md.
"""

import hashlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TERN = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/release/tern")
ROUNDS = int(os.environ.get("ROUNDS", "8"))
DURATION = os.environ.get("DURATION", "4")
WORKLOADS = {
    "pubsub-1x1-128B": ["pubsub", "--size", "128"],
    "pubsub-1x4-128B": ["pubsub", "--size", "128", "--subs", "4"],
    "queue-2x2-128B": ["queue", "--size", "128", "--pubs", "2", "--consumers", "2",
                       "--prefetch", "1000", "--confirm-window", "0"],
}
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start(env_extra):
    port, http = free_port(), free_port()
    env = {"PATH": os.environ["PATH"], "BIND_ADDR": "127.0.0.1", "TCP_PORT": str(port),
           "HTTP_PORT": str(http), "MAX_CONSUMERS": "100000", "RUST_LOG": "error", **env_extra}
    process = subprocess.Popen([TERN, "serve"], env=env)
    for _ in range(100):
        if subprocess.run([TERN, "health", "--http-port", str(http), "--path", "/ready"],
                          capture_output=True).returncode == 0:
            return process, port
        time.sleep(0.1)
    raise SystemExit("a broker did not start")


def main():
    token = subprocess.run([TERN, "auth", "token"], capture_output=True, text=True,
                           check=True).stdout.splitlines()[0]
    with tempfile.TemporaryDirectory() as work:
        auth = Path(work) / "auth.toml"
        auth.write_text(
            "[[users]]\nname = \"bench\"\n"
            f"token_sha256 = \"{hashlib.sha256(token.encode()).hexdigest()}\"\n"
            "publish   = { allow = [\">\"], deny = [\"secret.>\"] }\n"
            "subscribe = { allow = [\">\"], deny = [\"secret.>\"] }\n"
            "consume   = [\">\"]\n")
        plain, plain_port = start({})
        checked, checked_port = start({"AUTH_FILE": str(auth)})
        systems = {"without": (plain, plain_port, []), "with": (checked, checked_port, ["--token", token])}
        results = {(w, s): [] for w in WORKLOADS for s in systems}
        try:
            for round_ in range(1, ROUNDS + 1):
                for workload, args in WORKLOADS.items():
                    for system, (process, port, extra) in systems.items():
                        before = cpu_seconds(process.pid)
                        run = subprocess.run([TERN, "bench", *args, "--duration", DURATION, "--json",
                                              "--target", f"tern://127.0.0.1:{port}", *extra],
                                             capture_output=True, text=True)
                        used = cpu_seconds(process.pid) - before
                        if run.returncode != 0:
                            print(f"round {round_} {workload} {system}: {run.stderr.strip()[-200:]}")
                            continue
                        report = json.loads(run.stdout)
                        results[(workload, system)].append(
                            (report["publish_rate"], used / report["published"] * 1e6))
                        print(f"round {round_} {workload} {system}: {report['publish_rate']:,.0f} msgs/s, "
                              f"{used / report['published'] * 1e6:.3f} µs CPU/msg", flush=True)
        finally:
            for process, _, _ in systems.values():
                process.terminate()
                process.wait()
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    lines = [f"# The cost of permissions, {stamp}", "",
             f"`benches/auth_cost.py`: two brokers of one binary ({TERN}), one with an `AUTH_FILE` "
             "(publish and subscribe allowed on `>`, denied on `secret.>`), one without; "
             f"{ROUNDS} interleaved rounds of {DURATION} s on this machine (2 cores). Publish "
             "throughput and the broker's CPU time per published message (/proc), median (min–max).", "",
             "| workload | publishes/s with | without | ratio | broker CPU µs/msg with | without | ratio |",
             "|---|---|---|---|---|---|---|"]
    for workload in WORKLOADS:
        with_, without = results[(workload, "with")], results[(workload, "without")]
        if not with_ or not without:
            continue
        def cell(values, fmt):
            values = sorted(values)
            return f"{fmt(statistics.median(values))} ({fmt(values[0])}–{fmt(values[-1])})"
        rate = lambda v: f"{v / 1e6:.2f} M"
        cpu = lambda v: f"{v:.3f}"
        r_with, r_without = [r for r, _ in with_], [r for r, _ in without]
        c_with, c_without = [c for _, c in with_], [c for _, c in without]
        lines.append(
            f"| {workload} | {cell(r_with, rate)} | {cell(r_without, rate)} | "
            f"**{statistics.median(r_with) / statistics.median(r_without):.2f}×** | "
            f"{cell(c_with, cpu)} | {cell(c_without, cpu)} | "
            f"{statistics.median(c_with) / statistics.median(c_without):.2f}× |")
    lines.append("")
    out = ROOT / "benches/results" / f"auth-cost-{stamp}.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
