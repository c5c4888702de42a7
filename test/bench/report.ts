// The bench's output: markdown tables (every figure against the raw baseline and the best peer) and an SVG chart.
import type { Cannon } from "./autocannon.ts";
import type { BundleSize } from "./bundle.ts";
import type { Burst, Latency } from "./client-workloads.ts";
import type { FaceContender } from "./face-host.ts";
import { FACE_NAMES, type FaceThroughput, type Framework, summary } from "./face-workloads.ts";
import { kb, median, ms, p99, table, times } from "./lib.ts";
import type { MemoryResult } from "./memory-host.ts";
import type {
  CommandCount,
  CrossProcess,
  ServerBurst,
  ServerLatency,
  ServerSpec,
  Throughput,
} from "./server-workloads.ts";
import { renderTargets, type Target, targets } from "./targets.ts";

export interface Results {
  config: {
    quick: boolean;
    workMs: number;
    longWorkMs: number;
    missCalls: number;
    missCallsWithWork: number;
    replayCalls: number;
    commandCalls: number;
    throughputSeconds: number;
    throughputWorkMs: number;
    concurrency: number[];
    crossProcesses: number;
    crossRounds: number;
    crossWorkMs: number;
    dupBurst: { size: number; workMs: number };
    faceRounds: number;
    faceSeconds: number;
    faceMissCalls: number;
  };
  environment: { node: string; cpus: string; loadBefore: number; loadAfter: number; wallSeconds: number };
  bundles: BundleSize[];
  client: {
    contenders: { name: string; store: string; baseline: "fetch" | "axios" | null; peer: boolean }[];
    miss0: Latency[];
    missW: Latency[];
    replay: Latency[];
    bursts: Burst[][];
    burstScaling: Burst[];
    commands: { miss: CommandCount; replay: CommandCount };
  };
  /** Peers' packages that are not installed, so left out of every table. */
  missingPeers: string[];
  server: {
    specs: ServerSpec[];
    /** Issue 15's burst of 100 duplicates, 50 ms handler, per contender. */
    dupBursts: ServerBurst[];
    miss0: ServerLatency[];
    missW: ServerLatency[];
    replay: ServerLatency[];
    bursts: ServerBurst[][];
    probes: ({ status: number; correct: boolean } | null)[];
    commands: ({ miss: CommandCount; replay: CommandCount } | null)[];
    throughput: Throughput[][];
    /** autocannon at c=32 per server, beside the harness. */
    cannon: Cannon[];
  };
  /** Issue 15: each framework face beside its plain framework, in its own process. */
  faces: {
    specs: { id: FaceContender; framework: Framework; wrapped: boolean }[];
    miss0: ServerLatency[];
    /** The burst of 100 duplicates (50 ms handler) on each idemfetch face; null for a plain one. */
    bursts: (ServerBurst | null)[];
    throughput: FaceThroughput[];
  };
  /** Markdown summary of a --cpu-prof of idempotency() (memory) at c=32. */
  profile: string;
  /** The targets measured again under Node 22, or why not. */
  node22?: { node: string; rows: Target[] } | string;
  cross: CrossProcess[];
  memory: { bounded: MemoryResult; unbounded: MemoryResult; engine: MemoryResult };
}

