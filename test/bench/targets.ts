// Issue 10's targets ("close to the floor") computed from one run's results: measured, target, met.
import type { BundleSize } from "./bundle.ts";
import type { Burst, Latency } from "./client-workloads.ts";
import { kb, median, ms, table, times } from "./lib.ts";
import type { Results } from "./report.ts";
import type { ServerLatency } from "./server-workloads.ts";

export interface Target {
  figure: string;
  measured: string;
  target: string;
  met: boolean;
}

const med = (l: Latency | ServerLatency | undefined): number => (l ? median(l.samples) : Number.NaN);
const us = (value: number): string => `${(value * 1000).toFixed(1)} µs`;

export function targets(r: Results): Target[] {
  const c = r.client;
  const s = r.server;
  const ci = (name: string, store?: string) =>
    c.contenders.findIndex((k) => k.name === name && (store === undefined || k.store === store));
  const si = (id: string) => s.specs.findIndex((k) => k.id === id);
  const [plain, mem, redis] = [si("plain"), si("idemfetch-memory"), si("idemfetch-redis")];
  const [rawFetch, idem, axiosCache] = [ci("raw fetch"), ci("idemfetch", "memory"), ci("axios-cache-interceptor")];
  const added = (i: number) => med(s.miss0[i]) - med(s.miss0[plain]);
  const k32 = r.config.concurrency.indexOf(32);
  const rps = (i: number) => s.throughput[i]?.[k32]?.rps ?? Number.NaN;
  const cannon = (i: number) => s.cannon[i]?.rps ?? Number.NaN;
  const cmds = s.commands[redis];
  const zeroBurst = c.burstScaling.find((b) => b.workMs === 0) as Burst;
  const longBurst = c.burstScaling.find((b) => b.workMs === r.config.longWorkMs) as Burst;
  const perCaller = (zeroBurst.wallMs - zeroBurst.oneCallMs) / (zeroBurst.size - 1);
  const replay = med(c.replay[idem]);
  const loopback = med(c.replay[rawFetch]);
  const axiosReplay = med(c.replay[axiosCache]);
  const core = r.bundles.find((b) => b.name === "idemfetch") as BundleSize;
  const missRatio = med(c.miss0[idem]) / med(c.miss0[rawFetch]);
  const tpRow = (i: number, min: number, label: string): Target => ({
    figure: `server throughput, ${label}, c=32 distinct keys, 0 ms handler ÷ plain (harness; autocannon)`,
    measured: `${rps(i).toFixed(0)} vs ${rps(plain).toFixed(0)} req/s = ${times(rps(i) / rps(plain))}; autocannon ${cannon(i).toFixed(0)} vs ${cannon(plain).toFixed(0)} = ${times(cannon(i) / cannon(plain))}`,
    target: `≥ ${min}×`,
    met: rps(i) / rps(plain) >= min,
  });
  return [
    {
      figure: "server miss, memory store: added median latency (0 ms handler)",
      measured: `${ms(med(s.miss0[mem]))} vs ${ms(med(s.miss0[plain]))}: +${ms(added(mem))}`,
      target: "≤ 0.10 ms",
      met: added(mem) <= 0.1,
    },
    tpRow(mem, 0.8, "memory store"),
    tpRow(redis, 0.5, "ioredis"),
    {
      figure: "server replay (memory store) vs the plain handler, median",
      measured: `${ms(med(s.replay[mem]))} vs ${ms(med(s.replay[plain]))} (ioredis ${ms(med(s.replay[redis]))})`,
      target: "≤ plain",
      met: med(s.replay[mem]) <= med(s.replay[plain]),
    },
    {
      figure: "server miss, ioredis: added median latency; Redis round trips per miss / replay",
      measured: `+${ms(added(redis))}; ${cmds ? `${cmds.miss.roundTrips.toFixed(2)} / ${cmds.replay.roundTrips.toFixed(2)}` : "–"}`,
      target: "≤ 0.35 ms; 2 / 1",
      met: added(redis) <= 0.35 && !!cmds && cmds.miss.roundTrips <= 2 && cmds.replay.roundTrips <= 1,
    },
    {
      figure: "client burst: cost per extra caller (1,000 callers, 0 ms upstream)",
      measured: `${us(perCaller)} (${ms(zeroBurst.wallMs)} vs one call ${ms(zeroBurst.oneCallMs)}; ${zeroBurst.upstreamCalls} upstream call)`,
      target: "≤ 10 µs",
      met: perCaller <= 0.01 && zeroBurst.upstreamCalls === 1,
    },
    {
      figure: `client burst: 1,000 callers of a ${r.config.longWorkMs} ms call ÷ one call`,
      measured: `${ms(longBurst.wallMs)} vs ${ms(longBurst.oneCallMs)} = ${times(longBurst.wallMs / longBurst.oneCallMs)}; ${longBurst.upstreamCalls} upstream call`,
      target: "≤ 1.05×, 1 call",
      met: longBurst.wallMs / longBurst.oneCallMs <= 1.05 && longBurst.upstreamCalls === 1,
    },
    {
      figure: "client replay, memory store, median (÷ loopback fetch; ÷ axios-cache-interceptor)",
      measured: `${us(replay)}: ${times(loopback / replay)} faster than ${ms(loopback)}; ${times(replay / axiosReplay)} of ${us(axiosReplay)}`,
      target: "≤ 50 µs; ≥ 20× faster; ≤ 0.5×",
      met: replay <= 0.05 && loopback / replay >= 20 && replay / axiosReplay <= 0.5,
    },
    {
      figure: "client miss, 0 ms loopback: idemfetch (memory) ÷ raw fetch, median",
      measured: `${ms(med(c.miss0[idem]))} vs ${ms(med(c.miss0[rawFetch]))} = ${times(missRatio)}`,
      target: "≤ 1.05×",
      met: missRatio <= 1.05,
    },
    {
      figure: "core bundle (createIdempotentFetch + memoryStore), min+gzip -9",
      measured: `${kb(core.gzipBytes)} (${kb(core.minBytes)} min)`,
      target: "≤ 5 KB",
      met: core.gzipBytes <= 5 * 1024,
    },
  ];
}

/** The targets table; with a second runtime's targets, its measured and met columns beside the first. */
export function renderTargets(node: string, rows: Target[], other?: { node: string; rows: Target[] } | string): string {
  const yes = (ok: boolean | undefined) => (ok === undefined ? "–" : ok ? "yes" : "**no**");
  if (other === undefined || typeof other === "string") {
    const note = typeof other === "string" ? `\n\n${other}` : "";
    return (
      table(
        ["figure", `measured (Node ${node})`, "target", "met"],
        rows.map((t) => [t.figure, t.measured, t.target, yes(t.met)]),
      ) + note
    );
  }
  return table(
    ["figure", `measured (Node ${node})`, "met", `measured (Node ${other.node})`, "met", "target"],
    rows.map((t, i) => [
      t.figure,
      t.measured,
      yes(t.met),
      other.rows[i]?.measured ?? "–",
      yes(other.rows[i]?.met),
      t.target,
    ]),
  );
}
