// The demo page's script: install() over IndexedDB, app code that knows nothing about idempotency, the LLM proxy panel, live counters.
import axios from "axios";
import { indexedDBStore, install, type Uninstall, withWebLocks } from "../../src/browser.ts";

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

/** The browser's own fetch, kept before install(): the LLM panel shows the server coalescing, so both requests must reach it. */
const directFetch: typeof fetch = globalThis.fetch.bind(globalThis);

// --- idemfetch: the only lines a real app adds ------------------------------------------------
const DB = "idemfetch-demo";
let uninstall: Uninstall | undefined;
/** Calls saved by earlier installs: like "replayed", the page's counters count since the page loaded. */
let savedBefore = 0;
function protect(on: boolean): void {
  savedBefore += uninstall?.stats().saved ?? 0;
  uninstall?.();
  uninstall = on ? install({ store: withWebLocks(indexedDBStore({ dbName: DB }), { name: DB }) }) : undefined;
  $("status").textContent = on
    ? "install() is active: fetch and XMLHttpRequest go through idemfetch"
    : "uninstalled: every click is a request";
  $("status").className = on ? "status" : "status off";
}
protect(true);
$<HTMLInputElement>("protect").addEventListener("change", (event) => {
  protect((event.target as HTMLInputElement).checked);
});

// --- the app: plain fetch and axios ----------------------------------------------------------
/** Each button places its own order (`via`): the same item from another button is another order, not a replay. */
const order = (via: string) => ({
  item: $<HTMLSelectElement>("item").value,
  qty: Number($<HTMLInputElement>("qty").value),
  via,
});

$("order-fetch").addEventListener("click", () => {
  void track("fetch", () =>
    fetch("/api/order", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(order("fetch")),
    }).then(fromFetch),
  );
});

$("order-axios").addEventListener("click", () => {
  void track("axios", () =>
    axios.post("/api/order", order("axios"), { validateStatus: () => true }).then((r) => ({
      status: r.status,
      replayed: r.headers["idempotent-replayed"] === "true",
      body: JSON.stringify(r.data),
    })),
  );
});

$("burst").addEventListener("click", () => {
  action("burst", 10);
  const body = JSON.stringify(order("burst"));
  for (let i = 0; i < 10; i++) {
    void track("burst", () =>
      fetch("/api/order", { method: "POST", headers: { "content-type": "application/json" }, body }).then(fromFetch),
    );
  }
});

$("pay").addEventListener("click", () => {
  const key = $<HTMLInputElement>("pay-key").value;
  const amount = $<HTMLInputElement>("pay-amount").value;
  void track("pay", () =>
    fetch("/api/order", {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": key },
      body: JSON.stringify({ invoice: key, amount }),
    }).then(fromFetch),
  );
});

// --- the LLM proxy: two duplicate streaming requests, one answer in two panes -----------------
interface ProxyStats {
  requests: number;
  upstream_calls: number;
  saved_calls: number;
  saved_usd: number;
}

