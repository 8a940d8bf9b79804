#!/usr/bin/env bash
# The cost curve (issue 21, target 4): what a processor instance costs as the customers and the merchants grow.
# For each point CUSTOMERS:MERCHANTS, on a freshly started Tansu: the catch-up bench (events/s, the resident set,
# the engine's state per customer) and the restart after a graceful stop with the restarted instance's resident set
# (both from loadtest/restart.sh), then the point's snapshots and score-cache entries are deleted from Redis. One CSV
# row per point; loadtest/plot_cost_curve.py draws the CSV. Three resident-set columns per customer: the bench
# process's whole resident set when caught up (`rss_total_…`), its growth from after the produce phase
# (`rss_growth_…`, without what the in-process producer left in the allocator), and the restarted `serve` process's
# once restored (`restarted_rss_…`: what an instance holding these customers costs).
#
# Needs Redis on 127.0.0.1:6379, tansu on the PATH (or TANSU_BIN), bc, jq, and a release build:
#   cargo build --release --bin loyalnest-rfm
# Usage: bash loadtest/cost-curve.sh [CUSTOMERS:MERCHANTS ...]
#   (default: 100000:100 1000000:100 10000000:100 1000000:1 1000000:10000)
# Environment: EVENTS_PER_CUSTOMER (3), OUT (the CSV, default docs/cost-curve.csv), TANSU_PORT (19094).
set -euo pipefail
cd "$(dirname "$0")/.."
points=("$@")
[ ${#points[@]} -gt 0 ] || points=(100000:100 1000000:100 10000000:100 1000000:1 1000000:10000)
per=${EVENTS_PER_CUSTOMER:-3}
out=${OUT:-docs/cost-curve.csv}
tansu=${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
port=${TANSU_PORT:-19094}
logs=$(mktemp -d /tmp/cost-curve.XXXXXX)
tansu_pid=""
trap '[ -z "$tansu_pid" ] || kill "$tansu_pid" 2>/dev/null || true' EXIT

# A fresh broker per point: Tansu's memory engine slows down as it fills, and the biggest point alone fills GiBs.
fresh_tansu() {
  [ -z "$tansu_pid" ] || { kill "$tansu_pid" 2>/dev/null || true; wait "$tansu_pid" 2>/dev/null || true; }
  "$tansu" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$port" \
    --advertised-listener-url "tcp://127.0.0.1:$port" >"$logs/tansu-$1.log" 2>&1 </dev/null &
  tansu_pid=$!
  for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0; sleep 0.1; done
  echo "tansu did not start" >&2
  return 1
}

echo "customers,merchants,events,events_per_second,rss_bytes,rss_total_bytes_per_customer,rss_growth_bytes_per_customer,state_bytes_per_customer,restart_seconds,restarted_rss_bytes_per_customer" >"$out"
for point in "${points[@]}"; do
  customers=${point%%:*}
  merchants=${point##*:}
  events=$((customers * per))
  fresh_tansu "$point"
  KAFKA_BROKERS=127.0.0.1:$port MERCHANTS=$merchants RESTARTS=graceful \
    bash loadtest/restart.sh "$customers" "$events" | tee "$logs/$point.txt"
  report=$(sed -n '/^{/,/^}/p' "$logs/$point.txt" | jq -c .)
  restart=$(sed -n 's/^after-graceful-stop: \([0-9.]*\) s.*/\1/p' "$logs/$point.txt")
  restarted_rss=$(sed -n 's/^after-graceful-stop: .*resident set \([0-9]*\) bytes.*/\1/p' "$logs/$point.txt")
  prefix=$(jq -r '.topic_prefix // empty' <<<"$report")
  # Without a report there is nothing to write, and an empty prefix must never reach the Redis clean-up below.
  [[ $prefix == bench* && -n $restart && -n $restarted_rss ]] || { echo "no bench report or restart figure for $point" >&2; exit 1; }
  jq -r --arg c "$customers" --arg m "$merchants" --arg r "$restart" --arg rr "$restarted_rss" \
    '[($c|tonumber), ($m|tonumber), .events, (.events_per_second|floor), .rss_bytes,
      (.rss_bytes / ($c|tonumber) | floor), (.rss_bytes_per_customer|floor), (.state_bytes_per_customer*10|round/10),
      ($r|tonumber), (($rr|tonumber) / ($c|tonumber) | floor)] | @csv' <<<"$report" >>"$out"
  redis-cli --scan --pattern "*${prefix}*" | xargs -r -n 5000 redis-cli del >/dev/null
  redis-cli --scan --pattern 'rfm:customer:{bench-*' | xargs -r -n 5000 redis-cli del >/dev/null
done
echo "rows in $out, logs in $logs"
cat "$out"
