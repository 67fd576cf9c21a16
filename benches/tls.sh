#!/usr/bin/env bash
# TLS and authentication, side by side on this machine: Tern over TLS against
# nats-server over TLS on the same certificate (ECDSA P-256, made here with
# openssl), each against itself in plaintext (the cost of TLS), and Tern with an
# AUTH_FILE whose permissions every publish and subscription is checked against,
# against Tern without (the cost of permissions). One `tern bench` drives every
# system (NATS through async-nats); runs are interleaved, ROUNDS times; the table
# gives the median and min–max of delivered messages per second.
#
#   benches/tls.sh                         # 3 rounds of 5 s (~8 min)
#   ROUNDS=1 DURATION=2 benches/tls.sh     # a quick look
#
# Writes benches/results/tls-auth-<date>.md and the raw JSON next to it.
set -euo pipefail
cd "$(dirname "$0")/.."

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5}
STAMP=$(date -u +%Y-%m-%d)
RESULTS=benches/results
RAW=$RESULTS/raw-tls-$STAMP
mkdir -p "$RAW"
rm -f "$RAW"/*.json

if ! command -v nats-server >/dev/null 2>&1; then
  echo "installing nats-server from Debian's packages"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
fi
cargo build --release --locked --features nats --bin tern
TERN=target/release/tern

WORK=$(mktemp -d -p "$PWD/target")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

# One CA, one server certificate for localhost and 127.0.0.1, used by both brokers.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 7 \
  -subj "/CN=tern bench CA" -keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
  -subj "/CN=localhost" -keyout "$WORK/server.key" -out "$WORK/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >"$WORK/ext"
openssl x509 -req -in "$WORK/server.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
  -days 7 -extfile "$WORK/ext" -out "$WORK/server.pem" 2>/dev/null

# The permission-checked user: may publish and subscribe everywhere but secret.>,
# so that both lists are consulted (the benchmark's subjects are random).
TOKEN=$("$TERN" auth token | head -1)
HASH=$(printf '%s' "$TOKEN" | sha256sum | cut -d' ' -f1)
cat >"$WORK/auth.toml" <<TOML
[[users]]
name = "bench"
token_sha256 = "$HASH"
publish   = { allow = [">"], deny = ["secret.>"] }
subscribe = { allow = [">"], deny = ["secret.>"] }
consume   = [">"]
TOML

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
start_tern() { # port http-port extra-env...
  local port=$1 http=$2
  shift 2
  env BIND_ADDR=127.0.0.1 TCP_PORT="$port" HTTP_PORT="$http" MAX_CONSUMERS=100000 RUST_LOG=error "$@" "$TERN" serve &
  pids+=($!)
}
TERN_PORT=$(free_port) TERN_HTTP=$(free_port)
TLS_PORT=$(free_port) TLS_HTTP=$(free_port)
AUTH_PORT=$(free_port) AUTH_HTTP=$(free_port)
NATS_PORT=$(free_port) NATS_TLS_PORT=$(free_port)
start_tern "$TERN_PORT" "$TERN_HTTP"
start_tern "$TLS_PORT" "$TLS_HTTP" TLS_CERT_FILE="$WORK/server.pem" TLS_KEY_FILE="$WORK/server.key"
start_tern "$AUTH_PORT" "$AUTH_HTTP" AUTH_FILE="$WORK/auth.toml"
nats-server -a 127.0.0.1 -p "$NATS_PORT" >/dev/null 2>&1 &
pids+=($!)
nats-server -a 127.0.0.1 -p "$NATS_TLS_PORT" --tls --tlscert "$WORK/server.pem" --tlskey "$WORK/server.key" >/dev/null 2>&1 &
pids+=($!)
for attempt in $(seq 1 300); do
  ready=1
  for http in "$TERN_HTTP" "$TLS_HTTP" "$AUTH_HTTP"; do
    "$TERN" health --http-port "$http" --path /ready >/dev/null 2>&1 || ready=0
  done
  for port in "$NATS_PORT" "$NATS_TLS_PORT"; do
    python3 -c "import socket; socket.create_connection(('127.0.0.1', $port)).close()" 2>/dev/null || ready=0
  done
  ((ready)) && break
  ((attempt < 300)) || { echo "servers did not start" >&2; exit 1; }
  sleep 0.1
done

declare -A TARGETS=(
  [terntls]="--target tern://127.0.0.1:$TLS_PORT --tls-ca $WORK/ca.pem --tls-server-name localhost"
  [natstls]="--target nats://127.0.0.1:$NATS_TLS_PORT --tls-ca $WORK/ca.pem"
  [tern]="--target tern://127.0.0.1:$TERN_PORT"
  [nats]="--target nats://127.0.0.1:$NATS_PORT"
  [ternauth]="--target tern://127.0.0.1:$AUTH_PORT --token $TOKEN"
)

# name | tern bench arguments | systems
WORKLOADS=(
  "pubsub-1x1-128B|pubsub --size 128 --duration $DURATION|terntls natstls tern nats ternauth"
  "pubsub-1x4-128B|pubsub --size 128 --subs 4 --duration $DURATION|terntls natstls tern nats ternauth"
  "pubsub-1x1-64KiB|pubsub --size 65536 --duration $DURATION|terntls natstls tern nats"
  "pubsub-1x4-64KiB|pubsub --size 65536 --subs 4 --duration $DURATION|terntls natstls tern nats"
  "queue-2x2-128B|queue --size 128 --pubs 2 --consumers 2 --prefetch 1000 --confirm-window 0 --duration $DURATION|tern ternauth"
)

for round in $(seq 1 "$ROUNDS"); do
  for workload in "${WORKLOADS[@]}"; do
    IFS='|' read -r name args systems <<<"$workload"
    for system in $systems; do
      echo "round $round/$ROUNDS: $name on $system"
      # shellcheck disable=SC2086  # word splitting of the argument lists is intended
      if ! "$TERN" bench $args ${TARGETS[$system]} --json >"$RAW/$name.$system.$round.json" 2>"$RAW/$name.$system.$round.err"; then
        echo "  (reported a problem: $(tail -1 "$RAW/$name.$system.$round.err"))"
      fi
    done
  done
done

python3 - "$RAW" "$RESULTS/tls-auth-$STAMP.md" "$("$TERN" --version)" "$(nats-server --version)" "$ROUNDS" "$DURATION" <<'PY'
import json, statistics, sys
from collections import defaultdict
from pathlib import Path
raw, out, tern_version, nats_version, rounds, duration = sys.argv[1:]
runs = defaultdict(list)
for path in sorted(Path(raw).glob("*.json")):
    name, system, _round, _ = path.name.rsplit(".", 3)
    try:
        report = json.loads(path.read_text())
    except ValueError:
        continue
    runs[(name, system)].append(report)
def rate(name, system):
    values = sorted(r["delivered_per_sec"] for r in runs.get((name, system), []))
    return values
def cell(values):
    if not values:
        return "—"
    fmt = lambda v: f"{v/1e6:.2f} M" if v >= 1e6 else f"{v/1e3:.1f} k"
    return f"{fmt(statistics.median(values))} ({fmt(values[0])}–{fmt(values[-1])})"
def ratio(a, b):
    if not a or not b:
        return "—"
    return f"{statistics.median(a)/statistics.median(b):.2f}×"
def lost(name, system):
    return sum(r["lost"] + r["duplicated"] + r["out_of_order"] for r in runs.get((name, system), []))
names = sorted({name for name, _ in runs}, key=lambda n: ["pubsub-1x1-128B", "pubsub-1x4-128B", "pubsub-1x1-64KiB", "pubsub-1x4-64KiB", "queue-2x2-128B"].index(n))
lines = [f"# TLS and permissions, {Path(out).stem.removeprefix('tls-auth-')}", "",
         f"`benches/tls.sh`: {tern_version} and {nats_version} on this machine (2 cores), "
         f"{rounds} interleaved rounds of {duration} s; delivered messages per second, median (min–max). "
         "Both brokers serve the same ECDSA P-256 certificate; the clients are `tern bench` "
         "(the Tern SDK, rustls) and async-nats (rustls).", "",
         "## TLS", "",
         "| workload | Tern TLS | NATS TLS | Tern / NATS (TLS) | Tern plain | NATS plain | Tern TLS / plain | NATS TLS / plain |",
         "|---|---|---|---|---|---|---|---|"]
for name in names:
    if not runs.get((name, "terntls")):
        continue
    t, n, tp, np_ = (rate(name, s) for s in ("terntls", "natstls", "tern", "nats"))
    lines.append(f"| {name} | {cell(t)} | {cell(n)} | **{ratio(t, n)}** | {cell(tp)} | {cell(np_)} | {ratio(t, tp)} | {ratio(n, np_)} |")
lines += ["", "## Permissions (`AUTH_FILE`, no TLS)", "",
          "| workload | Tern with permissions | Tern without | with / without |", "|---|---|---|---|"]
for name in names:
    if not runs.get((name, "ternauth")):
        continue
    a, p = rate(name, "ternauth"), rate(name, "tern")
    lines.append(f"| {name} | {cell(a)} | {cell(p)} | **{ratio(a, p)}** |")
lines += ["", "Lost, duplicated or out-of-order messages, summed over the runs (core NATS drops "
          "for a subscriber that falls behind; Tern slows the publisher instead):", ""]
for system in ("terntls", "natstls", "tern", "nats", "ternauth"):
    total = sum(lost(name, s) for name, s in runs if s == system)
    lines.append(f"- {system}: {total}")
lines.append("")
Path(out).write_text("\n".join(lines))
print("\n".join(lines))
PY
echo "wrote $RESULTS/tls-auth-$STAMP.md"
