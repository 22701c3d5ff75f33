// The on-call page's rendering of text from reports and waivers, in node
// alone (no browser, no dependency): the page's own script runs against a
// small stand-in for the DOM, renders a page answer and a node's details
// whose names and messages carry control, bidi and zero-width characters,
// and every text it put in the DOM must show them escaped, never raw.
// textContent keeps the page safe from markup, not from U+202E reversing
// "bond0/eth1" or U+200B hiding in a subject.
// Usage: node --test tests/page/escape.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const html = readFileSync(new URL("../../crates/aggregator/src/api/page.html", import.meta.url), "utf8");
const script = html.match(/<script>([\s\S]*)<\/script>/)[1];

// Every class the page must not show raw, with the form it must show.
const HIDDEN = [
  ["\u0000", "\\u{0}"], ["\u001b", "\\u{1b}"], ["\u007f", "\\u{7f}"], ["\u0085", "\\u{85}"], ["\u009b", "\\u{9b}"],
  ["\t", "\\t"], ["\n", "\\n"], ["\r", "\\r"],
  ["\u202a", "\\u{202a}"], ["\u202b", "\\u{202b}"], ["\u202c", "\\u{202c}"], ["\u202d", "\\u{202d}"], ["\u202e", "\\u{202e}"],
  ["\u2066", "\\u{2066}"], ["\u2067", "\\u{2067}"], ["\u2068", "\\u{2068}"], ["\u2069", "\\u{2069}"],
  ["\u200e", "\\u{200e}"], ["\u200f", "\\u{200f}"], ["\u061c", "\\u{61c}"],
  ["\u200b", "\\u{200b}"], ["\u200c", "\\u{200c}"], ["\u200d", "\\u{200d}"], ["\u2060", "\\u{2060}"], ["\ufeff", "\\u{feff}"],
  ["\u00ad", "\\u{ad}"], ["\u{e0041}", "\\u{e0041}"], ["\u2028", "\\u{2028}"], ["\u2029", "\\u{2029}"],
];
const RAW = new RegExp("[" + HIDDEN.map(([c]) => c).join("").replace(/[\]\\^-]/g, "\\$&") + "]", "u");
const ALL = HIDDEN.map(([c]) => c).join("");

class FakeNode {
  constructor(tag) { this.tag = tag; this.children = []; this.textContent = ""; this.hidden = false; }
  get tBodies() { return (this._tb ??= [new FakeNode("tbody")]); }
  append(...c) { for (const x of c) this.children.push(x instanceof FakeNode ? x : Object.assign(new FakeNode("#text"), { textContent: String(x) })); }
  replaceChildren(...c) { this.children = []; this.append(...c); }
}
function texts(n) { return [n.textContent, ...n.children.flatMap(texts), ...(n._tb ?? []).flatMap(texts)]; }

function page(routes) {
  const ids = new Map();
  const document = {
    createElement: (tag) => new FakeNode(tag),
    getElementById: (id) => { if (!ids.has(id)) ids.set(id, new FakeNode("#" + id)); return ids.get(id); },
  };
  const fetch = async (url) => {
    const body = routes[String(url).split("?")[0]];
    return body ? { ok: true, status: 200, json: async () => body } : { ok: false, status: 404 };
  };
  const ctx = vm.createContext({ document, fetch, Node: FakeNode, setInterval: () => 0, encodeURIComponent, console });
  vm.runInContext(script, ctx);
  return { ctx, ids };
}

test("names and messages show control, bidi and zero-width characters escaped", async () => {
  const subject = "bond0/\u202eeth1";
  const message = "bond0 port eth1 is down " + ALL;
  const { ctx, ids } = page({
    "/v1/page": {
      generated_at: "2026-01-01T00:00:00Z", verdict: "no-go", counts: { "no-go": 1 }, scopes: [],
      blockers: [{ node: "compute-1", code: "BOND_PORT_DOWN", subject, message, since: "2026-01-01T00:00:00Z" }],
      blockers_total: 1, waived: [],
      nodes: [{ node: "compute-1", status: "no-go", labels: { role: "compute" }, findings: [{}], last_report: null }],
      nodes_total: 1,
      waivers: [{ id: 7, node: "compute-1", code: "BOND_PORT_DOWN", subject: "bond0/\u2066eth1\u2069",
        reason: "cable \u200bswap " + ALL, author: "ops\u200f", expires_at: "2026-01-02T00:00:00Z" }],
    },
    "/v1/nodes/compute-1": {
      node: { status: "no-go", findings: [{ severity: "critical", code: "BOND_PORT_DOWN", subject, message }] },
      state: { bonds: [{ name: "bond0\u202e", mode: "active-backup\u200d", miimon_ms: 100, active_port: "eth0\ufeff", carrier: true,
        ports: [{ name: "eth1\u202e", mii_status: "down", state: "backup", carrier: false, link_failure_count: 1 }] }] },
    },
  });
  await vm.runInContext("refresh()", ctx);
  await vm.runInContext('showNode("compute-1")', ctx);
  const shown = [...ids.values()].flatMap(texts);
  assert.ok(shown.some((t) => t.includes("bond0/\\u{202e}eth1")), "the subject is shown escaped: " + JSON.stringify(shown));
  assert.ok(ids.get("detail").children.length > 0, "the node's details rendered");
  for (const t of shown) {
    const m = t.match(RAW);
    assert.equal(m, null, `U+${m?.[0].codePointAt(0).toString(16)} shown raw in ${JSON.stringify(t)}`);
  }
  // Each class in its escaped form, in order.
  assert.ok(shown.some((t) => t.includes(HIDDEN.map(([, e]) => e).join(""))), JSON.stringify(shown));
  // Letters of any script and visible symbols stay as they are.
  const kept = vm.runInContext('el("td", "eth1 ü é 网卡 → ✓").textContent', ctx);
  assert.equal(kept, "eth1 ü é 网卡 → ✓");
});
