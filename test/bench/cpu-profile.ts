// Summarises a V8 .cpuprofile: self time by where the code lives (idemfetch, undici, web streams, ...) and the top functions.
import { readFileSync } from "node:fs";
import { table } from "./lib.ts";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Which part of the stack a frame belongs to, from its script URL. */
export function areaOf(url: string, name: string): string {
  if (url.includes("/src/") && !url.includes("node_modules")) return "idemfetch src/";
  if (url.includes("/adapters/") && !url.includes("node_modules")) return "idemfetch adapters/";
  if (url.includes("@hono/node-server")) return "@hono/node-server";
  if (url.includes("ioredis")) return "ioredis";
  if (url.includes("node_modules/hono/")) return "hono";
  if (url.includes("internal/deps/undici")) return "undici (Request/Response/Headers)";
  if (url.includes("internal/webstreams")) return "web streams";
  if (url.includes("internal/worker/js_transferable") || name === "makeTransferable") return "makeTransferable";
  if (url.includes("internal/abort_controller") || url.includes("internal/event_target"))
    return "AbortSignal/EventTarget";
  if (url.startsWith("node:internal/http") || url.startsWith("node:_http") || url.includes("_http_"))
    return "node:http";
  if (url.startsWith("node:") || url.startsWith("internal")) return "node (other)";
  if (name === "(garbage collector)") return "GC";
  if (name === "(idle)" || name === "(program)") return name;
  if (url.includes("node_modules")) return "other node_modules";
  if (url === "") return "native/builtin";
  return "other";
}

export interface ProfileSummary {
  totalMs: number;
  /** Share of non-idle time per area, descending. */
  areas: { area: string; ms: number; share: number }[];
  top: { fn: string; ms: number; share: number }[];
  /** idemfetch's functions by inclusive time (self plus everything they call). */
  inclusive: { fn: string; ms: number; share: number }[];
}

export function summarise(path: string, topN = 15): ProfileSummary {
  const profile = JSON.parse(readFileSync(path, "utf8")) as Profile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const self = new Map<number, number>();
  for (const [i, id] of profile.samples.entries())
    self.set(id, (self.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000);
  const areas = new Map<string, number>();
  const fns = new Map<string, number>();
  let busy = 0;
  for (const [id, t] of self) {
    const { functionName, url, lineNumber } = (byId.get(id) as ProfileNode).callFrame;
    const area = areaOf(url, functionName);
    if (area === "(idle)") continue;
    busy += t;
    areas.set(area, (areas.get(area) ?? 0) + t);
    const short = url.replace(/^.*node_modules\//, "").replace(/^file:\/\/.*\/(src|adapters)\//, "$1/");
    const fn = `${functionName || "(anonymous)"} ${short}:${lineNumber + 1}`;
    fns.set(fn, (fns.get(fn) ?? 0) + t);
  }
  // Inclusive time of idemfetch's own functions (self plus callees), a function counted once per stack.
  const parent = new Map<number, number>();
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id);
  const keyOf = (node: ProfileNode): string =>
    `${node.callFrame.functionName || "(anonymous)"} ${node.callFrame.url.replace(/^.*\/(src|adapters)\//, "$1/")}`;
  const inclusive = new Map<string, number>();
  for (const [id, t] of self) {
    if (areaOf((byId.get(id) as ProfileNode).callFrame.url, "") === "(idle)") continue;
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const node = byId.get(at) as ProfileNode;
      const area = areaOf(node.callFrame.url, node.callFrame.functionName);
      if (area !== "idemfetch src/" && area !== "idemfetch adapters/") continue;
      const key = keyOf(node);
      if (seen.has(key)) continue;
      seen.add(key);
      inclusive.set(key, (inclusive.get(key) ?? 0) + t);
    }
  }
  const rank = (m: Map<string, number>) => [...m].sort((a, b) => b[1] - a[1]);
  return {
    totalMs: busy,
    areas: rank(areas).map(([area, ms]) => ({ area, ms, share: ms / busy })),
    top: rank(fns)
      .slice(0, topN)
      .map(([fn, ms]) => ({ fn, ms, share: ms / busy })),
    inclusive: rank(inclusive)
      .slice(0, topN)
      .map(([fn, ms]) => ({ fn, ms, share: ms / busy })),
  };
}

export function renderSummary(title: string, s: ProfileSummary): string {
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  const rows = (list: { ms: number; share: number }[], name: (i: number) => string) =>
    list.map((x, i) => [name(i), `${x.ms.toFixed(0)} ms`, pct(x.share)]);
  return [
    `### ${title}`,
    "",
    `${s.totalMs.toFixed(0)} ms of non-idle CPU sampled.`,
    "",
    table(
      ["area", "self time", "share"],
      rows(s.areas, (i) => s.areas[i]?.area ?? ""),
    ),
    "",
    table(
      ["top functions (self)", "self time", "share"],
      rows(s.top, (i) => `\`${s.top[i]?.fn}\``),
    ),
    "",
    table(
      ["idemfetch functions (inclusive)", "total time", "share"],
      rows(s.inclusive, (i) => `\`${s.inclusive[i]?.fn}\``),
    ),
    "",
  ].join("\n");
}
