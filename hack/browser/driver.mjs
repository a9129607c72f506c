// A headless Chromium driven by playwright-core, controlled over stdin/stdout with
// one JSON object per line: Python tests (tests/browser) send {"id", "op", ...} and
// read back {"id", "ok", "value"} or {"id", "ok": false, "error"}.
//
// Chromium is Debian's (/usr/bin/chromium, or $CHROMIUM): Playwright's own browser
// download is not used. Every page's console errors, CSP violations, dialogs
// (alert/confirm/prompt: what an injected script would open) and failed requests
// are recorded and returned by the "problems" op.
import { chromium } from "playwright-core";
import readline from "node:readline";

const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
  "--disable-component-update", "--no-first-run",
];

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: FLAGS,
});
const context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
const page = await context.newPage();
const problems = [];
page.on("console", (msg) => { if (msg.type() === "error") problems.push("console: " + msg.text()); });
page.on("pageerror", (err) => problems.push("pageerror: " + err.message));
page.on("dialog", async (dialog) => { problems.push("dialog: " + dialog.message()); await dialog.dismiss(); });
page.on("requestfailed", (req) => {
  const failure = req.failure();
  // An EventSource closed by navigation or shutdown is not a problem.
  if (!req.url().endsWith("/api/stream")) problems.push("requestfailed: " + req.url() + " " + (failure ? failure.errorText : ""));
});

const ops = {
  version: async () => browser.version(),
  goto: async ({ url }) => { const r = await page.goto(url, { waitUntil: "load" }); return { status: r.status(), headers: r.headers() }; },
  waitFor: async ({ selector, text, timeout }) => {
    const locator = text === undefined ? page.locator(selector).first() : page.locator(selector, { hasText: text }).first();
    await locator.waitFor({ state: "visible", timeout: timeout ?? 30000 });
    return true;
  },
  waitForFunction: async ({ body, arg, timeout }) => {
    await page.waitForFunction(new Function("arg", body), arg, { timeout: timeout ?? 30000, polling: 100 });
    return true;
  },
  text: async ({ selector }) => page.locator(selector).first().textContent(),
  texts: async ({ selector }) => page.locator(selector).allTextContents(),
  count: async ({ selector }) => page.locator(selector).count(),
  attribute: async ({ selector, name }) => page.locator(selector).first().getAttribute(name),
  click: async ({ selector, text }) => {
    const locator = text === undefined ? page.locator(selector).first() : page.locator(selector, { hasText: text }).first();
    await locator.click();
    return true;
  },
  fill: async ({ selector, value }) => { await page.locator(selector).first().fill(value); return true; },
  select: async ({ selector, value }) => { await page.locator(selector).first().selectOption(value); return true; },
  evaluate: async ({ body, arg }) => page.evaluate(new Function("arg", body), arg),
  screenshot: async ({ path, fullPage }) => { await page.screenshot({ path, fullPage: !!fullPage }); return path; },
  problems: async () => problems.splice(0),
  close: async () => { await browser.close(); return true; },
};

const lines = readline.createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  let answer;
  try {
    answer = { id: command.id, ok: true, value: await ops[command.op](command) };
  } catch (err) {
    answer = { id: command.id, ok: false, error: String(err && err.message ? err.message : err) };
  }
  process.stdout.write(JSON.stringify(answer) + "\n");
  if (command.op === "close") break;
}
await browser.close().catch(() => {});
