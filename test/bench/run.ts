// `npm run bench` (`-- --quick` for CI): idemfetch beside raw fetch and its peers, measured in one run.
// Starts its own redis-server on a free port, the upstream and one process per server contender; stops them all.
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { Redis } from "ioredis";
import { startPrivateRedis } from "../fixtures/processes.ts";
import { cannon } from "./autocannon.ts";
import { bundleSizes } from "./bundle.ts";
import { clientContenders } from "./client.ts";
import { clientBurst, clientLatency } from "./client-workloads.ts";
import { renderSummary, summarise } from "./cpu-profile.ts";
import { closeFaces, type FaceHost, FRAMEWORKS, faceThroughput, startFaces } from "./face-workloads.ts";
import { type Host, startHost } from "./lib.ts";
import type { MemoryResult } from "./memory-host.ts";
import { type Results, renderChart, renderReport } from "./report.ts";
import {
  closeServers,
  commandsPerRequest,
  crossProcess,
  keyReuseProbe,
  type ServerHost,
  type ServerSpec,
  serverBurst,
  serverLatency,
  startServers,
  type Throughput,
  throughput,
} from "./server-workloads.ts";
import { type Target, targets } from "./targets.ts";

const argv = process.argv.slice(2);
const quick = argv.includes("--quick");
const flag = (name: string, fallback: number): number => {
  const found = argv.find((a) => a.startsWith(`--${name}=`));
  return found ? Number(found.slice(name.length + 3)) : fallback;
};

/** Every size of the run in one place; --quick shrinks counts, never what is measured. */
const config = {
  quick,
  workMs: flag("work", 5),
  longWorkMs: 200,
  missCalls: flag("n", quick ? 150 : 2000),
  /** W2 replays the last W1 keys, as many as every store keeps by default (axios-cache-interceptor: 1,024). */
  replayCalls: Math.min(flag("n", quick ? 150 : 2000), 1000),
  missCallsWithWork: flag("n", quick ? 60 : 600),
  warmup: quick ? 20 : 100,
  burstSizes: [100, 1000],
  commandCalls: quick ? 30 : 200,
  throughputSeconds: quick ? 0.5 : 2,
  throughputRuns: quick ? 1 : 2,
  /** W5 is the loopback floor: a 0 ms handler, so the layer's own cost is all that differs. */
  throughputWorkMs: 0,
  concurrency: [1, 32],
  profileSeconds: quick ? 1 : 4,
  crossProcesses: quick ? 2 : 4,
  crossRounds: quick ? 4 : 20,
  crossWorkMs: 100,
  memoryStoreKeys: quick ? 100_000 : 1_000_000,
  memoryUnboundedKeys: quick ? 20_000 : 100_000,
  memoryEngineKeys: quick ? 5_000 : 50_000,
  /** Issue 15's burst: 100 duplicates of a 50 ms call, on every face and peer. */
  dupBurst: { size: 100, workMs: 50 },
  /** Issue 15's face ratios: interleaved rounds of `faceSeconds` each at c=32, after a warm-up round. */
  faceRounds: flag("rounds", quick ? 3 : 5),
  faceSeconds: quick ? 0.5 : 1,
  faceMissCalls: flag("n", quick ? 150 : 1000),
};

const tag = `b${Date.now().toString(36)}`;
const log = (message: string) =>
  process.stderr.write(`[bench +${((performance.now() - t0) / 1000).toFixed(1)}s] ${message}\n`);
const t0 = performance.now();

const SERVERS: ServerSpec[] = [
  { id: "plain", name: "plain handler", store: "–", baseline: null, peer: false },
  { id: "idemfetch-memory", name: "idemfetch idempotency()", store: "memory", baseline: "plain", peer: false },
  { id: "idemfetch-redis", name: "idemfetch idempotency()", store: "redis", baseline: "plain", peer: false },
  {
    id: "powertools-redis",
    name: "@aws-lambda-powertools/idempotency",
    store: "redis",
    baseline: "plain",
    peer: true,
  },
  { id: "node-idempotency-redis", name: "@node-idempotency/core", store: "redis", baseline: "plain", peer: true },
  { id: "express-plain", name: "express (plain)", store: "–", baseline: null, peer: false },
  { id: "express-idempotency", name: "express-idempotency", store: "memory", baseline: "express-plain", peer: true },
];

