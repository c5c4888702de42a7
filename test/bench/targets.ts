// The targets of issue 15 (and issue 10's that it did not restate), computed from one run's results:
// measured, target, met. One row per figure.
import type { BundleSize } from "./bundle.ts";
import type { Burst, Latency } from "./client-workloads.ts";
import { FACE_NAMES, type FaceThroughput, FRAMEWORKS, type Framework, summary } from "./face-workloads.ts";
import { kb, median, ms, table, times } from "./lib.ts";
import type { Results } from "./report.ts";
import type { ServerBurst, ServerLatency } from "./server-workloads.ts";

export interface Target {
  /** The issue(s) that set this target: one row per figure, the newer issue's target where both set one. */
  issue: string;
  figure: string;
  measured: string;
  target: string;
  met: boolean;
}

const med = (l: Latency | ServerLatency | undefined): number => (l ? median(l.samples) : Number.NaN);
const us = (value: number): string => `${(value * 1000).toFixed(1)} µs`;
const plus = (value: number): string => (value < 0 ? `−${ms(-value)}` : `+${ms(value)}`);

export function targets(r: Results): Target[] {
  const c = r.client;
  const s = r.server;
  const f = r.faces;
  const ci = (name: string, store?: string) =>
    c.contenders.findIndex((k) => k.name === name && (store === undefined || k.store === store));
  const si = (id: string) => s.specs.findIndex((k) => k.id === id);
  const [plain, mem, redis] = [si("plain"), si("idemfetch-memory"), si("idemfetch-redis")];
  const [powertools, nodeIdem] = [si("powertools-redis"), si("node-idempotency-redis")];
  const [rawFetch, idem, axiosCache] = [ci("raw fetch"), ci("idemfetch", "memory"), ci("axios-cache-interceptor")];
  const added = (i: number) => med(s.miss0[i]) - med(s.miss0[plain]);
  const k32 = r.config.concurrency.indexOf(32);
  const rps = (i: number) => s.throughput[i]?.[k32]?.rps ?? Number.NaN;
  const cpu = (i: number) => s.throughput[i]?.[k32]?.cpuUs ?? Number.NaN;
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

  // ---- the faces (issue 15) ----
  const fi = (framework: Framework, wrapped: boolean) =>
    f.specs.findIndex((k) => k.framework === framework && k.wrapped === wrapped);
  const face = (framework: Framework) => {
    const [p, w] = [fi(framework, false), fi(framework, true)];
    const tp = (i: number) => (f.throughput[i] ? summary(f.throughput[i] as FaceThroughput) : undefined);
    return {
      p: tp(p),
      w: tp(w),
      added: med(f.miss0[w]) - med(f.miss0[p]),
      missW: med(f.miss0[w]),
      missP: med(f.miss0[p]),
      burst: f.bursts[w] ?? undefined,
    };
  };
  const rounds = `median of ${r.config.faceRounds} interleaved rounds`;
  const faceRow = (framework: Framework, min: number): Target => {
    const x = face(framework);
    const names = FACE_NAMES[framework];
    return {
      issue: "15",
      figure: `${names.face}, memory, c=32 ÷ ${names.plain} (req/s, ${rounds}; server CPU µs/req)`,
      measured:
        x.w && x.p
          ? `${times(x.w.ratio)} (${x.w.rps.toFixed(0)} vs ${x.p.rps.toFixed(0)} req/s; CPU ${x.w.cpu.toFixed(0)} vs ${x.p.cpu.toFixed(0)} µs)`
          : "–",
      target: `≥ ${min}×`,
      met: !!x.w && x.w.ratio >= min,
    };
  };
  const nodeFaces = (["node", "express", "fastify"] as const).map((k) => ({ k, ...face(k) }));
  const peer = (i: number, name: string, value: (i: number) => string) =>
    i < 0 ? `${name}: not installed` : `${name} ${value(i)}`;
  const peers = [powertools, nodeIdem].filter((i) => i >= 0);
  const bursts: { name: string; burst: ServerBurst | undefined }[] = [
    ...FRAMEWORKS.map((k) => ({ name: FACE_NAMES[k].face, burst: face(k).burst })),
    { name: "idempotency() ioredis", burst: s.dupBursts[redis] },
  ];
  const burstText = (b: ServerBurst | undefined) =>
    b ? `${b.executions} exec, ${b.same200} same 200${b.correct ? "" : ` (${b.outcomes})`}` : "–";

  return [
    faceRow("express", 0.8),
    faceRow("fastify", 0.7),
    faceRow("node", 0.8),
    faceRow("hono", 0.5),
    faceRow("web", 0.5),
    {
      issue: "15",
      figure:
        "idempotency() + ioredis vs Powertools + Redis and @node-idempotency/core + Redis, same Web server, c=32 req/s (server CPU µs/req)",
      measured: `idemfetch ${rps(redis).toFixed(0)} (${cpu(redis).toFixed(0)} µs); ${peer(powertools, "Powertools", (i) => `${rps(i).toFixed(0)} (${cpu(i).toFixed(0)} µs)`)}; ${peer(nodeIdem, "@node-idempotency", (i) => `${rps(i).toFixed(0)} (${cpu(i).toFixed(0)} µs)`)}`,
      target: "ahead of both",
      met: peers.length === 2 && peers.every((i) => rps(redis) > rps(i)),
    },
    {
      issue: "15",
      figure: "the same three: added miss median, 0 ms handler (sequential, interleaved)",
      measured: `idemfetch ${plus(added(redis))}; ${peer(powertools, "Powertools", (i) => plus(added(i)))}; ${peer(nodeIdem, "@node-idempotency", (i) => plus(added(i)))}`,
      target: "ahead of both",
      met: peers.length === 2 && peers.every((i) => added(redis) < added(i)),
    },
    {
      issue: "15",
      figure: "added miss median, memory, Node faces, 0 ms handler (face ÷ its plain framework, interleaved)",
      measured: nodeFaces.map((x) => `${x.k} ${plus(x.added)} (${ms(x.missW)} vs ${ms(x.missP)})`).join("; "),
      target: "≤ +0.05 ms",
      met: nodeFaces.every((x) => x.added <= 0.05),
    },
    {
      issue: "15 (10: ≤ 0.35 ms)",
      figure: "added miss median, ioredis (idempotency()); Redis round trips per miss / replay",
      measured: `${plus(added(redis))} (${ms(med(s.miss0[redis]))} vs ${ms(med(s.miss0[plain]))}); ${cmds ? `${cmds.miss.roundTrips.toFixed(2)} / ${cmds.replay.roundTrips.toFixed(2)}` : "–"}`,
      target: "≤ +0.30 ms; 2 / 1",
      met: added(redis) <= 0.3 && !!cmds && cmds.miss.roundTrips <= 2 && cmds.replay.roundTrips <= 1,
    },
    {
      issue: "15, 10",
      figure: "client burst: cost per extra caller (1,000 callers, 0 ms upstream)",
      measured: `${us(perCaller)} (${ms(zeroBurst.wallMs)} vs one call ${ms(zeroBurst.oneCallMs)}; ${zeroBurst.upstreamCalls} upstream call)`,
      target: "≤ 10 µs",
      met: perCaller <= 0.01 && zeroBurst.upstreamCalls === 1,
    },
    {
      issue: "15, 10",
      figure: "client replay, memory store, median",
      measured: us(replay),
      target: "≤ 50 µs",
      met: replay <= 0.05,
    },
    {
      issue: "15 (10: ≤ 1.05×)",
      figure: "client miss, 0 ms loopback: idemfetch (memory) ÷ raw fetch, median",
      measured: `${ms(med(c.miss0[idem]))} vs ${ms(med(c.miss0[rawFetch]))} = ${times(missRatio)}`,
      target: "≤ 1.10×",
      met: missRatio <= 1.1,
    },
    {
      issue: "15",
      figure: `burst of ${r.config.dupBurst.size} duplicates, ${r.config.dupBurst.workMs} ms handler, on every face: executions, callers with the same 200`,
      measured: bursts.map((b) => `${b.name} ${burstText(b.burst)}`).join("; "),
      target: `1 execution, ${r.config.dupBurst.size} same 200, each`,
      met: bursts.every((b) => b.burst?.correct === true),
    },
    // ---- issue 10's targets that issue 15 did not restate ----
    {
      issue: "10",
      figure: "added miss median, memory, idempotency() (Web face), 0 ms handler",
      measured: `${plus(added(mem))} (${ms(med(s.miss0[mem]))} vs ${ms(med(s.miss0[plain]))})`,
      target: "≤ +0.10 ms",
      met: added(mem) <= 0.1,
    },
    {
      issue: "10",
      figure: "server throughput, ioredis, c=32 distinct keys, 0 ms handler ÷ plain (harness; autocannon)",
      measured: `${rps(redis).toFixed(0)} vs ${rps(plain).toFixed(0)} req/s = ${times(rps(redis) / rps(plain))}; autocannon ${cannon(redis).toFixed(0)} vs ${cannon(plain).toFixed(0)} = ${times(cannon(redis) / cannon(plain))}`,
      target: "≥ 0.5×",
      met: rps(redis) / rps(plain) >= 0.5,
    },
    {
      issue: "10",
      figure: "server replay (memory store) vs the plain handler, median",
      measured: `${ms(med(s.replay[mem]))} vs ${ms(med(s.replay[plain]))} (ioredis ${ms(med(s.replay[redis]))})`,
      target: "≤ plain",
      met: med(s.replay[mem]) <= med(s.replay[plain]),
    },
    {
      issue: "10",
      figure: `client burst: 1,000 callers of a ${r.config.longWorkMs} ms call ÷ one call`,
      measured: `${ms(longBurst.wallMs)} vs ${ms(longBurst.oneCallMs)} = ${times(longBurst.wallMs / longBurst.oneCallMs)}; ${longBurst.upstreamCalls} upstream call`,
      target: "≤ 1.05×, 1 call",
      met: longBurst.wallMs / longBurst.oneCallMs <= 1.05 && longBurst.upstreamCalls === 1,
    },
    {
      issue: "10",
      figure: "client replay ÷ loopback fetch; ÷ axios-cache-interceptor's replay (medians)",
      measured: `${times(loopback / replay)} faster than ${ms(loopback)}; ${times(replay / axiosReplay)} of ${us(axiosReplay)}`,
      target: "≥ 20× faster; ≤ 0.5×",
      met: loopback / replay >= 20 && replay / axiosReplay <= 0.5,
    },
    {
      issue: "10",
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
        ["figure", `measured (Node ${node})`, "target", "met", "issue"],
        rows.map((t) => [t.figure, t.measured, t.target, yes(t.met), t.issue]),
      ) + note
    );
  }
  return table(
    ["figure", `measured (Node ${node})`, "met", `measured (Node ${other.node})`, "met", "target", "issue"],
    rows.map((t, i) => [
      t.figure,
      t.measured,
      yes(t.met),
      other.rows[i]?.measured ?? "–",
      yes(other.rows[i]?.met),
      t.target,
      t.issue,
    ]),
  );
}
