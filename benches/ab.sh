#!/usr/bin/env bash
# Interleaved A/B of two `tern` binaries on this machine: each runs its own broker
# and drives it with its own `tern bench` (so broker and SDK changes both count),
# alternating A, B, A, B, ... for ROUNDS rounds per workload. Prints every run and,
# per workload, the median and min–max of each side and the ratio of medians.
# Use it to check that a change costs nothing: the ratio should sit inside the spread.
#
#   benches/ab.sh /tmp/tern-before target/release/tern
#   ROUNDS=8 DURATION=4 WORKLOADS="pubsub --size 65536" benches/ab.sh A B
#   MIXED=1 benches/ab.sh A B     # also A's broker with B's client and B's with A's
set -euo pipefail
cd "$(dirname "$0")/.."

A=${1:?usage: benches/ab.sh BINARY_A BINARY_B}
B=${2:?usage: benches/ab.sh BINARY_A BINARY_B}
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-4}
MIXED=${MIXED:-0}
IFS=';' read -r -a WORKLOADS <<<"${WORKLOADS:-pubsub --size 128;pubsub --size 128 --subs 4;queue --size 128 --pubs 2 --consumers 2 --prefetch 256;pubsub --size 65536}"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pids=()
trap 'for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done' EXIT
start() {
  local binary=$1 port=$2 http=$3
  BIND_ADDR=127.0.0.1 TCP_PORT=$port HTTP_PORT=$http MAX_CONSUMERS=100000 \
    QUEUE_MAX_MESSAGES=100000000 QUEUE_MAX_BYTES=17179869184 RUST_LOG=error "$binary" serve &
  pids+=($!)
  for _ in $(seq 1 100); do
    "$binary" health --http-port "$http" --path /ready >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "the broker of $binary did not start" >&2
  exit 1
}
A_PORT=$(free_port) B_PORT=$(free_port)
start "$A" "$A_PORT" "$(free_port)"
start "$B" "$B_PORT" "$(free_port)"

# label | bench binary | broker port
COMBOS=("A|$A|$A_PORT" "B|$B|$B_PORT")
if [[ $MIXED == 1 ]]; then
  COMBOS+=("A-broker,B-client|$B|$A_PORT" "B-broker,A-client|$A|$B_PORT")
fi

RESULTS=$(mktemp)
for workload in "${WORKLOADS[@]}"; do
  for round in $(seq 1 "$ROUNDS"); do
    for combo in "${COMBOS[@]}"; do
      IFS='|' read -r label binary port <<<"$combo"
      # shellcheck disable=SC2086  # the workload's words are the arguments
      rate=$("$binary" bench $workload --duration "$DURATION" --target "tern://127.0.0.1:$port" --json 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); r = d["delivered_per_sec"]; l = d["lost"]; print(f"{r:.0f} msgs/s, {l} lost")')
      echo "$workload | $label | round $round | $rate" | tee -a "$RESULTS"
    done
  done
done

python3 - "$RESULTS" <<'EOF'
import statistics, sys
runs = {}
for line in open(sys.argv[1]):
    workload, label, _, rest = [part.strip() for part in line.split("|")]
    runs.setdefault(workload, {}).setdefault(label, []).append(int(rest.split()[0]))
print("\n| workload | side | median msgs/s | min–max | ratio to A |")
print("|---|---|---|---|---|")
for workload, sides in runs.items():
    base = statistics.median(sides["A"])
    for label, rates in sides.items():
        median = statistics.median(rates)
        print(f"| {workload} | {label} | {median:,.0f} | {min(rates):,}–{max(rates):,} | {median / base:.2f}× |")
EOF
rm -f "$RESULTS"