/** The peers' packages: a peer whose package is not installed is left out, and the tables say so. */
const PEER_PACKAGES: Partial<Record<ServerSpec["id"], string>> = {
  "powertools-redis": "@aws-lambda-powertools/idempotency",
  "node-idempotency-redis": "@node-idempotency/core",
  "node-idempotency-redis-wait": "@node-idempotency/core",
  "express-idempotency": "express-idempotency",
};
const installed = (spec: ServerSpec): boolean => {
  const pkg = PEER_PACKAGES[spec.id];
  if (pkg === undefined) return true;
  try {
    import.meta.resolve(pkg);
    return true;
  } catch {
    return false;
  }
};
const missingPeers = [...new Set(Object.values(PEER_PACKAGES))].filter((pkg) => {
  try {
    import.meta.resolve(pkg as string);
    return false;
  } catch {
    return true;
  }
}) as string[];

const CROSS: ServerSpec[] = [
  { id: "idemfetch-redis", name: "idemfetch (pub/sub)", store: "redis", baseline: null, peer: false },
  { id: "idemfetch-redis-poll", name: "idemfetch (polling)", store: "redis", baseline: null, peer: false },
  {
    id: "node-idempotency-redis-wait",
    name: "@node-idempotency/core (wait: true)",
    store: "redis",
    baseline: null,
    peer: true,
  },
  {
    id: "node-idempotency-redis",
    name: "@node-idempotency/core (default)",
    store: "redis",
    baseline: null,
    peer: true,
  },
  {
    id: "powertools-redis",
    name: "@aws-lambda-powertools/idempotency",
    store: "redis",
    baseline: null,
    peer: true,
  },
  { id: "express-idempotency", name: "express-idempotency", store: "memory", baseline: null, peer: true },
];

