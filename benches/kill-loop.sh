#!/usr/bin/env bash
# The kill -9 loop of tests/durability.rs with many more cycles than CI's 20:
# confirmed publishers and an acking consumer against the real binary, killed at a
# random moment and restarted on the same directory, CYCLES times; then every
# confirmed message must have been delivered, and every repeat flagged redelivered.
#
#   benches/kill-loop.sh            # 200 cycles (~2 minutes)
#   CYCLES=1000 benches/kill-loop.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CYCLES=${CYCLES:-200}
TERN_KILL_CYCLES=$CYCLES cargo test --release --locked --test durability \
  kill_9_loop_loses_no_confirmed_message_and_flags_every_duplicate -- --nocapture