const yes = (ok: boolean): string => (ok ? "yes" : "**no**");
const label = (name: string, store: string): string => (store === "–" ? name : `${name} (${store})`);
const mib = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MiB`;

/** Index of the best peer by `value` among `peers` indices (lower is better unless `higher`). */
function best(indices: number[], value: (i: number) => number, higher = false): number | undefined {
  let found: number | undefined;
  for (const i of indices) {
    const v = value(i);
    if (!Number.isFinite(v)) continue;
    if (found === undefined || (higher ? v > value(found) : v < value(found))) found = i;
  }
  return found;
}

const ratio = (a: number, b: number | undefined): string => (b === undefined ? "–" : times(a / b));

/** Issue 15's faces: each beside its plain framework (req/s, CPU, added miss) and the burst of duplicates on every contender. */
function renderFaces(r: Results): string {
  const f = r.faces;
  const s = r.server;
  const out: string[] = [];
  out.push(
    `## Server faces (issue 15): each in its own process beside its plain framework, memory store, trivial JSON handler`,
  );
  out.push("");
  out.push(
    `req/s at c=32 with fresh keys: ${r.config.faceRounds} rounds of ${r.config.faceSeconds} s per contender after a warm-up, ` +
      "the contenders in turn from a rotating start; the ratio is taken per round against the plain framework of the same round, " +
      `then the median. CPU is the server process's \`process.cpuUsage()\` per request. Miss latency: ${r.config.faceMissCalls} ` +
      "sequential requests each, interleaved across contenders.",
  );
  out.push("");
  const plainOf = (i: number) => f.specs.findIndex((k) => k.framework === f.specs[i]?.framework && !k.wrapped);
  out.push(
    table(
      [
        "contender",
        "req/s",
        "÷ plain",
        "CPU µs/req",
        "miss median",
        "added (median)",
        `burst of ${r.config.dupBurst.size}, ${r.config.dupBurst.workMs} ms`,
      ],
      f.specs.map((k, i) => {
        const t = summary(f.throughput[i] as FaceThroughput);
        const names = FACE_NAMES[k.framework];
        const b = f.bursts[i];
        const m = median((f.miss0[i] as ServerLatency).samples);
        return [
          k.wrapped ? `${names.face} (memory)` : names.plain,
          t.rps.toFixed(0),
          k.wrapped ? times(t.ratio) : "baseline",
          t.cpu.toFixed(0),
          ms(m),
          k.wrapped ? `+${ms(m - median((f.miss0[plainOf(i)] as ServerLatency).samples))}` : "baseline",
          b ? `${b.executions} execution; ${b.outcomes}; ${b.same200} same 200` : "–",
        ];
      }),
    ),
  );
  out.push("");
  out.push(
    `Burst of ${r.config.dupBurst.size} duplicates (same key and body, sockets opened first), ${r.config.dupBurst.workMs} ms handler, on the Web-handler contenders and peers:`,
  );
  out.push("");
  out.push(
    table(
      ["contender", "executions", "callers got", "same 200", "wall", "correct"],
      s.specs.map((k, i) => {
        const b = s.dupBursts[i] as ServerBurst;
        return [
          label(k.name, k.store),
          String(b.executions),
          b.outcomes,
          String(b.same200),
          ms(b.wallMs),
          k.baseline === null ? "(baseline)" : yes(b.correct),
        ];
      }),
    ),
  );
  return out.join("\n");
}

