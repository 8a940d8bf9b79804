// Drives /dashboard in a real headless Chromium for tests/api/browser.rs.
// It prints "ready" once the page is live (socket open, first frame drawn), then waits for the test's orders to
// move a customer into Champions, checks the chart, the table and the keyboard controls, saves a screenshot and
// prints one JSON line with what it saw. Any failure exits non-zero with the reason on stderr.
import { chromium } from "playwright-core";

const url = process.env.DASHBOARD_URL;
const screenshot = process.env.SCREENSHOT || "dashboard.png";
const executablePath = process.env.CHROMIUM || "/usr/bin/chromium";
const timeout = 30000;

const browser = await chromium.launch({
  executablePath,
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 390, height: 844 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(url);
  await page.waitForFunction(() => window.dashboard && window.dashboard.frames >= 1, null, { timeout });
  await page.waitForSelector('#status[data-state="live"]', { timeout });
  const tokenInAddressBar = page.url().includes("token=");
  console.log("ready");

  await page.waitForFunction(() => {
    const chart = window.dashboard.chart;
    if (!chart) return false;
    const at = chart.data.labels.indexOf("Champions");
    return at >= 0 && chart.data.datasets[0].data[at] >= 1;
  }, null, { timeout });
  const seen = await page.evaluate(() => {
    const chart = window.dashboard.chart;
    const at = chart.data.labels.indexOf("Champions");
    return {
      champions: chart.data.datasets[0].data[at],
      table: document.querySelector('tr[data-segment="champions"] td').textContent,
      moves: Array.from(document.querySelectorAll("#moves li")).map((li) => li.firstChild.textContent),
      overflow: document.documentElement.scrollWidth > window.innerWidth,
      shop: document.getElementById("shop").textContent,
    };
  });
  await page.screenshot({ path: screenshot, fullPage: true });

  await page.keyboard.press("Tab");
  const focused = await page.evaluate(() => document.activeElement.id);
  await page.keyboard.press("Enter");
  const pressed = await page.getAttribute("#pause", "aria-pressed");
  console.log(JSON.stringify({ ...seen, focused, pressed, tokenInAddressBar, errors }));
} finally {
  await browser.close();
}
