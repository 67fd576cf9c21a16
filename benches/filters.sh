#!/usr/bin/env bash
# Header filters' cost (issue 15): `tern bench MODE --filtered N` for each N, each
# run against a fresh broker (a queue left by one run would take the next run's
# messages too), rounds interleaved across binaries and N. Prints delivered msgs/s,
# broker and bench-client CPU per delivered message (user + system time over
# messages delivered) and the broker's peak RSS, then medians per binary, mode and N.
#
#   benches/filters.sh target/release/tern
#   ROUNDS=5 MODES="queue" FILTERS="10 10000" benches/filters.sh /tmp/tern-before target/release/tern
#
# N = 0 is the same workload without filters. Every binary is driven by the last
# one's `tern bench` (the same client for all; OWN_CLIENT=1: each by its own, to
# measure an SDK change), 4 receiver connections, prefetch 64.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: benches/filters.sh BINARY..." >&2; exit 2; }
BINARIES=("$@")
CLIENT=${BINARIES[-1]}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-3}
read -r -a MODES <<<"${MODES:-queue pubsub}"
read -r -a FILTERS <<<"${FILTERS:-0 10 10000}"
TICKS=$(getconf CLK_TCK)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
results=$(mktemp)
trap 'rm -f "$results"' EXIT

run() {
  local binary=$1 mode=$2 filters=$3 port http pid before after rss out times
  port=$(free_port) http=$(free_port)
  BIND_ADDR=127.0.0.1 TCP_PORT=$port HTTP_PORT=$http MAX_CONSUMERS=20000 \
    MAX_SUBSCRIPTIONS_PER_CONNECTION=5000 QUEUE_MAX_MESSAGES=100000000 \
    QUEUE_MAX_BYTES=17179869184 RUST_LOG=error "$binary" serve &
  pid=$!
  for _ in $(seq 1 100); do
    "$binary" health --http-port "$http" --path /ready >/dev/null 2>&1 && break
    sleep 0.1
  done
  before=$(awk '{print $14+$15}' "/proc/$pid/stat")
  times=$(mktemp)
  local client=$CLIENT
  [ "${OWN_CLIENT:-0}" = 1 ] && client=$binary
  out=$(/usr/bin/time -f "%U %S" -o "$times" "$client" bench "$mode" --consumers 4 --subs 4 \
    --prefetch 64 --filtered "$filters" --subject user.event.delivery -d "$DURATION" --json \
    --target "tern://127.0.0.1:$port")
  after=$(awk '{print $14+$15}' "/proc/$pid/stat")
  rss=$(awk '/VmHWM/ {print $2}' "/proc/$pid/status")
  kill "$pid"; wait "$pid" 2>/dev/null || true
  python3 - "$binary" "$mode" "$filters" "$before" "$after" "$TICKS" "$rss" "$times" "$out" <<'PY' | tee -a "$results"
import json, sys
binary, mode, filters, before, after, ticks, rss, times, out = sys.argv[1:]
report = json.loads(out)
delivered = report["delivered"]
user, system = (float(x) for x in open(times).read().split()[-2:])
broker = (float(after) - float(before)) / float(ticks) / delivered * 1e6
client = (user + system) / delivered * 1e6
print(f"{binary}\t{mode}\t{filters}\t{report['delivered_per_sec']:.0f}\t{report.get('lost', 0)}\t{broker:.2f}\t{client:.2f}\t{int(rss) / 1024:.1f}")
PY
  rm -f "$times"
}

echo -e "binary\tmode\tfilters\tdelivered/s\tlost\tbroker µs/msg\tclient µs/msg\tbroker peak RSS MiB"
for round in $(seq 1 "$ROUNDS"); do
  for mode in "${MODES[@]}"; do
    for filters in "${FILTERS[@]}"; do
      for binary in "${BINARIES[@]}"; do
        run "$binary" "$mode" "$filters"
      done
    done
  done
done

python3 - "$results" <<'PY'
import statistics, sys
from collections import defaultdict
runs = defaultdict(list)
for line in open(sys.argv[1]):
    binary, mode, filters, rate, lost, broker, client, rss = line.rstrip("\n").split("\t")
    runs[(binary, mode, int(filters))].append((float(rate), float(broker), float(client), float(rss), int(float(lost))))
print()
print("| binary | mode | filters | delivered msgs/s, median (min–max) | broker µs/msg | client µs/msg | broker peak RSS | lost |")
print("|---|---|---|---|---|---|---|---|")
medians = {}
for (binary, mode, filters), values in sorted(runs.items()):
    rates = sorted(v[0] for v in values)
    medians[(binary, mode, filters)] = statistics.median(rates)
    print(f"| {binary} | {mode} | {filters:,} | {statistics.median(rates):,.0f} ({rates[0]:,.0f}–{rates[-1]:,.0f}) | "
          f"{statistics.median(v[1] for v in values):.2f} | {statistics.median(v[2] for v in values):.2f} | "
          f"{min(v[3] for v in values):.0f}–{max(v[3] for v in values):.0f} MiB | {sum(v[4] for v in values)} |")
print()
for (binary, mode, filters), median in sorted(medians.items()):
    base = medians.get((binary, mode, 10))
    if filters == 10000 and base:
        print(f"{binary} {mode}: 10,000 filters / 10 = {median / base:.2f}x")
    none = medians.get((binary, mode, 0))
    if filters == 10 and none:
        print(f"{binary} {mode}: 10 filters / unfiltered = {median / none:.2f}x")
PY
