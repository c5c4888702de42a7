// Focused runs while tuning (not the full bench): `tsx test/bench/micro.ts server|client [--prof=contender] [--n=400]`.
import { mkdirSync } from "node:fs";
import { startPrivateRedis } from "../fixtures/processes.ts";
import { cannon } from "./autocannon.ts";
import { renderSummary, summarise } from "./cpu-profile.ts";
import { median, ms, startHost } from "./lib.ts";
import { closeServers, type ServerSpec, serverLatency, startServers, throughput } from "./server-workloads.ts";

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string): string =>
  argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const n = Number(flag("n", "400"));
const started = Date.now();
const tag = `m${Date.now().toString(36)}`;

if (argv[0] === "prof") {
  // One contender under --cpu-prof, autocannon c=32 only: the profile of the throughput path.
  const id = flag("id", "idemfetch-memory") as ServerSpec["id"];
  const redis = await startPrivateRedis();
  const dir = "/tmp/perf-prof";
  mkdirSync(dir, { recursive: true });
  const noprof = argv.includes("--noprof");
  const [s] = await startServers([{ id, name: id, store: "", baseline: null, peer: false }], redis.url, () =>
    noprof ? [] : ["--cpu-prof", `--cpu-prof-dir=${dir}`],
  );
  if (!s) throw new Error("no server");
  await cannon(s.host.ready.url, 8, 1, `${tag}-warm`);
  const cpu0 = await s.host.call<number>("cpu");
  const c = await cannon(s.host.ready.url, 32, Number(flag("s", "4")), `${tag}-p`);
  const cpu = ((await s.host.call<number>("cpu")) - cpu0) / (c.rps * Number(flag("s", "4")));
  console.log(
    `${id} autocannon c=32 ${c.rps.toFixed(0)} req/s p50 ${c.p50Ms} ms non2xx ${c.non2xx}; server CPU ${cpu.toFixed(0)} µs/request`,
  );
  await closeServers([s]);
  await redis.stop();
  const { readdirSync, statSync } = await import("node:fs");
  const newest = readdirSync(dir)
    .map((f) => `${dir}/${f}`)
    .filter((f) => f.endsWith(".cpuprofile") && statSync(f).mtimeMs > started)
    .sort((a, b) => statSync(b).size - statSync(a).size)[0];
  if (newest && !noprof) console.log(renderSummary(`${id} (${newest})`, summarise(newest, Number(flag("top", "30")))));
} else if (argv[0] === "server") {
  const prof = flag("prof", "");
  const redis = await startPrivateRedis();
  const specs: ServerSpec[] = [
    { id: "plain", name: "plain", store: "–", baseline: null, peer: false },
    { id: "idemfetch-memory", name: "memory", store: "memory", baseline: "plain", peer: false },
    { id: "idemfetch-redis", name: "redis", store: "redis", baseline: "plain", peer: false },
  ];
  const dir = "/tmp/perf-prof";
  mkdirSync(dir, { recursive: true });
  const servers = await startServers(specs, redis.url, (id) =>
    id === prof ? ["--cpu-prof", `--cpu-prof-dir=${dir}`] : [],
  );
  try {
    await serverLatency(servers, 0, 50, (s, i) => `${tag}-w-${s}-${i}`);
    const miss = await serverLatency(servers, 0, n, (s, i) => `${tag}-${s}-${i}`);
    const replay = await serverLatency(servers, 0, n, (s, i) => `${tag}-${s}-${i}`);
    for (const [i, s] of servers.entries()) {
      console.log(
        `${s.spec.name.padEnd(8)} miss ${ms(median(miss[i]?.samples ?? []))}  replay ${ms(median(replay[i]?.samples ?? []))}`,
      );
    }
    for (const [i, s] of servers.entries()) {
      const t = await throughput(s, 32, 2, 0, `${tag}-t${i}`);
      const c = await cannon(s.host.ready.url, 32, 2, `${tag}-c${i}`);
      console.log(
        `${s.spec.name.padEnd(8)} c=32 harness ${t.rps.toFixed(0)} req/s  autocannon ${c.rps.toFixed(0)} req/s (non2xx ${c.non2xx})`,
      );
    }
  } finally {
    await closeServers(servers);
    await redis.stop();
  }
  if (prof) {
    const { readdirSync, statSync } = await import("node:fs");
    const newest = readdirSync(dir)
      .filter((f) => f.endsWith(".cpuprofile"))
      .map((f) => `${dir}/${f}`)
      .filter((f) => statSync(f).mtimeMs > started)
      // The main thread's profile is the largest (tsx's loader thread writes one too).
      .sort((a, b) => statSync(b).size - statSync(a).size)[0];
    if (newest) console.log(renderSummary(`${prof} (${newest})`, summarise(newest, 25)));
  }
} else {
  const client = await startHost<{ url: string }>("./client-micro-host.ts", {});
  console.log(await client.call("run", { n }));
  await client.close();
}
