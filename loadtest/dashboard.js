// LoyalNest RFM Stream: dashboard sockets under webhook load (k6).
//
// Holds SOCKETS dashboard WebSockets (/api/v1/rfm/stream, spread over SHOPS shops) while signed orders/create
// webhooks arrive at RATE per second, and measures webhook accepted → frame received: every delta in a frame
// carries the broker timestamp of the event that caused it (set when the ingress produced it, just before the
// 200), and each socket records now − that timestamp for every delta it has not seen before. Client and server
// share this machine's clock.
//
//   k6 run -e RATE=1000 -e SOCKETS=1000 -e DURATION=30s loadtest/dashboard.js
//
// Environment (all optional):
//   BASE_URL            service base URL                          (default http://127.0.0.1:8080)
//   SHOPIFY_API_SECRET  app secret, same as the service           (default dev-secret)
//   SHOPIFY_API_KEY     app API key (the token audience)          (default loyalnest-dev)
//   RATE                webhooks per second                       (default 500)
//   SOCKETS             dashboard sockets held open               (default 500)
//   SOCKETS_PER_VU      sockets per k6 VU (async, one event loop) (default 100)
//   SHOPS               shops bench-1..bench-N                    (default 50)
//   CUSTOMERS           customer ids per shop                     (default 1000)
//   DURATION            how long webhooks flow                    (default 30s)
//   P99_MS              frame latency p99 threshold in ms         (default 50)
//
// Only loopback or the project's own test hosts are valid targets.

import http from 'k6/http';
import crypto from 'k6/crypto';
import encoding from 'k6/encoding';
import exec from 'k6/execution';
import { WebSocket } from 'k6/experimental/websockets';
import { setTimeout } from 'k6/timers';
import { Counter, Trend } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const SECRET = __ENV.SHOPIFY_API_SECRET || 'dev-secret';
const API_KEY = __ENV.SHOPIFY_API_KEY || 'loyalnest-dev';
const RATE = parseInt(__ENV.RATE || '500', 10);
const SOCKETS = parseInt(__ENV.SOCKETS || '500', 10);
const PER_VU = parseInt(__ENV.SOCKETS_PER_VU || '100', 10);
const SHOPS = parseInt(__ENV.SHOPS || '50', 10);
const CUSTOMERS = parseInt(__ENV.CUSTOMERS || '1000', 10);
const DURATION = __ENV.DURATION || '30s';
const P99_MS = parseFloat(__ENV.P99_MS || '50');

const WARMUP_S = 5;
const seconds = (d) => parseInt(d, 10) * (d.endsWith('m') ? 60 : 1);
const HOLD_MS = (WARMUP_S + seconds(DURATION) + 3) * 1000;
const SOCKET_VUS = Math.ceil(SOCKETS / PER_VU);

const frameLatency = new Trend('frame_latency', true);
const frames = new Counter('frames_received');
const opened = new Counter('sockets_opened');
const socketErrors = new Counter('socket_errors');

export const options = {
  scenarios: {
    sockets: {
      executor: 'per-vu-iterations',
      vus: SOCKET_VUS,
      iterations: 1,
      maxDuration: `${Math.ceil(HOLD_MS / 1000) + 30}s`,
      exec: 'dashboards',
    },
    webhooks: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      startTime: `${WARMUP_S}s`,
      preAllocatedVUs: Math.max(50, Math.ceil(RATE / 20)),
      maxVUs: Math.max(200, RATE),
      exec: 'webhook',
    },
  },
  thresholds: {
    frame_latency: [`p(99)<${P99_MS}`],
    'http_req_failed{scenario:webhooks}': ['rate<0.01'],
  },
  summaryTrendStats: ['min', 'med', 'p(90)', 'p(99)', 'max', 'count'],
};

const b64 = (s) => encoding.b64encode(s, 'rawurl');

function token(shop) {
  const now = Math.floor(Date.now() / 1000);
  const header = b64(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const claims = b64(JSON.stringify({
    iss: `https://${shop}/admin`, dest: `https://${shop}`, aud: API_KEY, sub: 'k6',
    exp: now + 3600, nbf: now - 5, iat: now, jti: `${shop}-${now}`, sid: 'k6',
  }));
  const signature = crypto.hmac('sha256', SECRET, `${header}.${claims}`, 'base64rawurl');
  return `${header}.${claims}.${signature}`;
}

const shopName = (i) => `bench-${i}.myshopify.com`;

function openDashboard(index) {
  const shop = shopName((index % SHOPS) + 1);
  const url = `${BASE_URL.replace('http', 'ws')}/api/v1/rfm/stream`;
  const ws = new WebSocket(url, null, { headers: { Authorization: `Bearer ${token(shop)}` } });
  // 0 until the first frame: its deltas predate this socket, so they only set the high-water mark.
  let newest = 0;
  ws.onopen = () => opened.add(1);
  ws.onerror = (e) => {
    socketErrors.add(1);
    if (__ENV.DEBUG) console.error(`socket error: ${e.error}`);
  };
  ws.onmessage = (event) => {
    const received = Date.now();
    const frame = JSON.parse(event.data);
    frames.add(1);
    let top = newest;
    for (const delta of frame.deltas) {
      if (delta.event_ms && delta.event_ms > newest) {
        if (newest > 0) frameLatency.add(received - delta.event_ms);
        top = Math.max(top, delta.event_ms);
      }
    }
    newest = Math.max(top, 1);
  };
  setTimeout(() => ws.close(), HOLD_MS);
}

export function dashboards() {
  // VU ids are shared with the webhook scenario; the iteration number is this scenario's own 0..VUs-1.
  const first = exec.scenario.iterationInTest * PER_VU;
  for (let i = first; i < Math.min(first + PER_VU, SOCKETS); i++) openDashboard(i);
}

export function setup() {
  // Order ids unique per run, so a second run against the same engine still changes customers.
  return { base: Date.now() * 1000 };
}

export function webhook(data) {
  const n = exec.scenario.iterationInTest;
  const shop = shopName((n % SHOPS) + 1);
  const customer = 1 + Math.floor(Math.random() * CUSTOMERS);
  const cents = 1500 + Math.floor(Math.random() * 30000);
  const body = JSON.stringify({
    id: data.base + n, customer: { id: customer }, created_at: new Date().toISOString(),
    total_price: (cents / 100).toFixed(2), currency: 'USD', financial_status: 'paid', test: false,
  });
  http.post(`${BASE_URL}/webhooks/shopify`, body, {
    headers: {
      'Content-Type': 'application/json',
      'X-Shopify-Topic': 'orders/create',
      'X-Shopify-Hmac-Sha256': crypto.hmac('sha256', SECRET, body, 'base64'),
      'X-Shopify-Shop-Domain': shop,
      'X-Shopify-Webhook-Id': `k6-${exec.vu.idInTest}-${n}-${Date.now()}`,
    },
    responseType: 'none',
  });
}
