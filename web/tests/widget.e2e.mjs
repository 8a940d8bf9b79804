// Drives /widget/demo in a real headless Chromium for tests/api/widget_browser.rs.
// Page 1 (WIDGET_URL) plays a Spanish-speaking customer: once its widget is live it prints one JSON line
// {"ready": true, "initial": <nudge id shown or null>}, then waits for a newer nudge of kind EXPECT_KIND (the test's
// orders move the customer there), checks the card's words, language, accessibility and that it took no focus,
// saves a screenshot, clicks the call to action, waits for the click report to be stored and prints one JSON line
// with what it saw. Page 2 (RTL_URL) plays an Arabic-speaking customer whose nudge is already pending: it checks the
// right-to-left layout, saves a second screenshot and dismisses the card with Escape. Any failure exits non-zero
// with the reason on stderr.
import { chromium } from "playwright-core";

const url = process.env.WIDGET_URL;
const rtlUrl = process.env.RTL_URL;
const expectKind = process.env.EXPECT_KIND || "champions";
const screenshot = process.env.SCREENSHOT || "widget.png";
const rtlScreenshot = process.env.RTL_SCREENSHOT || "widget-rtl.png";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const timeout = 60000;
// The merchant's dashboard: its nudge results panel must count the click (optional).
const dashboardUrl = process.env.DASHBOARD_URL;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});

async function open(address, errors) {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 }, reducedMotion: "reduce" });
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(address);
  await page.waitForFunction(() => window.loyalnestNudges && window.loyalnestNudges.status === "live", null,
    { timeout });
  return page;
}

function describeCard() {
  const card = document.querySelector(".ln-card");
  const region = document.querySelector(".ln-nudges");
  const box = card.getBoundingClientRect();
  const style = getComputedStyle(card);
  return {
    nudgeId: card.dataset.nudgeId,
    kind: card.dataset.kind,
    title: card.querySelector(".ln-title").textContent,
    body: card.querySelector(".ln-body").textContent,
    lang: card.lang,
    dir: card.dir,
    direction: style.direction,
    animation: style.animationName,
    live: region.getAttribute("aria-live"),
    dismissLabel: card.querySelector(".ln-dismiss").getAttribute("aria-label"),
    focusOnBody: document.activeElement === document.body,
    left: box.left,
    right: window.innerWidth - box.right,
  };
}

try {
  const errors = [];
  const page = await open(url, errors);
  const initial = await page.evaluate(() => (window.loyalnestNudges.shown || {}).nudge_id || null);
  console.log(JSON.stringify({ ready: true, initial }));

  // The orders move the customer through several segments; the last move (into EXPECT_KIND) fires the last nudge,
  // so the card checked and clicked is not replaced under the test.
  await page.waitForFunction(([first, kind]) => {
    const shown = window.loyalnestNudges.shown;
    return shown && shown.nudge_id !== first && shown.kind === kind;
  }, [initial, expectKind], { timeout });
  await page.waitForSelector(".ln-card", { timeout });
  const seen = await page.evaluate(describeCard);
  await page.screenshot({ path: screenshot, fullPage: false });

  const shown = await page.evaluate(() => window.loyalnestNudges.shown);
  const clickedCell = `#nudge-results table[data-kind="${shown.kind}"] tr[data-arm="${shown.variant}"] td[data-count="clicked"]`;
  let board = null;
  let clicksBefore = null;
  if (dashboardUrl) {
    board = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    board.on("pageerror", (e) => errors.push(String(e)));
    await board.goto(dashboardUrl);
    await board.waitForFunction(() => {
      const panel = document.getElementById("nudge-results");
      return panel.dataset.loaded === "true" || /unavailable/.test(panel.textContent);
    }, null, { timeout });
    const note = await board.evaluate(() => document.querySelector("[data-results-note]").textContent);
    if (/unavailable/.test(note)) throw new Error(`dashboard results panel: ${note}`);
    clicksBefore = await board.evaluate((sel) => {
      const cell = document.querySelector(sel);
      return cell ? Number(cell.textContent) : 0;
    }, clickedCell);
  }

  await page.click(".ln-cta");
  await page.waitForFunction(() => window.loyalnestNudges.events.some((e) => e.action === "click" && e.status > 0),
    null, { timeout });
  const click = await page.evaluate(() => window.loyalnestNudges.events.find((e) => e.action === "click"));
  const view = await page.evaluate(() => window.loyalnestNudges.events.find((e) => e.action === "view"));
  const cardGone = await page.evaluate(() => document.querySelector(".ln-card") === null);
  let dashboardClicks = null;
  if (board) {
    // The panel refreshes by itself (every few seconds, or on a live frame): wait for the click to show.
    await board.waitForFunction(([sel, before]) => {
      const cell = document.querySelector(sel);
      return cell && Number(cell.textContent) > before;
    }, [clickedCell, clicksBefore], { timeout });
    const after = await board.evaluate((sel) => Number(document.querySelector(sel).textContent), clickedCell);
    dashboardClicks = { variant: shown.variant, before: clicksBefore, after };
    await board.screenshot({ path: screenshot.replace(/\.png$/, "-dashboard.png"), fullPage: true });
  }

  const rtl = await open(rtlUrl, errors);
  await rtl.waitForSelector(".ln-card", { timeout });
  const arabic = await rtl.evaluate(describeCard);
  await rtl.screenshot({ path: rtlScreenshot, fullPage: false });
  await rtl.keyboard.press("Escape");
  await rtl.waitForFunction(() => document.querySelector(".ln-card") === null, null, { timeout });
  const dismissed = await rtl.evaluate(() => window.loyalnestNudges.events.some((e) => e.action === "dismiss"));

  console.log(JSON.stringify({ ...seen, click, view, cardGone, dashboardClicks, arabic, dismissed, errors }));
} finally {
  await browser.close();
}