$("llm-ask").addEventListener("click", () => {
  // A new key per click; not crypto.randomUUID(), which a page opened by LAN address (not a secure context) lacks.
  const key = `llm-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
  const body = JSON.stringify({
    target: "mock",
    stream: true,
    messages: [{ role: "user", content: $<HTMLInputElement>("llm-prompt").value }],
  });
  const ask = (pane: string) => streamInto(pane, key, body);
  void Promise.all([ask("llm-a"), ask("llm-b")]).then(refreshProxy);
});

/** Sends one request and writes its streamed chunks into the pane as they arrive. */
async function streamInto(pane: string, key: string, body: string): Promise<void> {
  const out = $(pane);
  const status = $(`${pane}-status`);
  out.textContent = "";
  status.textContent = "sending…";
  try {
    const response = await directFetch("/proxy/llm", {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": key },
      body,
    });
    const replayed = response.headers.get("idempotent-replayed") === "true";
    status.textContent = `${response.status} · ${replayed ? "shared the other's run" : "ran the model"}`;
    status.dataset.replayed = String(replayed);
    for await (const { name, data } of serverEvents(response.body!)) {
      if (name === "chunk") out.textContent += (JSON.parse(data) as { text: string }).text;
      if (name === "done") out.dataset.done = "true";
    }
  } catch (error) {
    status.textContent = `failed: ${(error as Error).message}`;
  }
}

/** The events of a text/event-stream body. */
async function* serverEvents(body: ReadableStream<Uint8Array>): AsyncGenerator<{ name: string; data: string }> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let end = buffer.indexOf("\n\n");
    while (end >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      end = buffer.indexOf("\n\n");
      const name = /^event: (.*)$/m.exec(block)?.[1] ?? "message";
      const data = /^data: (.*)$/m.exec(block)?.[1];
      if (data !== undefined) yield { name, data };
    }
  }
}

async function refreshProxy(): Promise<void> {
  let stats: ProxyStats;
  try {
    stats = (await (await directFetch("/stats")).json()) as ProxyStats;
  } catch {
    return; // the server is gone, or this server has no proxy; keep the last numbers
  }
  $("s-requests").textContent = String(stats.requests);
  $("s-upstream").textContent = String(stats.upstream_calls);
  $("s-saved-calls").textContent = String(stats.saved_calls);
  // Mock answers cost fractions of a cent: six decimals show them.
  $("s-saved-usd").textContent = stats.saved_usd === 0 ? "$0" : `$${stats.saved_usd.toFixed(6)}`;
}

// --- counters, chart and log ------------------------------------------------------------------
interface Outcome {
  status: number;
  replayed: boolean;
  body: string;
}

const counts = { sent: 0, replays: 0 };
/** Per action: what it was, requests sent and upstream executions (the server's count moved by). */
const actions: { label: string; sent: number; executedFrom: number; executed: number }[] = [];
let executions = 0;
let lastAction = 0;

async function fromFetch(response: Response): Promise<Outcome> {
  return {
    status: response.status,
    replayed: response.headers.get("idempotent-replayed") === "true",
    body: await response.text(),
  };
}

/** Groups the requests of one user action (a click, a double-click, a burst) into one chart column. */
function action(label: string, requests: number): void {
  const now = performance.now();
  const current = actions.at(-1);
  if (current?.label === label && now - lastAction < 400) current.sent += requests;
  else actions.push({ label, sent: requests, executedFrom: executions, executed: 0 });
  if (actions.length > 12) actions.shift();
  lastAction = now;
}

async function track(kind: string, call: () => Promise<Outcome>): Promise<void> {
  if (kind !== "burst") action(kind, 1);
  counts.sent++;
  render();
  let outcome: Outcome;
  try {
    outcome = await call();
  } catch (error) {
    outcome = { status: 0, replayed: false, body: String(error) };
  }
  if (outcome.replayed) counts.replays++;
  log(kind, outcome);
  await refresh();
}

function log(kind: string, outcome: Outcome): void {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  item.dataset.status = String(outcome.status);
  item.dataset.replayed = String(outcome.replayed);
  const what = document.createElement("span");
  what.textContent = outcome.replayed ? `${kind} · replayed` : kind;
  if (outcome.replayed) what.className = "replayed";
  const status = document.createElement("span");
  status.textContent = String(outcome.status);
  const body = document.createElement("code");
  body.textContent = outcome.body;
  item.append(what, status, body);
  $("log").prepend(item);
}

async function refresh(): Promise<void> {
  try {
    executions = ((await (await fetch("/api/counters")).json()) as { executions: number }).executions;
  } catch {
    // the server is gone; keep the last numbers
  }
  const current = actions.at(-1);
  if (current) current.executed = Math.max(0, executions - current.executedFrom);
  render();
}

function render(): void {
  $("c-sent").textContent = String(counts.sent);
  $("c-exec").textContent = String(executions);
  $("c-replays").textContent = String(counts.replays);
  $("c-saved").textContent = String(savedBefore + (uninstall?.stats().saved ?? 0));
  const max = Math.max(1, ...actions.map((a) => a.sent));
  const svg = actions
    .map((a, i) => {
      const x = 10 + i * 72;
      const bar = (value: number, dx: number, color: string) => {
        const h = (value / max) * 120;
        return `<rect x="${x + dx}" y="${130 - h}" width="26" height="${h}" rx="3" fill="${color}"/>`;
      };
      const text = (y: number, content: string, weight = 400) =>
        `<text x="${x + 28}" y="${y}" font-size="11" font-weight="${weight}" text-anchor="middle" fill="#6b7385">${content}</text>`;
      return `<g data-action="${a.label}">${bar(a.sent, 0, "var(--sent)")}${bar(a.executed, 30, "var(--exec)")}${text(146, a.label, 600)}${text(162, `${a.sent}→${a.executed}`)}</g>`;
    })
    .join("");
  // As wide as its columns (never narrower than a phone), scaled evenly so the labels keep their shape.
  $("chart").setAttribute("viewBox", `0 0 ${Math.max(360, 20 + actions.length * 72)} 170`);
  $("chart").innerHTML = svg;
}

void refresh();
void refreshProxy();
// Other tabs and clients execute too: keep the server's counters live.
setInterval(() => {
  void refresh();
  void refreshProxy();
}, 2000);