async function main(): Promise<Results> {
  log(`${quick ? "quick" : "full"} run; work ${config.workMs} ms; load average ${loadavg().map((l) => l.toFixed(2))}`);
  const loadBefore = loadavg()[0] as number;
  const redis = await startPrivateRedis();
  const admin = new Redis(redis.url);
  const hosts: Host[] = [];
  let servers: ServerHost[] = [];
  let faces: FaceHost[] = [];
  try {
    const upstream = await startHost<{ url: string }>("./upstream-host.ts");
    hosts.push(upstream);
    const bundles = await bundleSizes();
    log("bundles measured");

    // ---- client side: raw fetch / raw axios, idemfetch, fetch-dedupe, axios-cache-interceptor ----
    const clients = await clientContenders(redis.url);
    const u = upstream.ready.url;
    await clientLatency(clients, u, 0, config.warmup, (c, i) => `${tag}-cw-${c}-${i}`);
    const clientMiss0 = await clientLatency(clients, u, 0, config.missCalls, (c, i) => `${tag}-c${c}-${i}`);
    log("client W1 (0 ms) done");
    const replayFrom = config.missCalls - config.replayCalls;
    // The same calls as W1's last ones: same numbers, so the same keys and bodies.
    const clientReplay = await clientLatency(
      clients,
      u,
      0,
      config.replayCalls,
      (c, i) => `${tag}-c${c}-${i}`,
      replayFrom,
    );
    log("client W2 done");
    const clientMissW = await clientLatency(
      clients,
      u,
      config.workMs,
      config.missCallsWithWork,
      (c, i) => `${tag}-cw${c}-${i}`,
    );
    log(`client W1 (${config.workMs} ms) done`);
    const clientBursts = [];
    for (const [index, c] of clients.entries()) {
      const bursts = [];
      for (const size of config.burstSizes) {
        bursts.push(await clientBurst(c, upstream, size, config.workMs, `${tag}-cb${index}-${size}`));
      }
      clientBursts.push(bursts);
    }
    const idemfetch = clients[1];
    if (!idemfetch) throw new Error("no idemfetch contender");
    const burstScaling = [
      await clientBurst(idemfetch, upstream, 1000, 0, `${tag}-scale0`),
      await clientBurst(idemfetch, upstream, 1000, config.workMs, `${tag}-scalew`),
      await clientBurst(idemfetch, upstream, 1000, config.longWorkMs, `${tag}-scalel`),
    ];
    log("client W3 done");
    const redisClient = clients[2];
    if (!redisClient) throw new Error("no idemfetch redis contender");
    const clientCommands = {
      miss: await commandsPerRequest(admin, config.commandCalls, async () => {
        for (let i = 0; i < config.commandCalls; i++)
          await redisClient.call(`${u}/echo`, `${tag}-cc-${i}`, `{"i":${i}}`);
      }),
      replay: await commandsPerRequest(admin, config.commandCalls, async () => {
        for (let i = 0; i < config.commandCalls; i++)
          await redisClient.call(`${u}/echo`, `${tag}-cc-${i}`, `{"i":${i}}`);
      }),
    };
    for (const c of clients) await c.close();
    log("client side done");

    // ---- server side: every contender in its own process, the same handler, the same private Redis ----
    servers = await startServers(SERVERS.filter(installed), redis.url);
    log("servers up");
    await serverLatency(servers, 0, config.warmup, (s, i) => `${tag}-sw-${s}-${i}`);
    const serverMiss0 = await serverLatency(servers, 0, config.missCalls, (s, i) => `${tag}-s${s}-${i}`);
    log("server W1 (0 ms) done");
    const serverReplay = await serverLatency(servers, 0, config.replayCalls, (s, i) => `${tag}-s${s}-${i}`, replayFrom);
    log("server W2 done");
    const serverMissW = await serverLatency(
      servers,
      config.workMs,
      config.missCallsWithWork,
      (s, i) => `${tag}-sw${s}-${i}`,
    );
    log(`server W1 (${config.workMs} ms) done`);
    const serverBursts = [];
    for (const [index, s] of servers.entries()) {
      const bursts = [];
      for (const size of config.burstSizes) {
        bursts.push(await serverBurst(s, size, config.workMs, `${tag}-sb${index}-${size}`));
      }
      serverBursts.push(bursts);
    }
    const dupBursts = [];
    for (const [index, s] of servers.entries()) {
      dupBursts.push(await serverBurst(s, config.dupBurst.size, config.dupBurst.workMs, `${tag}-db${index}`));
    }
    log("server W3 done");
    const probes = [];
    for (const [index, s] of servers.entries()) {
      probes.push(s.spec.baseline === null ? null : await keyReuseProbe(s, `${tag}-p${index}`));
    }
    const serverCommands = [];
    for (const [index, s] of servers.entries()) {
      if (s.spec.store !== "redis") {
        serverCommands.push(null);
        continue;
      }
      const n = config.commandCalls;
      const send = (i: number) => s.client.send("/work?ms=0", `${tag}-sc${index}-${i}`, `{"i":${i}}`);
      serverCommands.push({
        miss: await commandsPerRequest(admin, n, async () => {
          for (let i = 0; i < n; i++) await send(i);
        }),
        replay: await commandsPerRequest(admin, n, async () => {
          for (let i = 0; i < n; i++) await send(i);
        }),
      });
    }
    log("commands counted");
    const serverThroughput = servers.map(() =>
      config.concurrency.map((concurrency) => ({ concurrency, rps: 0, errors: 0, cpuUs: 0 })),
    );
    for (let run = 0; run < config.throughputRuns; run++) {
      for (let j = 0; j < servers.length; j++) {
        const index = (j + run) % servers.length;
        const s = servers[index] as ServerHost;
        for (const [ci, concurrency] of config.concurrency.entries()) {
          const t = await throughput(
            s,
            concurrency,
            config.throughputSeconds,
            config.throughputWorkMs,
            `${tag}-t${index}-${run}-${concurrency}`,
          );
          const best = (serverThroughput[index] as Throughput[])[ci] as Throughput;
          if (t.rps > best.rps) Object.assign(best, { rps: t.rps, errors: t.errors, cpuUs: t.cpuUs });
        }
      }
    }
    // The same c=32 loopback load from autocannon, a load generator that is not ours.
    const serverCannon = [];
    for (const [index, s] of servers.entries()) {
      serverCannon.push(await cannon(s.host.ready.url, 32, config.throughputSeconds, `${tag}-ac${index}`));
    }
    log("server W5 done (harness and autocannon)");
    const servedSpecs = servers.map((h) => h.spec);
    await closeServers(servers);
    servers = [];

    // ---- issue 15: the framework faces (memory store) beside their plain frameworks ----
    faces = await startFaces(FRAMEWORKS);
    log("faces up");
    await serverLatency(faces, 0, config.warmup, (f, i) => `${tag}-fw-${f}-${i}`);
    const faceMiss0 = await serverLatency(faces, 0, config.faceMissCalls, (f, i) => `${tag}-f${f}-${i}`);
    const faceBursts = [];
    for (const [index, f] of faces.entries()) {
      faceBursts.push(
        f.wrapped ? await serverBurst(f, config.dupBurst.size, config.dupBurst.workMs, `${tag}-fb${index}`) : null,
      );
    }
    const faceTp = await faceThroughput(faces, {
      rounds: config.faceRounds,
      seconds: config.faceSeconds,
      concurrency: 32,
      tag: `${tag}-ft`,
    });
    const faceSpecs = faces.map((f) => ({ id: f.id, framework: f.framework, wrapped: f.wrapped }));
    await closeFaces(faces);
    faces = [];
    log("faces done");

    // ---- a CPU profile of idempotency() (memory store) under autocannon c=32 ----
    const profileDir = `${tmpdir()}/idemfetch-bench-profile-${tag}`;
    mkdirSync(profileDir, { recursive: true });
    const [profiled] = await startServers(
      [{ id: "idemfetch-memory", name: "idemfetch idempotency()", store: "memory", baseline: null, peer: false }],
      redis.url,
      () => ["--cpu-prof", `--cpu-prof-dir=${profileDir}`],
    );
    if (!profiled) throw new Error("no profiled server");
    const profiledLoad = await cannon(profiled.host.ready.url, 32, config.profileSeconds, `${tag}-prof`);
    await closeServers([profiled]);
    // The main thread's profile is the largest (tsx's loader thread writes one too).
    const profileFile = readdirSync(profileDir)
      .map((f) => `${profileDir}/${f}`)
      .sort((a, b) => statSync(b).size - statSync(a).size)[0] as string;
    const profile = renderSummary(
      `idempotency() (memory store), Node ${process.version}, autocannon c=32 for ${config.profileSeconds} s: ${profiledLoad.rps.toFixed(0)} req/s under --cpu-prof`,
      summarise(profileFile, 25),
    );
    log("profile taken");

    // ---- W4: K processes on one Redis ----
    const cross = [];
    for (const [index, spec] of CROSS.filter(installed).entries()) {
      cross.push(
        await crossProcess(
          spec,
          redis.url,
          config.crossProcesses,
          config.crossRounds,
          config.crossWorkMs,
          `${tag}-x${index}`,
        ),
      );
    }
    log("W4 done");

    // ---- memory growth on the memory store, in a process of its own with --expose-gc ----
    const memoryHost = await startHost("./memory-host.ts", {}, ["--expose-gc"]);
    hosts.push(memoryHost);
    const memory = {
      bounded: await memoryHost.call<MemoryResult>("store", { keys: config.memoryStoreKeys, maxEntries: 10_000 }),
      unbounded: await memoryHost.call<MemoryResult>("store", {
        keys: config.memoryUnboundedKeys,
        maxEntries: Number.MAX_SAFE_INTEGER,
      }),
      engine: await memoryHost.call<MemoryResult>("engine", { keys: config.memoryEngineKeys }),
    };
    log("memory measured");

    return {
      config,
      environment: {
        node: process.version,
        cpus: `${cpus().length} × ${cpus()[0]?.model ?? "?"}`,
        loadBefore,
        loadAfter: loadavg()[0] as number,
        wallSeconds: (performance.now() - t0) / 1000,
      },
      bundles,
      client: {
        contenders: clients.map((c) => ({ name: c.name, store: c.store, baseline: c.baseline, peer: c.peer })),
        miss0: clientMiss0,
        missW: clientMissW,
        replay: clientReplay,
        bursts: clientBursts,
        burstScaling,
        commands: clientCommands,
      },
      missingPeers,
      server: {
        specs: servedSpecs,
        dupBursts,
        miss0: serverMiss0,
        missW: serverMissW,
        replay: serverReplay,
        bursts: serverBursts,
        probes,
        commands: serverCommands,
        throughput: serverThroughput,
        cannon: serverCannon,
      },
      faces: { specs: faceSpecs, miss0: faceMiss0, bursts: faceBursts, throughput: faceTp },
      profile,
      cross,
      memory,
    };
  } finally {
    await closeServers(servers);
    await closeFaces(faces);
    for (const h of hosts) await h.close();
    admin.disconnect();
    await redis.stop();
  }
}