export function renderReport(r: Results): string {
  const c = r.client;
  const s = r.server;
  const out: string[] = [];
  const cName = (i: number) => {
    const k = c.contenders[i] as Results["client"]["contenders"][number];
    return label(k.name, k.store);
  };
  const sName = (i: number) => {
    const k = s.specs[i] as ServerSpec;
    return label(k.name, k.store);
  };
  const cIndex = (name: string, store?: string) =>
    c.contenders.findIndex((k) => k.name === name && (store === undefined || k.store === store));
  const sIndex = (id: string) => s.specs.findIndex((k) => k.id === id);
  const cBase = (i: number): number => {
    const b = c.contenders[i]?.baseline;
    return b === null ? i : cIndex(b === "axios" ? "raw axios" : "raw fetch");
  };
  const sBase = (i: number): number => {
    const b = s.specs[i]?.baseline;
    return b === null || b === undefined ? i : sIndex(b);
  };
  const cPeers = c.contenders.flatMap((k, i) => (k.peer ? [i] : []));
  const sPeers = s.specs.flatMap((k, i) => (k.peer ? [i] : []));
  const sRedisPeers = sPeers.filter((i) => s.specs[i]?.store === "redis");
  const med = (l: Latency | ServerLatency | undefined) => (l ? median(l.samples) : Number.NaN);

  const rawFetch = cIndex("raw fetch");
  const idemMem = cIndex("idemfetch", "memory");
  const sPlain = sIndex("plain");
  const sMem = sIndex("idemfetch-memory");
  const sRedis = sIndex("idemfetch-redis");

  // ---------------- headline ----------------
  out.push(`# idemfetch benchmark${r.config.quick ? " (quick run)" : ""}`);
  out.push("");
  out.push(
    `One run of \`npm run bench${r.config.quick ? " -- --quick" : ""}\`: Node ${r.environment.node}, ${r.environment.cpus}, ` +
      `load average ${r.environment.loadBefore.toFixed(2)} at the start and ${r.environment.loadAfter.toFixed(2)} at the end ` +
      `(other processes share this machine; every latency series is interleaved across contenders so that noise falls on all alike), ` +
      `${r.environment.wallSeconds.toFixed(0)} s wall time. Upstream: the counting HTTP server of \`test/fixtures/upstream.ts\` ` +
      `in its own process on 127.0.0.1 (client side) or the same handler inside each contender's server process (server side); ` +
      `simulated work ${r.config.workMs} ms where a row says so, 0 ms ("loopback") otherwise. ` +
      `Redis: a private \`redis-server\` started by the bench. "× raw" divides by the raw baseline (raw fetch, raw axios, ` +
      `or the plain handler on the same HTTP framework); "× best peer" divides by the best correct peer on that row's workload.`,
  );
  out.push("");

  // ---------------- targets ----------------
  const missRatioW = med(c.missW[idemMem]) / med(c.missW[rawFetch]);
  const replaySpeedup = med(c.replay[rawFetch]) / med(c.replay[idemMem]);
  const burst1000 = c.bursts[idemMem]?.find((b) => b.size === 1000) as Burst;
  const sMiss0 = med(s.miss0[sMem]) / med(s.miss0[sPlain]);
  const sMissW = med(s.missW[sMem]) / med(s.missW[sPlain]);
  const sReplay = med(s.replay[sPlain]) / med(s.replay[sMem]);
  const sBurst = s.bursts[sRedis]?.find((b) => b.size === 1000) as ServerBurst;
  const added = (i: number, l: ServerLatency[]) => med(l[i]) - med(l[sBase(i)]);
  const bestRedisPeer0 = best(sRedisPeers, (i) => added(i, s.miss0));
  const bestRedisPeerW = best(sRedisPeers, (i) => added(i, s.missW));
  const overhead0 =
    added(sRedis, s.miss0) / (bestRedisPeer0 === undefined ? Number.NaN : added(bestRedisPeer0, s.miss0));
  const overheadW =
    added(sRedis, s.missW) / (bestRedisPeerW === undefined ? Number.NaN : added(bestRedisPeerW, s.missW));

  out.push("## Targets (issue 15, and issue 10's that it did not restate)");
  out.push("");
  out.push(
    "Ratios measured side by side in this run, not timed tests. One row per figure: where issues 10 and 15 both " +
      "set a target for a figure, the row carries issue 15's and the issue column names issue 10's.",
  );
  if (r.missingPeers.length > 0) out.push("", `Not installed, so left out: ${r.missingPeers.join(", ")}.`);
  out.push("");
  out.push(renderTargets(r.environment.node, targets(r), r.node22));
  out.push("");
  out.push(renderFaces(r));
  out.push("");
  out.push("## Earlier targets (issues 2 and 5; figures the table above already has are left out)");
  out.push("");
  out.push(
    table(
      ["figure", "measured", "target", "met"],
      [
        [
          `client miss, ${r.config.workMs} ms work: idemfetch (memory) ÷ raw fetch, median`,
          `${ms(med(c.missW[idemMem]))} vs ${ms(med(c.missW[rawFetch]))} = ${times(missRatioW)}`,
          "≤ 1.05×",
          yes(missRatioW <= 1.05),
        ],
        [
          "client replay vs a raw loopback fetch, median",
          `${ms(med(c.replay[idemMem]))} vs ${ms(med(c.replay[rawFetch]))}: ${times(replaySpeedup)} faster`,
          "≥ 10× faster",
          yes(replaySpeedup >= 10),
        ],
        [
          `client burst, 1,000 identical concurrent calls (${r.config.workMs} ms work)`,
          `${burst1000.upstreamCalls} upstream call; ${ms(burst1000.wallMs)} vs one call ${ms(burst1000.oneCallMs)} = ${times(burst1000.wallMs / burst1000.oneCallMs)}`,
          "1 call, ≤ 1.3×",
          yes(burst1000.upstreamCalls === 1 && burst1000.wallMs / burst1000.oneCallMs <= 1.3),
        ],
        [
          "server miss, 0 ms: idempotency() (memory) ÷ plain handler, median",
          `${ms(med(s.miss0[sMem]))} vs ${ms(med(s.miss0[sPlain]))} = ${times(sMiss0)}`,
          "≤ 1.05×",
          yes(sMiss0 <= 1.05),
        ],
        [
          `server miss, ${r.config.workMs} ms work: idempotency() (memory) ÷ plain handler, median`,
          `${ms(med(s.missW[sMem]))} vs ${ms(med(s.missW[sPlain]))} = ${times(sMissW)}`,
          "≤ 1.05×",
          yes(sMissW <= 1.05),
        ],
        [
          "server replay vs a plain 0 ms request, median",
          `${ms(med(s.replay[sMem]))} vs ${ms(med(s.replay[sPlain]))}: ${times(sReplay)} faster`,
          "≥ 10× faster",
          yes(sReplay >= 10),
        ],
        [
          `server burst (redis), 1,000 identical concurrent requests (${r.config.workMs} ms work)`,
          `${sBurst.executions} execution; ${ms(sBurst.wallMs)} vs one request ${ms(sBurst.oneCallMs)} = ${times(sBurst.wallMs / sBurst.oneCallMs)}`,
          "1 execution, ≤ 1.3×",
          yes(sBurst.executions === 1 && sBurst.wallMs / sBurst.oneCallMs <= 1.3),
        ],
        [
          "added latency per miss on the same Redis, 0 ms: idemfetch ÷ best peer",
          bestRedisPeer0 === undefined
            ? "–"
            : `${ms(added(sRedis, s.miss0))} vs ${ms(added(bestRedisPeer0, s.miss0))} (${sName(bestRedisPeer0)}) = ${times(overhead0)}`,
          "≤ 0.5×",
          yes(overhead0 <= 0.5),
        ],
        [
          `added latency per miss on the same Redis, ${r.config.workMs} ms work: idemfetch ÷ best peer`,
          bestRedisPeerW === undefined
            ? "–"
            : `${ms(added(sRedis, s.missW))} vs ${ms(added(bestRedisPeerW, s.missW))} (${sName(bestRedisPeerW)}) = ${times(overheadW)}`,
          "≤ 0.5×",
          yes(overheadW <= 0.5),
        ],
      ],
    ),
  );
  out.push("");

  // ---------------- W1 ----------------
  const latencyTable = (
    rows: number[],
    name: (i: number) => string,
    lat: (Latency | ServerLatency)[],
    base: (i: number) => number,
    peers: number[],
    executedLabel: (i: number) => string,
  ) => {
    const healthy = peers.filter((i) => (lat[i]?.errors ?? 0) <= 0.01 * (lat[i]?.samples.length ?? 0));
    const bestPeer = best(healthy, (i) => med(lat[i]));
    return table(
      ["contender", "median", "p99", "added (median)", "× raw", "× best peer", "executed", "non-200"],
      rows.map((i) => {
        const l = lat[i] as Latency;
        const m = median(l.samples);
        const isBase = base(i) === i;
        return [
          name(i),
          ms(m),
          ms(p99(l.samples)),
          isBase ? "baseline" : ms(m - med(lat[base(i)])),
          times(m / med(lat[base(i)])),
          ratio(m, bestPeer === undefined ? undefined : med(lat[bestPeer])),
          executedLabel(i),
          String(l.errors),
        ];
      }),
    );
  };
  const cRows = c.contenders.map((_, i) => i);
  const sRows = s.specs.map((_, i) => i);
  const cExec = (l: Latency[]) => (i: number) =>
    `${l[i] ? l[i].samples.length - l[i].replayed : 0} of ${l[i]?.samples.length}`;
  const sExec = (l: ServerLatency[]) => (i: number) => `${l[i]?.executions} of ${l[i]?.samples.length}`;

  out.push("## W1 miss path: sequential calls, a new key each");
  out.push("");
  out.push(`Client side, 0 ms loopback (${r.config.missCalls} calls each):`);
  out.push("");
  out.push(latencyTable(cRows, cName, c.miss0, cBase, cPeers, cExec(c.miss0)));
  out.push("");
  out.push(`Client side, ${r.config.workMs} ms upstream work (${r.config.missCallsWithWork} calls each):`);
  out.push("");
  out.push(latencyTable(cRows, cName, c.missW, cBase, cPeers, cExec(c.missW)));
  out.push("");
  out.push(`Server side, 0 ms handler (${r.config.missCalls} requests each, over HTTP keep-alive):`);
  out.push("");
  out.push(latencyTable(sRows, sName, s.miss0, sBase, sPeers, sExec(s.miss0)));
  out.push("");
  out.push(`Server side, ${r.config.workMs} ms handler (${r.config.missCallsWithWork} requests each):`);
  out.push("");
  out.push(latencyTable(sRows, sName, s.missW, sBase, sPeers, sExec(s.missW)));
  out.push("");

  // ---------------- W2 ----------------
  const replayTable = (
    rows: number[],
    name: (i: number) => string,
    lat: (Latency | ServerLatency)[],
    base: (i: number) => number,
    peers: number[],
    executed: (i: number) => number,
  ) => {
    // Only a peer that answered (nearly) everything with a 200 and without executing counts as a replaying peer.
    const replaying = peers.filter((i) => executed(i) + (lat[i]?.errors ?? 0) <= 0.01 * (lat[i]?.samples.length ?? 0));
    const bestPeer = best(replaying, (i) => med(lat[i]));
    return table(
      ["contender", "median", "p99", "executed again", "non-200", "× raw (speed-up)", "× best peer"],
      rows.map((i) => {
        const l = lat[i] as Latency;
        const m = median(l.samples);
        const isBase = base(i) === i;
        return [
          name(i),
          ms(m),
          ms(p99(l.samples)),
          `${executed(i)} of ${l.samples.length}`,
          String(l.errors),
          isBase ? "baseline" : `${times(m / med(lat[base(i)]))} (${times(med(lat[base(i)]) / m)} faster)`,
          ratio(m, bestPeer === undefined ? undefined : med(lat[bestPeer])),
        ];
      }),
    );
  };
  out.push(
    `## W2 replay path: the last ${r.config.replayCalls} W1 (0 ms) keys again (no more than every store keeps by default: axios-cache-interceptor's memory storage holds 1,024)`,
  );
  out.push("");
  out.push("Client side (raw fetch and raw axios send the request again: they are the loopback baseline):");
  out.push("");
  out.push(
    replayTable(cRows, cName, c.replay, cBase, cPeers, (i) =>
      c.replay[i] ? c.replay[i].samples.length - c.replay[i].replayed : 0,
    ),
  );
  out.push("");
  out.push("Server side:");
  out.push("");
  out.push(replayTable(sRows, sName, s.replay, sBase, sPeers, (i) => s.replay[i]?.executions ?? 0));
  out.push("");

  // ---------------- W3 ----------------
  const burstTable = (
    rows: number[],
    name: (i: number) => string,
    bursts: (Burst | ServerBurst)[][],
    base: (i: number) => number,
    peers: number[],
    idempotent: (i: number) => boolean,
  ) => {
    const lines: string[][] = [];
    for (const size of [100, 1000]) {
      const at = (i: number) => bursts[i]?.find((b) => b.size === size);
      const correctPeers = peers.filter((i) => at(i)?.correct);
      const bestPeer = best(correctPeers, (i) => at(i)?.wallMs ?? Number.NaN);
      for (const i of rows) {
        const b = at(i);
        if (!b) continue;
        const executions = "upstreamCalls" in b ? b.upstreamCalls : b.executions;
        lines.push([
          name(i),
          String(size),
          String(executions),
          ms(b.wallMs),
          `${times(b.wallMs / b.oneCallMs)} (one: ${ms(b.oneCallMs)})`,
          base(i) === i ? "baseline" : times(b.wallMs / (at(base(i))?.wallMs ?? Number.NaN)),
          ratio(b.wallMs, bestPeer === undefined ? undefined : at(bestPeer)?.wallMs),
          b.outcomes,
          idempotent(i) ? yes(b.correct) : "(baseline)",
        ]);
      }
    }
    return table(
      ["contender", "callers", "executed", "wall", "÷ one call", "× raw", "× best peer", "callers got", "correct"],
      lines,
    );
  };
  out.push(`## W3 burst: identical concurrent calls (same key, same body), ${r.config.workMs} ms work`);
  out.push("");
  out.push(
    '"correct" = exactly one execution and every caller got the response (no error, no 409). "× best peer" compares with the fastest correct peer.',
  );
  out.push("");
  out.push("Client side:");
  out.push("");
  out.push(burstTable(cRows, cName, c.bursts, cBase, cPeers, (i) => c.contenders[i]?.baseline !== null));
  out.push("");
  out.push("Server side (HTTP, sockets opened before the burst):");
  out.push("");
  out.push(burstTable(sRows, sName, s.bursts, sBase, sPeers, (i) => s.specs[i]?.baseline !== null));
  out.push("");
  out.push("idemfetch (memory) client, 1,000 callers, by length of the upstream call:");
  out.push("");
  out.push(
    table(
      ["upstream work", "one call", "1,000 callers", "÷ one call", "cost per extra caller", "upstream calls"],
      c.burstScaling.map((b) => [
        `${b.workMs} ms`,
        ms(b.oneCallMs),
        ms(b.wallMs),
        times(b.wallMs / b.oneCallMs),
        ms((b.wallMs - b.oneCallMs) / (b.size - 1)),
        String(b.upstreamCalls),
      ]),
    ),
  );
  out.push("");

  // ---------------- W4 ----------------
  out.push(
    `## W4 cross-process: ${r.config.crossProcesses} server processes on one Redis, the same key to each at once, ${r.config.crossRounds} rounds, ${r.config.crossWorkMs}-${r.config.crossWorkMs + 99} ms handler`,
  );
  out.push("");
  const xPeers = r.cross.flatMap((x, i) => (x.spec.peer && x.correct ? [i] : []));
  const xBest = best(xPeers, (i) => median(r.cross[i]?.wakeMs ?? []));
  out.push(
    table(
      [
        "contender",
        "executions per round",
        "callers got",
        "wake-up after the first answer: median",
        "p99",
        "first round (max)",
        "× best peer",
        "correct",
      ],
      r.cross.map((x) => [
        label(x.spec.name, x.spec.store),
        [...new Set(x.executionsPerRound)].sort().join(" or "),
        x.outcomes,
        x.wakeMs.length ? ms(median(x.wakeMs)) : "–",
        x.wakeMs.length ? ms(p99(x.wakeMs)) : "–",
        x.firstWakeMs.length ? ms(Math.max(...x.firstWakeMs)) : "–",
        x.wakeMs.length
          ? ratio(median(x.wakeMs), xBest === undefined ? undefined : median(r.cross[xBest]?.wakeMs ?? []))
          : "–",
        yes(x.correct),
      ]),
    ),
  );
  out.push("");

  // ---------------- W5 ----------------
  out.push(
    `## W5 throughput: server requests/s, distinct keys, ${r.config.throughputWorkMs} ms handler, ${r.config.throughputSeconds} s per run`,
  );
  out.push("");
  const tp = (i: number, k: number) => s.throughput[i]?.[k]?.rps ?? Number.NaN;
  const tpBest = [0, 1].map((k) => best(sPeers, (i) => tp(i, k), true));
  out.push(
    table(
      [
        "contender",
        `c=${r.config.concurrency[0]} req/s`,
        "× raw",
        "× best peer",
        `c=${r.config.concurrency[1]} req/s`,
        "× raw",
        "× best peer",
        `c=${r.config.concurrency[1]} CPU µs/req`,
        "autocannon c=32 req/s",
        "× raw",
        "non-200",
      ],
      sRows.map((i) => {
        const cells = [sName(i)];
        for (const k of [0, 1]) {
          const b = tpBest[k];
          cells.push(
            tp(i, k).toFixed(0),
            sBase(i) === i ? "baseline" : times(tp(i, k) / tp(sBase(i), k)),
            ratio(tp(i, k), b === undefined ? undefined : tp(b, k)),
          );
        }
        const ac = s.cannon[i];
        cells.push(
          (s.throughput[i]?.[1]?.cpuUs ?? Number.NaN).toFixed(0),
          ac ? ac.rps.toFixed(0) : "–",
          sBase(i) === i ? "baseline" : ac ? times(ac.rps / (s.cannon[sBase(i)]?.rps ?? Number.NaN)) : "–",
        );
        cells.push(
          String((s.throughput[i] ?? []).reduce((sum, t) => sum + t.errors, 0) + (ac ? ac.non2xx + ac.errors : 0)),
        );
        return cells;
      }),
    ),
  );
  out.push("");

  // ---------------- commands ----------------
  out.push(`## Redis commands per request (INFO commandstats, ${r.config.commandCalls} requests each)`);
  out.push("");
  const cmdRows: { name: string; cmds: { miss: CommandCount; replay: CommandCount }; peer: boolean }[] = [];
  cmdRows.push({ name: "idemfetch client (redis)", cmds: c.commands, peer: false });
  for (const i of sRows) {
    const cmds = s.commands[i];
    if (cmds) cmdRows.push({ name: sName(i), cmds, peer: !!s.specs[i]?.peer });
  }
  const bestMiss = best(
    cmdRows.flatMap((row, i) => (row.peer ? [i] : [])),
    (i) => cmdRows[i]?.cmds.miss.roundTrips ?? Number.NaN,
  );
  const bestReplay = best(
    cmdRows.flatMap((row, i) => (row.peer ? [i] : [])),
    (i) => cmdRows[i]?.cmds.replay.roundTrips ?? Number.NaN,
  );
  out.push(
    table(
      [
        "contender",
        "miss: round trips",
        "executed (incl. in Lua)",
        "× best peer",
        "replay: round trips",
        "executed",
        "× best peer",
        "miss breakdown",
        "replay breakdown",
      ],
      cmdRows.map((row) => [
        row.name,
        row.cmds.miss.roundTrips.toFixed(2),
        row.cmds.miss.executed.toFixed(2),
        ratio(row.cmds.miss.roundTrips, bestMiss === undefined ? undefined : cmdRows[bestMiss]?.cmds.miss.roundTrips),
        row.cmds.replay.roundTrips.toFixed(2),
        row.cmds.replay.executed.toFixed(2),
        ratio(
          row.cmds.replay.roundTrips,
          bestReplay === undefined ? undefined : cmdRows[bestReplay]?.cmds.replay.roundTrips,
        ),
        row.cmds.miss.breakdown,
        row.cmds.replay.breakdown,
      ]),
    ),
  );
  out.push("");

  // ---------------- correctness probe ----------------
  out.push("## Key reuse: the same key with another body, after the first request completed");
  out.push("");
  out.push(
    table(
      ["contender", "second request answered", "refused (4xx)"],
      sRows.flatMap((i) => {
        const p = s.probes[i];
        return p ? [[sName(i), String(p.status), yes(p.correct)]] : [];
      }),
    ),
  );
  out.push("");

  // ---------------- memory ----------------
  out.push("## Memory store growth (heap after GC, its own process)");
  out.push("");
  const m = r.memory;
  const grow = (x: MemoryResult) => x.heapAfterBytes - x.heapBeforeBytes;
  out.push(
    table(
      ["what", "distinct keys", "maxEntries", "heap growth", "per key kept", "time"],
      [
        ["memoryStore acquire + commit", m.bounded, "10,000 (default)"] as const,
        ["memoryStore acquire + commit", m.unbounded, "unbounded"] as const,
        ["createIdempotentFetch calls (engine + default store)", m.engine, "10,000 (default)"] as const,
      ].map(([what, x, max]) => [
        what,
        x.keys.toLocaleString("en"),
        max,
        mib(grow(x)),
        `${(grow(x) / Math.min(x.keys, x.maxEntries)).toFixed(0)} B`,
        `${(x.ms / 1000).toFixed(1)} s (${((x.ms * 1000) / x.keys).toFixed(1)} µs/key)`,
      ]),
    ),
  );
  out.push("");

  // ---------------- bundles ----------------
  out.push("## Bundle size (esbuild --bundle --minify --format=esm, gzip -9)");
  out.push("");
  const bPeers = r.bundles.filter((b) => b.name !== "idemfetch");
  const bBest = bPeers.reduce((a, b) => (b.gzipBytes < a.gzipBytes ? b : a));
  out.push(
    table(
      ["package", "entry", "min", "min+gzip", "× best peer"],
      r.bundles.map((b) => [
        b.name,
        `\`${b.entry}\`${b.external.length ? ` (external: ${b.external.join(", ")})` : ""}`,
        kb(b.minBytes),
        kb(b.gzipBytes),
        times(b.gzipBytes / bBest.gzipBytes),
      ]),
    ),
  );
  out.push("");
  out.push(
    `Best peer: ${bBest.name}, which only joins identical calls while in flight (no keys, no replay, no store, no conflict detection).`,
  );
  return out.join("\n");
}

