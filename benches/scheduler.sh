#!/usr/bin/env bash
# The Redis scheduler beside BullMQ's delayed jobs, in one run, on one Redis.
#
#   BULLMQ_BENCH=path/to/bench.js benches/scheduler.sh [redis-url]
#
# BULLMQ_BENCH is the team's BullMQ anchor (bench.js, which installs bullmq with npm
# on first use). Each case runs contactd's scheduler (`contactd bench scheduler`,
# release build) and then BullMQ with the same reminders, due times and workers;
# every line printed is one run's JSON summary. Redis's hz is reported by BullMQ's
# line and is the same for both.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BULLMQ_BENCH:?set BULLMQ_BENCH to the path of the BullMQ anchor (bench.js)}"
REDIS_URL="${1:-redis://127.0.0.1:6379/0}"
cargo build --release --quiet
contactd=target/release/contactd

# name n spread_ms lead_ms (contactd) lead_ms (BullMQ needs longer to add 100k)
cases=(
  "steady-10k-per-s 50000 5000 3000 12000"
  "burst-100k-in-2s 100000 2000 3000 20000"
  "all-at-once-100k 100000 0 3000 20000"
)
for c in "${cases[@]}"; do
  read -r name n spread lead bull_lead <<<"$c"
  for workers in 1 2; do
    printf '# %s, %s worker(s)\n' "$name" "$workers"
    "$contactd" bench scheduler --redis-url "$REDIS_URL" --n "$n" --spread-ms "$spread" \
      --lead-ms "$lead" --workers "$workers" | tail -n 1
    timeout 300 node "$BULLMQ_BENCH" --redis-url "$REDIS_URL" --n "$n" --spread-ms "$spread" \
      --lead-ms "$bull_lead" --workers "$workers" 2>/dev/null | tail -n 1
  done
done
