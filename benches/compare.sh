#!/usr/bin/env bash
# Side by side on this machine: Tern vs nats-server (and, for durable queues,
# RabbitMQ), and the bare ceilings (a direct
# TCP connection, and `tern relay`, a process that only copies frames between two
# sockets). The same tool (`tern bench`) drives every system; NATS is driven through
# the official Rust client (async-nats). Runs are interleaved (tern, nats, relay,
# direct; ROUNDS times); the table reports the median and the min–max.
#
#   benches/compare.sh                  # 3 rounds of 5 s per workload (~10 min)
#   ROUNDS=1 DURATION=2 benches/compare.sh   # a quick look
#   ONLY="latency-20k idle" benches/compare.sh   # rerun some workloads
#
# Writes benches/results/comparison-<date>.md and the raw JSON next to it.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
IDLE_CONNECTIONS=${IDLE_CONNECTIONS:-2000}
STAMP=$(date -u +%Y-%m-%d)
RESULTS=benches/results
RAW=$RESULTS/raw-$STAMP
# ONLY="latency-20k latency-100k" reruns some workloads into today's results.
ONLY=${ONLY:-}
mkdir -p "$RAW"
[[ -n $ONLY ]] || rm -f "$RAW"/*.json

if ! command -v nats-server >/dev/null 2>&1; then
  echo "installing nats-server from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "installing rabbitmq-server from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi

cargo build --release --locked --features nats,rabbitmq --bin tern
TERN=target/release/tern

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
TERN_PORT=$(free_port) TERN_HTTP=$(free_port) NATS_PORT=$(free_port) RELAY_PORT=$(free_port)
DURABLE_PORT=$(free_port) DURABLE_HTTP=$(free_port) AMQP_PORT=$(free_port) AMQP_DIST=$(free_port)
# Every store on the same disk: the repository's.
JS_DIR=$(mktemp -d -p "$PWD/target") TERN_DIR=$(mktemp -d -p "$PWD/target") RABBIT_DIR=$(mktemp -d -p "$PWD/target")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  RABBITMQ_NODENAME=tern-bench@localhost rabbitmqctl stop >/dev/null 2>&1 || true
  rm -rf "$JS_DIR" "$TERN_DIR" "$RABBIT_DIR"
}
trap cleanup EXIT

# Tern on its defaults, except queue limits as unbounded as the JetStream memory
# stream it is compared with (a stream with no limits).
BIND_ADDR=127.0.0.1 TCP_PORT=$TERN_PORT HTTP_PORT=$TERN_HTTP MAX_CONSUMERS=100000 \
  QUEUE_MAX_MESSAGES=100000000 QUEUE_MAX_BYTES=17179869184 \
  RUST_LOG=error "$TERN" serve &
TERN_PID=$!
pids+=("$TERN_PID")
# Durable queues: Tern with a file store, fsync before every confirm (group commit).
BIND_ADDR=127.0.0.1 TCP_PORT=$DURABLE_PORT HTTP_PORT=$DURABLE_HTTP MAX_CONSUMERS=100000 \
  QUEUE_MAX_MESSAGES=100000000 QUEUE_MAX_BYTES=17179869184 \
  STORE_URL="file://$TERN_DIR" STORE_FSYNC=always RUST_LOG=error "$TERN" serve &
pids+=($!)
nats-server -a 127.0.0.1 -p "$NATS_PORT" -js -sd "$JS_DIR" >/dev/null 2>&1 &
NATS_PID=$!
pids+=("$NATS_PID")
# RabbitMQ on its defaults, with its own node name, ports and data directory (the
# client declares the durable queue and asks for persistence and confirms). Run as
# root, Debian's rabbitmq-server switches to the rabbitmq user: it must own the data.
id rabbitmq >/dev/null 2>&1 && chown rabbitmq:rabbitmq "$RABBIT_DIR"
RABBITMQ_NODENAME=tern-bench@localhost RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT=$AMQP_PORT \
  RABBITMQ_DIST_PORT=$AMQP_DIST RABBITMQ_MNESIA_BASE=$RABBIT_DIR/mnesia RABBITMQ_LOG_BASE=$RABBIT_DIR/log \
  rabbitmq-server >/dev/null 2>&1 &
pids+=($!)
"$TERN" relay --listen "127.0.0.1:$RELAY_PORT" 2>/dev/null &
pids+=($!)
for attempt in $(seq 1 600); do
  if "$TERN" health --http-port "$TERN_HTTP" --path /ready >/dev/null 2>&1 &&
    "$TERN" health --http-port "$DURABLE_HTTP" --path /ready >/dev/null 2>&1 &&
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $NATS_PORT)).close()" 2>/dev/null &&
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $AMQP_PORT)).close()" 2>/dev/null; then
    break
  fi
  ((attempt < 600)) || { echo "servers did not start" >&2; exit 1; }
  sleep 0.1
done
# The relay pairs connections in accept order (receiver, then sender). Wait for it
# with one connection, then pair that one off with a second, so the benchmark's
# receiver is the next first-of-a-pair.
for attempt in $(seq 1 100); do
  python3 -c "import socket; socket.create_connection(('127.0.0.1', $RELAY_PORT)).close()" 2>/dev/null && break
  ((attempt < 100)) || { echo "the relay did not start" >&2; exit 1; }
  sleep 0.1
done
python3 -c "import socket; socket.create_connection(('127.0.0.1', $RELAY_PORT)).close()"

declare -A TARGETS=(
  [tern]="--target tern://127.0.0.1:$TERN_PORT"
  [nats]="--target nats://127.0.0.1:$NATS_PORT"
  [relay]="--target relay://127.0.0.1:$RELAY_PORT"
  [direct]="--target direct"
  [terndurable]="--target tern://127.0.0.1:$DURABLE_PORT"
  [rabbitmq]="--target amqp://127.0.0.1:$AMQP_PORT"
)

# name | tern bench arguments | systems
WORKLOADS=(
  "pubsub-1x1-128B|pubsub --size 128 --duration $DURATION|tern nats relay direct"
  "pubsub-1x4-128B|pubsub --size 128 --subs 4 --duration $DURATION|tern nats"
  "queue-2x2-128B-acks|queue --size 128 --pubs 2 --consumers 2 --prefetch 256 --duration $DURATION|tern nats"
  "pubsub-1x1-64KiB|pubsub --size 65536 --duration $DURATION|tern nats relay direct"
  "latency-20k|pubsub --size 128 --rate 20000 --duration $DURATION|tern nats relay direct"
  "latency-100k|pubsub --size 128 --rate 100000 --duration $DURATION|tern nats relay direct"
  "req-1x1-128B|req --size 128 --duration $DURATION|tern nats"
  "queue-2x2-128B-fire-and-forget|queue --size 128 --pubs 2 --consumers 2 --prefetch 1000 --confirm-window 0 --duration $DURATION|tern"
  "queue-2x2-128B-durable|queue --size 128 --pubs 2 --consumers 2 --prefetch 1000 --confirm-window 256 --durable --duration $DURATION|terndurable nats rabbitmq"
)

for round in $(seq 1 "$ROUNDS"); do
  for workload in "${WORKLOADS[@]}"; do
    IFS='|' read -r name args systems <<<"$workload"
    [[ -z $ONLY || " $ONLY " == *" $name "* ]] || continue
    for system in $systems; do
      echo "round $round/$ROUNDS: $name on $system"
      # shellcheck disable=SC2086  # word splitting of the argument lists is intended
      if ! "$TERN" bench $args ${TARGETS[$system]} --json >"$RAW/$name.$system.$round.json" 2>"$RAW/$name.$system.$round.err"; then
        echo "  (reported a problem: $(tail -1 "$RAW/$name.$system.$round.err"))"
      fi
    done
  done
done

if [[ -z $ONLY || " $ONLY " == *" idle "* ]]; then
  # Fresh processes: the ones above hold heap from the benchmarks.
  echo "idle memory: $IDLE_CONNECTIONS subscriber connections each, fresh servers"
  IDLE_TERN=$(free_port) IDLE_TERN_HTTP=$(free_port) IDLE_NATS=$(free_port)
  BIND_ADDR=127.0.0.1 TCP_PORT=$IDLE_TERN HTTP_PORT=$IDLE_TERN_HTTP MAX_CONSUMERS=100000 RUST_LOG=error \
    "$TERN" serve &
  idle_tern_pid=$!
  pids+=("$idle_tern_pid")
  nats-server -a 127.0.0.1 -p "$IDLE_NATS" >/dev/null 2>&1 &
  idle_nats_pid=$!
  pids+=("$idle_nats_pid")
  for attempt in $(seq 1 100); do
    "$TERN" health --http-port "$IDLE_TERN_HTTP" --path /ready >/dev/null 2>&1 &&
      python3 -c "import socket; socket.create_connection(('127.0.0.1', $IDLE_NATS)).close()" 2>/dev/null && break
    sleep 0.1
  done
  python3 benches/idle_memory.py tern "127.0.0.1:$IDLE_TERN" "$idle_tern_pid" "$IDLE_CONNECTIONS" | tee "$RAW/idle.tern.txt"
  python3 benches/idle_memory.py nats "127.0.0.1:$IDLE_NATS" "$idle_nats_pid" "$IDLE_CONNECTIONS" | tee "$RAW/idle.nats.txt"
fi

# What the durable broker synced: fsyncs and records per group commit.
curl -s "http://127.0.0.1:$DURABLE_HTTP/metrics" | grep -E '^tern_store_(fsyncs|group_commits|records_committed)_total' >"$RAW/store-metrics.txt" || true
python3 benches/summarize.py "$RAW" "$RESULTS/comparison-$STAMP.md" \
  "$("$TERN" --version)" "$(nats-server --version)" "$ROUNDS" "$DURATION" \
  "$(dpkg-query -W -f='rabbitmq-server ${Version}' rabbitmq-server 2>/dev/null || echo rabbitmq-server)"
echo "wrote $RESULTS/comparison-$STAMP.md"
