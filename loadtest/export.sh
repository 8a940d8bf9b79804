#!/usr/bin/env bash
# Export figure (issue 18): GET /api/v1/rfm/export of CUSTOMERS customers of one shop, in each format: time to the
# last byte, bytes, and the server's peak resident memory (VmHWM) before and after, which should not grow with the
# shop (the export streams one query through a bounded channel).
#
# Needs Postgres (DATABASE_URL's server; a database `export_bench` is created and refilled), the broker on
# 127.0.0.1:9092 (the ingress role connects a producer) and a release build. Usage: bash loadtest/export.sh [CUSTOMERS]
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-1000000}
bin=${BIN:-${CARGO_TARGET_DIR:-target}/release/loyalnest-rfm}
server=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
db=${server%/*}/export_bench
shop=bench-export.myshopify.com
export SHOPIFY_API_SECRET=export-bench SHOPIFY_API_KEY=export-bench

psql -q "$server" -c "DROP DATABASE IF EXISTS export_bench" -c "CREATE DATABASE export_bench"
DATABASE_URL=$db "$bin" migrate >/dev/null
psql -q "$db" -c "INSERT INTO customers (merchant_id, customer_id, version, recency, frequency, monetary, score,
    segment, lifecycle_stage, orders, net_spend, last_order_at)
  SELECT '$shop', g, 1 + g % 7, 1 + g % 5, 1 + g / 5 % 5, 1 + g / 25 % 5, (10 + g % 41) / 10.0,
    (ARRAY['champions','loyal','new','inactive','at_risk','other'])[1 + g % 6], 'repeat_buyer', 1 + g % 9,
    (g % 100000) / 100.0, now() - (g % 400) * interval '1 day'
  FROM generate_series(1, $customers) g"

DATABASE_URL=$db HTTP_ADDR=127.0.0.1:18095 REDIS_URL=redis://127.0.0.1:6379 LOG_FORMAT=json \
  "$bin" serve --role ingress >/tmp/export-bench.log 2>&1 &
pid=$!
trap 'kill $pid' EXIT
for _ in $(seq 1 100); do curl -sf http://127.0.0.1:18095/health >/dev/null && break; sleep 0.1; done
token=$("$bin" token --shop "$shop")
echo "customers: $customers"
echo "before: $(grep -E 'VmHWM|VmRSS' /proc/$pid/status | tr -s ' ' | tr '\n' ' ')"
for format in csv ndjson json; do
  curl -sf -o /dev/null -H "Authorization: Bearer $token" \
    -w "$format: %{time_total} s, %{size_download} bytes, first byte after %{time_starttransfer} s\n" \
    "http://127.0.0.1:18095/api/v1/rfm/export?format=$format"
  echo "  after $format: $(grep -E 'VmHWM|VmRSS' /proc/$pid/status | tr -s ' ' | tr '\n' ' ')"
done
