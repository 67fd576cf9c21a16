#!/usr/bin/env bash
# Startup time of a durable broker holding MESSAGES queued 128-byte messages
# (default 1,000,000) in one queue: fills a fresh file store, stops the broker
# (cleanly, then with kill -9 after a refill), and times each restart from exec to
# /ready answering 200, ROUNDS times each; also reports the broker's own
# tern_store_recovery_seconds and its resident memory once recovered.
#
#   benches/recovery.sh                 # 1M messages, 3 rounds (~2 min)
#   MESSAGES=100000 ROUNDS=1 benches/recovery.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MESSAGES=${MESSAGES:-1000000}
ROUNDS=${ROUNDS:-3}
cargo build --release --locked --bin tern
TERN=target/release/tern
DIR=$(mktemp -d -p "$PWD/target")
trap 'kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port) HTTP=$(free_port)
start() {
  BIND_ADDR=127.0.0.1 TCP_PORT=$PORT HTTP_PORT=$HTTP STORE_URL="file://$DIR" STORE_FSYNC=always \
    DELIVERY_MODE=queue QUEUE_MAX_MESSAGES=100000000 QUEUE_MAX_BYTES=17179869184 RUST_LOG=error \
    "$TERN" serve &
  PID=$!
  local started
  started=$(date +%s%N)
  until "$TERN" health --http-port "$HTTP" --path /ready >/dev/null 2>&1; do sleep 0.01; done
  READY_MS=$((($(date +%s%N) - started) / 1000000))
}
fill() {
  python3 -c "
import sys
line = ('x' * 127 + '\n').encode()
sys.stdout.buffer.write(line * $MESSAGES)" | "$TERN" pub --server "127.0.0.1:$PORT" recovery.bench
  # Every message is on disk (confirmed once more, after the fire-and-forget ones).
  "$TERN" pub --server "127.0.0.1:$PORT" --confirm recovery.bench "$(printf 'y%.0s' $(seq 1 127))"
}
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v name="$1" '$1 == name {print $2}'; }
report() {
  local how=$1
  local depth rss seconds
  depth=$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk '$1 ~ /^tern_queue_depth/ {print $2}')
  seconds=$(metric tern_store_recovery_seconds)
  rss=$(awk '/VmRSS/ {print $2}' "/proc/$PID/status")
  echo "| $how | $READY_MS | $seconds | $depth | $((rss / 1024)) |"
}
echo "# Recovery of $MESSAGES queued 128-byte messages ($("$TERN" --version), $(nproc) cores)"
echo
echo "| restart after | exec to /ready (ms) | tern_store_recovery_seconds | messages recovered | RSS (MiB) |"
echo "|---|---|---|---|---|"
start
fill
for round in $(seq 1 "$ROUNDS"); do
  kill -TERM "$PID"; wait "$PID" || true
  start
  report "clean stop (round $round)"
done
for round in $(seq 1 "$ROUNDS"); do
  kill -KILL "$PID"; wait "$PID" 2>/dev/null || true
  start
  report "kill -9 (round $round)"
done
du -sh "$DIR" | awk '{print "\nOn disk: " $1}'
