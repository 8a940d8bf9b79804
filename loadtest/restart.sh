#!/usr/bin/env bash
# Restart figure (DESIGN.md §10, issue 5): how long a processor takes, from process start, until every partition
# it owns is restored and live, with CUSTOMERS customers resident — once after a graceful stop, once after kill -9.
#
# Needs the broker on 127.0.0.1:9092 (freshly started: Tansu slows down as it fills), Redis on 127.0.0.1:6379 and a
# release build. DATABASE_URL is not used. Usage: [SESSION_MS=6000] [MERCHANTS=200] bash loadtest/restart.sh [CUSTOMERS] [EVENTS]
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-1000000}
events=${2:-3000000}
partitions=4
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/loyalnest-rfm}
log=$(mktemp -d)
# Tansu keeps the session timeout of the member that created the group, so the bench uses the restarts' one.
export KAFKA_SESSION_TIMEOUT_MS=${SESSION_MS:-6000}

# The bench consumes the stream in a fresh group and leaves its snapshots behind; its prefix names the group.
"$bin" bench --customers "$customers" --events "$events" --merchants "${MERCHANTS:-200}" --partitions "$partitions" |
  tee "$log/bench.json"
prefix=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["topic_prefix"])' <"$log/bench.json")

# A failure part-way must not leave a processor behind.
pid=""
trap '[ -z "$pid" ] || kill "$pid" 2>/dev/null || true' EXIT

# Starts the processor of that group, prints the seconds from start until its partitions are all restored and its
# resident set then and SETTLE_SECS (15) later (what an instance holding these customers costs, without the bench's
# producer).
restart() {
  local out="$log/$1.log" started
  started=$(date +%s.%N)
  SHOPIFY_API_SECRET=bench KAFKA_TOPIC_PREFIX=$prefix KAFKA_GROUP_ID=${prefix}group KAFKA_CREATE_TOPICS=false \
    SNAPSHOT_INTERVAL_MS=2000 HTTP_ADDR=127.0.0.1:18090 LOG_FORMAT=json \
    "$bin" serve --role processor >"$out" 2>&1 &
  pid=$!
  local restored=""
  for _ in $(seq 1 1200); do
    if [ "$(grep -c '"restore finished"' "$out")" -ge "$partitions" ]; then restored=yes; break; fi
    sleep 0.1
  done
  local done_at rss
  done_at=$(date +%s.%N)
  [ -n "$restored" ] || { echo "$1: not restored within 120 s (see $out)" >&2; exit 1; }
  rss=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$pid/status")
  printf '%s: %.1f s from start to all partitions restored, resident set %s bytes (%s)\n' "$1" \
    "$(echo "$done_at - $started" | bc)" "$rss" "$out"
  # And once settled: snapshot rounds have run and the allocators have returned what the restore freed.
  sleep "${SETTLE_SECS:-15}"
  rss=$(awk '/^VmRSS/ { print $2 * 1024 }' "/proc/$pid/status")
  printf '%s, %s s later: resident set %s bytes\n' "$1" "${SETTLE_SECS:-15}" "$rss"
}

restart after-graceful-stop
# RESTARTS=graceful: only the first figure, which is all loadtest/cost-curve.sh needs (it runs several sizes).
if [ "${RESTARTS:-all}" = graceful ]; then kill -TERM "$pid"; wait "$pid" || true; exit 0; fi
sleep 5 # at least one snapshot round of the restored state
kill -TERM "$pid"; wait "$pid" || true
restart after-graceful-stop-again
sleep 5
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
restart after-kill-9
kill -TERM "$pid"; wait "$pid" || true