/** W1 (0 ms) and W2 medians and the 1,000-caller burst wall time, one panel each, bars per contender. */
export function renderChart(r: Results): string {
  const c = r.client;
  const s = r.server;
  const rows: { name: string; miss: number; replay: number; burst: number }[] = [
    ...c.contenders.map((k, i) => ({
      name: `client · ${label(k.name, k.store)}`,
      miss: median(c.miss0[i]?.samples ?? []),
      replay: median(c.replay[i]?.samples ?? []),
      burst: c.bursts[i]?.find((b) => b.size === 1000)?.wallMs ?? Number.NaN,
    })),
    ...s.specs.map((k, i) => ({
      name: `server · ${label(k.name, k.store)}`,
      miss: median(s.miss0[i]?.samples ?? []),
      replay: median(s.replay[i]?.samples ?? []),
      burst: s.bursts[i]?.find((b) => b.size === 1000)?.wallMs ?? Number.NaN,
    })),
  ];
  const panels = [
    { title: "W1 miss, 0 ms loopback: median latency", key: "miss" as const },
    { title: "W2 replay: median latency", key: "replay" as const },
    { title: `W3 burst, 1,000 identical calls, ${r.config.workMs} ms work: wall time`, key: "burst" as const },
  ];
  const labelWidth = 330;
  const barWidth = 260;
  const panelWidth = labelWidth + barWidth + 80;
  const rowHeight = 18;
  const top = 40;
  const height = top + rows.length * rowHeight + 30;
  const width = panelWidth * panels.length;
  const esc = (text: string) => text.replaceAll("&", "&amp;").replaceAll("<", "&lt;");
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<title>idemfetch benchmark: W1 miss, W2 replay and W3 burst latency per contender</title>`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
  ];
  panels.forEach((panel, p) => {
    const x0 = p * panelWidth;
    const values = rows.map((row) => row[panel.key]).filter(Number.isFinite);
    const max = Math.max(...values, 1e-9);
    parts.push(`<text x="${x0 + 8}" y="20" font-size="13" font-weight="bold">${esc(panel.title)}</text>`);
    rows.forEach((row, i) => {
      const y = top + i * rowHeight;
      const value = row[panel.key];
      const w = Number.isFinite(value) ? Math.max(1, (value / max) * barWidth) : 0;
      const mine = row.name.includes("idemfetch");
      const baseline = /raw|plain/.test(row.name);
      const fill = mine ? "#2563eb" : baseline ? "#9ca3af" : "#f59e0b";
      parts.push(`<text x="${x0 + labelWidth - 6}" y="${y + 12}" text-anchor="end">${esc(row.name)}</text>`);
      parts.push(
        `<rect x="${x0 + labelWidth}" y="${y + 2}" width="${w.toFixed(1)}" height="${rowHeight - 5}" fill="${fill}"/>`,
      );
      parts.push(`<text x="${x0 + labelWidth + w + 4}" y="${y + 12}">${esc(ms(value))}</text>`);
    });
  });
  parts.push(
    `<text x="8" y="${height - 10}" fill="#555">blue: idemfetch · orange: peers · grey: raw baselines (no idempotency). Lower is better.</text>`,
    "</svg>",
  );
  return `${parts.join("\n")}\n`;
}
