// Loads the on-call page in Debian's chromium (headless) against a running
// aggregator with a degraded node, checks the blocker is shown, then posts a
// recovery report and checks the page updates without a reload.
// Usage: node page.test.mjs BASE_URL SCREENSHOT_DIR
import { chromium } from "playwright-core";
import assert from "node:assert/strict";

const [base, outDir] = process.argv.slice(2);
const state = (node, findings) => ({ node, verdict: findings.length ? "no-go" : "go", findings,
  interfaces: [], bonds: [], addresses: [], routes: [] });
const portDown = { code: "BOND_PORT_DOWN", severity: "critical", subject: "bond0/eth1",
  message: "bond0 port eth1 is down (MII status down, 1 link failures)", since: new Date().toISOString().replace(/\.\d+Z$/, "Z") };
async function report(node, seq, findings) {
  const r = await fetch(base + "/v1/reports", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ node, boot_id: "page-test", seq, kind: "full", labels: { role: "compute" }, state: state(node, findings) }) });
  assert.equal(r.status, 200, await r.text());
}

await report("compute-1", 1, [portDown]);
await report("compute-2", 1, []);

const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"] });
try {
  for (const [name, viewport] of [["laptop", { width: 1280, height: 800 }], ["phone", { width: 390, height: 844 }]]) {
    const page = await browser.newPage({ viewport });
    await page.goto(base + "/");
    await page.waitForFunction(() => document.getElementById("verdict").textContent === "NO-GO", null, { timeout: 15000 });
    const blockers = await page.locator("#blockers tbody").innerText();
    assert.match(blockers, /compute-1/);
    assert.match(blockers, /BOND_PORT_DOWN/);
    assert.match(blockers, /bond0\/eth1/);
    assert.equal(await page.locator("html").getAttribute("lang"), "en");
    assert.ok(await page.locator("main h2").count() >= 3, "sections have headings");
    await page.screenshot({ path: `${outDir}/page-degraded-${name}.png`, fullPage: true });
    await page.close();
  }
  const page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  await page.goto(base + "/");
  await page.waitForFunction(() => document.getElementById("verdict").textContent === "NO-GO", null, { timeout: 15000 });
  await page.evaluate(() => { window.__noReload = 42; });
  await report("compute-1", 2, []);
  await page.waitForFunction(() => document.getElementById("verdict").textContent === "GO", null, { timeout: 15000 });
  assert.equal(await page.evaluate(() => window.__noReload), 42, "the page updated without a reload");
  assert.equal(await page.locator("#no-blockers").isVisible(), true);
  // Every node fits: no "showing N of M" note.
  assert.equal(await page.locator("#nodes-cut").isVisible(), false);
  await page.screenshot({ path: `${outDir}/page-recovered.png`, fullPage: true });
  // A subject with a bidi override and a zero-width space is shown escaped,
  // not reversed or hidden (tests/page/escape.test.mjs covers every class).
  await report("compute-3", 1, [{ ...portDown, subject: "bond0/\u202eeth1\u200b", message: "port \u2066eth1\u2069 is down" }]);
  await page.waitForFunction(() => document.getElementById("verdict").textContent === "NO-GO", null, { timeout: 15000 });
  const shown = await page.locator("#blockers tbody").innerText();
  assert.ok(shown.includes("bond0/\\u{202e}eth1\\u{200b}"), shown);
  assert.ok(shown.includes("port \\u{2066}eth1\\u{2069} is down"), shown);
  assert.doesNotMatch(shown, /[\u202e\u200b\u2066\u2069]/u);
  console.log("page test: blocker shown, recovery shown without reload, hidden characters escaped; screenshots in " + outDir);
} finally {
  await browser.close();
}
