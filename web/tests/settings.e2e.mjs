// Drives /dashboard/settings in a real headless Chromium for tests/api/settings_browser.rs: a threshold below the
// one before it shows its field error, fixing it clears the error and the preview shows the proposed sizes, saving
// re-scores the shop until today's sizes equal the preview, and the dashboard's chart then shows them. Also reads
// the page in Spanish and French and checks every input is labelled. Screenshots go to $ARTIFACTS. Prints one JSON
// line with what it saw; any failure exits non-zero with the reason on stderr.
import { chromium } from "playwright-core";

const url = process.env.SETTINGS_URL;
const origin = new URL(url).origin;
const artifacts = process.env.ARTIFACTS || ".";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const timeout = 30000;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const sizes = (table) => Object.fromEntries(table.map((s) => [s.key, s.customers ?? s.count]));
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.settings && window.settings.ready, null, { timeout });

  await page.fill("#f-monetary-1", "5.00");
  await page.waitForSelector("#err-f-monetary-1:not([hidden])", { timeout });
  const fieldError = {
    text: await page.textContent("#err-f-monetary-1"),
    invalid: await page.getAttribute("#f-monetary-1", "aria-invalid"),
    summary: await page.isVisible("#form-errors"),
  };
  await page.screenshot({ path: `${artifacts}/settings-error.png`, fullPage: true });

  const before = await page.evaluate(() => window.settings.previews);
  for (const [i, amount] of ["10.00", "20.00", "40.00", "60.00"].entries()) await page.fill(`#f-monetary-${i}`, amount);
  await page.waitForFunction((n) => window.settings.previews > n && window.settings.errors.length === 0,
    before, { timeout });
  const cleared = await page.isHidden("#err-f-monetary-1");
  const preview = await page.evaluate(() => window.settings.preview.proposed);
  await page.screenshot({ path: `${artifacts}/settings-preview.png`, fullPage: true });

  await page.click("#save");
  await page.waitForFunction(() => window.settings.applied, null, { timeout });
  const today = await page.evaluate(() => window.settings.today);
  await page.screenshot({ path: `${artifacts}/settings-saved.png`, fullPage: true });
  const unlabelled = await page.evaluate(() => Array.from(document.querySelectorAll("input"))
    .filter((i) => i.labels.length === 0 && !i.getAttribute("aria-label")).map((i) => i.id || i.className));

  await page.goto(`${origin}/dashboard`);
  await page.waitForFunction(() => window.dashboard && window.dashboard.frames >= 1 && window.dashboard.chart, null,
    { timeout });
  const chart = await page.evaluate(() => {
    const c = window.dashboard.chart;
    return Object.fromEntries(c.data.labels.map((label, i) => [label, c.data.datasets[0].data[i]]));
  });
  await page.screenshot({ path: `${artifacts}/settings-dashboard.png`, fullPage: true });

  const headings = {};
  for (const locale of ["es", "fr"]) {
    await page.goto(`${origin}/dashboard/settings?locale=${locale}`);
    await page.waitForFunction(() => window.settings && window.settings.ready, null, { timeout });
    headings[locale] = {
      title: await page.textContent("h1"),
      recency: await page.textContent('label[for="f-recency_days-0"]'),
      lang: await page.getAttribute("html", "lang"),
    };
  }
  console.log(JSON.stringify({ fieldError, cleared, preview: sizes(preview), today: sizes(today), chart, unlabelled,
    headings, errors }));
} finally {
  await browser.close();
}
