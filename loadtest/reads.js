// LoyalNest RFM Stream: merchant reads under concurrency (k6).
//
// VUS virtual users (5,000 by default) each send GET ${BASE_URL}/api/v1/rfm/segments in a loop, all at once, for
// DURATION, and the run fails unless p99 stays under P99_MS (1 s, the seeds' figure for 5,000 concurrent reads)
// and every answer is 200.
//
// A session token from the binary (same SHOPIFY_API_SECRET and SHOPIFY_API_KEY as the server):
//
//   TOKEN=$(loyalnest-rfm token --shop demo-1.myshopify.com)
//   k6 run -e TOKEN=$TOKEN loadtest/reads.js
//
// The server must not rate-limit the run: API_RATE_PER_SHOP (50 requests/s per shop by default) would answer most
// of these 429, so start it with API_RATE_PER_SHOP=0 (loadtest/README.md). The answer comes from live state on an
// instance that owns the shop's partition (`serve --role all`) and from Postgres on an ingress-only instance; the
// `source` tag of each request says which.
//
// Environment (all optional but TOKEN):
//   TOKEN        session token (`loyalnest-rfm token --shop S`)
//   BASE_URL     service base URL                     (default http://127.0.0.1:8080)
//   VUS          concurrent readers                   (default 5000)
//   DURATION     k6 duration string                   (default 30s)
//   RAMP         time to bring every reader up        (default 10s)
//   P99_MS       p99 threshold in ms                  (default 1000)
//
// Only loopback or the project's own test hosts are valid targets.

import http from 'k6/http';
import { check, fail } from 'k6';
import { Counter } from 'k6/metrics';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const TOKEN = __ENV.TOKEN || '';
const VUS = parseInt(__ENV.VUS || '5000', 10);
const DURATION = __ENV.DURATION || '30s';
const RAMP = __ENV.RAMP || '10s';
const P99_MS = parseFloat(__ENV.P99_MS || '1000');

const sources = new Counter('answers_by_source');

export const options = {
  discardResponseBodies: false,
  scenarios: {
    reads: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: RAMP, target: VUS },
        { duration: DURATION, target: VUS },
      ],
      gracefulRampDown: '5s',
    },
  },
  thresholds: {
    // Measured only once every reader is up.
    'http_req_duration{phase:steady}': [`p(99)<${P99_MS}`],
    http_req_failed: ['rate<0.001'],
    checks: ['rate>0.999'],
  },
  summaryTrendStats: ['min', 'med', 'p(90)', 'p(99)', 'max', 'count'],
};

export function setup() {
  if (!TOKEN) fail('TOKEN is required: TOKEN=$(loyalnest-rfm token --shop demo-1.myshopify.com)');
  const probe = http.get(`${BASE_URL}/api/v1/rfm/segments`, { headers: { Authorization: `Bearer ${TOKEN}` } });
  if (probe.status !== 200) fail(`GET /api/v1/rfm/segments answered ${probe.status}: ${probe.body}`);
  return { started: Date.now() };
}

const rampMs = (d) => parseInt(d, 10) * (d.endsWith('m') ? 60000 : 1000);

export default function (data) {
  const phase = Date.now() - data.started >= rampMs(RAMP) ? 'steady' : 'ramp';
  const res = http.get(`${BASE_URL}/api/v1/rfm/segments`, {
    headers: { Authorization: `Bearer ${TOKEN}` },
    tags: { phase, name: 'GET /api/v1/rfm/segments' },
  });
  let body = null;
  try {
    body = res.json();
  } catch (e) {
    body = null;
  }
  const ok = check(res, {
    'status 200': (r) => r.status === 200,
    'segments listed': () => body !== null && Array.isArray(body.segments),
  });
  if (ok) sources.add(1, { source: body.source });
}
