#!/usr/bin/env bash
# Our webhook ingress beside the Node stack the seeds planned (loadtest/node-ingress: express +
# @shopify/shopify-api + kafkajs, acks=-1), in one run, on one fresh Tansu, through one generator
# (loadtest/ingress-load: signed 6.3 KB orders/create, a fresh webhook id per request, every 200
# checked to be a record on Kafka). Prints a table, and keeps every run's JSON in a directory.
#
# Ours runs as `serve --role ingress` with dedupe (Redis) and PII sealing (ENCRYPTION_KEYS, per-shop
# keys in a fresh Postgres database) on; the per-IP webhook limit is off, since every request of the
# generator comes from one loopback address. Needs Redis on 127.0.0.1:6379, Postgres on
# 127.0.0.1:5432 (trust), tansu on the PATH (or TANSU_BIN), node and npm, and release builds:
#   cargo build --release --bin loyalnest-rfm -p loyalnest-ingress-load
#
# Usage: bash loadtest/ingress-compare.sh [CONNECTIONS...]   (default: 1 4 16 64)
# Environment: DURATION (measured seconds per run, default 10), WARMUP (default 2), ONLY=ours|node,
#   BIN, LOAD_BIN, TANSU_PORT (19092), OURS_PORT (18080), NODE_PORT (18081), OUT (result directory),
#   and any KAFKA_CONFIG_* for our producer.
set -euo pipefail
cd "$(dirname "$0")/.."
conns=("$@")
[ ${#conns[@]} -gt 0 ] || conns=(1 4 16 64)
duration=${DURATION:-10}
warmup=${WARMUP:-2}
target=${CARGO_TARGET_DIR:-target}
bin=${BIN:-$target/release/loyalnest-rfm}
load=${LOAD_BIN:-$target/release/ingress-load}
tansu=${TANSU_BIN:-$(command -v tansu || echo "$HOME/.cargo/bin/tansu")}
tansu_port=${TANSU_PORT:-19092}
ours_port=${OURS_PORT:-18080}
node_port=${NODE_PORT:-18081}
out=${OUT:-$(mktemp -d /tmp/ingress-compare.XXXXXX)}
mkdir -p "$out"
brokers=127.0.0.1:$tansu_port
db=ingress_compare_$$
secret=compare-secret
pids=()

cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS $db" postgres >/dev/null 2>&1 || true
}
trap cleanup EXIT

# Polls a URL until it answers, at most 30 s.
wait_http() {
  for _ in $(seq 1 300); do
    curl -fsS -o /dev/null "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2
  return 1
}

"$tansu" broker --storage-engine memory://tansu/ --listener-url "tcp://127.0.0.1:$tansu_port" \
  --advertised-listener-url "tcp://127.0.0.1:$tansu_port" >"$out/tansu.log" 2>&1 </dev/null &
tansu_pid=$!
pids+=("$tansu_pid")
for _ in $(seq 1 100); do (echo >"/dev/tcp/127.0.0.1/$tansu_port") 2>/dev/null && break; sleep 0.1; done

psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" postgres
export DATABASE_URL=postgres://postgres@127.0.0.1:5432/$db
"$bin" migrate >"$out/migrate.log" 2>&1

if [ "${ONLY:-}" != node ]; then
  SHOPIFY_API_SECRET=$secret KAFKA_BROKERS=$brokers HTTP_ADDR=127.0.0.1:$ours_port WEBHOOK_RATE_PER_IP=0 \
    ENCRYPTION_KEYS="k1:$(head -c 32 /dev/urandom | base64)" PII_INDEX_KEY="$(head -c 32 /dev/urandom | base64)" \
    REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379} RUST_LOG=${RUST_LOG:-warn} \
    "$bin" serve --role ingress >"$out/ours.log" 2>&1 </dev/null &
  ours_pid=$!
  pids+=("$ours_pid")
  wait_http "http://127.0.0.1:$ours_port/health"
fi
if [ "${ONLY:-}" != ours ]; then
  (cd loadtest/node-ingress && [ -d node_modules ] || npm ci --no-audit --no-fund >/dev/null)
  # Our ingress creates the topics; without it, the Node run needs them made here.
  if [ "${ONLY:-}" = node ]; then
    SHOPIFY_API_SECRET=$secret KAFKA_BROKERS=$brokers HTTP_ADDR=127.0.0.1:$ours_port "$bin" serve --role ingress \
      >"$out/topics.log" 2>&1 </dev/null &
    topics_pid=$!
    wait_http "http://127.0.0.1:$ours_port/health"
    kill "$topics_pid"; wait "$topics_pid" 2>/dev/null || true
  fi
  PORT=$node_port KAFKA_BROKERS=$brokers SHOPIFY_API_SECRET=$secret \
    node loadtest/node-ingress/server.js >"$out/node.log" 2>&1 </dev/null &
  node_pid=$!
  pids+=("$node_pid")
  wait_http "http://127.0.0.1:$node_port/health"
fi
redis_pid=$(redis-cli info server | tr -d '\r' | sed -n 's/^process_id://p')

# One generator run; its JSON goes to $out/<label>-<connections>.json.
run() {
  local label=$1 port=$2 pid=$3 c=$4
  "$load" --url "http://127.0.0.1:$port/webhooks/shopify" --secret "$secret" --brokers "$brokers" \
    -c "$c" -d "$duration" --warmup "$warmup" --label "$label" \
    --watch "service=$pid" --watch "tansu=$tansu_pid" --watch "redis=$redis_pid" >"$out/$label-$c.json"
}

for c in "${conns[@]}"; do
  [ "${ONLY:-}" = node ] || run ours "$ours_port" "$ours_pid" "$c"
  [ "${ONLY:-}" = ours ] || run node "$node_port" "$node_pid" "$c"
done

echo "results in $out (machine load at the end: $(cut -d' ' -f1-3 /proc/loadavg))"
printf '| connections | stack | rate/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | non-200 | on Kafka | service CPU µs/req | generator cores |\n'
printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n'
for c in "${conns[@]}"; do
  for label in ours node; do
    f="$out/$label-$c.json"
    [ -f "$f" ] || continue
    jq -r '"| \(.connections) | \(.label) | \(.rate_per_s) | \(.latency.p50_ms) | \(.latency.p90_ms) | \(.latency.p99_ms) | \(.latency.p99_9_ms) | \(.latency.max_ms) | \([.other_statuses[].count] | add // 0) + \(.transport_errors) | \(.kafka_check.found)/\(.kafka_check.accepted_in_run) | \(.watched[] | select(.label == "service") | .cpu_us_per_request) | \(.generator.cores) |"' "$f"
  done
done