/**
 * Issue 17's figures: `live.ts` per store with the live-stream capability (leader and reader in two processes),
 * on the shared services the tests use; a store whose backend is not there says so instead of failing the run.
 */
function liveStreams(): string {
  const stores = ["redis", "postgres", "upstash", "sqlite"];
  const run = spawnSync(
    process.execPath,
    ["--import", "tsx", new URL("./live.ts", import.meta.url).pathname, ...(quick ? ["--quick"] : []), ...stores],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], env: process.env, timeout: 300_000 },
  );
  const out = run.stdout?.trim() ?? "";
  return run.status === 0 ? out : `${out}\n\nThe live-stream bench failed (status ${run.status}).`;
}

const results = await main();
const childOut = argv.find((a) => a.startsWith("--targets-json="))?.slice("--targets-json=".length);
if (childOut) {
  // A run for another runtime's column: hand back the targets only.
  writeFileSync(childOut, JSON.stringify({ node: process.version, rows: targets(results) }));
  process.exit(0);
}
// Node 22 beside Node 20: the same run under the binary NODE22 names (.ci installs one), else a note.
const node22 = process.env.NODE22;
if (node22) {
  const out = `${tmpdir()}/idemfetch-bench-${tag}-node22.json`;
  log(`running again under ${node22}`);
  const run = spawnSync(
    node22,
    ["--import", "tsx", new URL(import.meta.url).pathname, ...argv, `--targets-json=${out}`],
    {
      stdio: ["ignore", "ignore", "inherit"],
      env: process.env,
    },
  );
  results.node22 =
    run.status === 0
      ? (JSON.parse(readFileSync(out, "utf8")) as { node: string; rows: Target[] })
      : `The Node 22 run (${node22}) failed with status ${run.status}.`;
} else {
  results.node22 =
    "Node 22 column skipped: set NODE22 to a node 22 binary (`mkdir -p /tmp/node22 && cd /tmp/node22 && npm i node@22` gives /tmp/node22/node_modules/node/bin/node).";
}
const report = `${renderReport(results)}\n\n${liveStreams()}`;
process.stdout.write(`${report}\n`);
// A quick run (CI) prints only: the committed RESULTS.md and chart.svg come from a full run.
if (!quick || argv.includes("--write")) {
  const out = new URL(".", import.meta.url);
  writeFileSync(new URL("RESULTS.md", out), `${report}\n`);
  writeFileSync(new URL("chart.svg", out), renderChart(results));
  writeFileSync(
    new URL("PROFILE.md", out),
    `# CPU profile of idempotency() (memory store) at c=32, from the last full \`npm run bench\`\n\n${results.profile}`,
  );
  log("wrote test/bench/RESULTS.md and test/bench/chart.svg");
}
log(`done in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
