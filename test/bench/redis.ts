// `npx tsx test/bench/redis.ts`: the Redis adapters' costs — bytes and replay CPU per record layout, wake-up latency, WAIT.
// Starts its own redis-server and a local Redis Cluster (.ci/redis-cluster.sh), and stops both. Not a test: prints numbers.
import { Cluster, Redis } from "ioredis";
import { type IoredisClient, ioredisStore } from "../../adapters/ioredis.ts";
import { type IdempotencyStore, newToken, type StoredRecord } from "../../src/store.ts";
import { startPrivateRedis } from "../fixtures/processes.ts";
import { startCluster } from "../fixtures/redis-cluster.ts";

const SIZES = [
  ["1 KiB", 1024, 300],
  ["100 KiB", 100 * 1024, 100],
  ["5 MiB", 5 * 1024 * 1024, 10],
] as const;

const recordOf = (size: number): StoredRecord => {
  const body = new Uint8Array(size);
  for (let i = 0; i < size; i += 65536) crypto.getRandomValues(body.subarray(i, Math.min(size, i + 65536)));
  return {
    status: 200,
    statusText: "OK",
    headers: [["content-type", "application/json"]],
    body,
    createdAt: Date.now(),
    fingerprint: "a".repeat(64),
  };
};

async function committed(store: IdempotencyStore, k: string, record: StoredRecord): Promise<void> {
  const lease = await store.acquire(k, record.fingerprint, 30_000);
  if (lease.state !== "acquired" || !(await store.commit(k, lease.token, record, 600_000))) throw new Error("commit");
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
const p95 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length * 0.95)] as number;

async function layouts(redis: Redis): Promise<void> {
  console.log("\n## Bytes per record and replay CPU (standalone Redis 7, random bodies)\n");
  console.log("| body | layout | STRLEN | MEMORY USAGE | replay CPU per call | replay wall per call |");
  console.log("|---|---|---|---|---|---|");
  for (const [label, size, n] of SIZES) {
    const record = recordOf(size);
    for (const binary of [false, true]) {
      const store = ioredisStore({ redis, binary });
      const k = `bench:${newToken()}`;
      await committed(store, k, record);
      const strlen = await redis.strlen(k);
      const memory = Number(await redis.call("MEMORY", "USAGE", k, "SAMPLES", "0"));
      for (let i = 0; i < 3; i++) await store.acquire(k, "fp", 30_000); // warm
      const cpu = process.cpuUsage();
      const started = performance.now();
      for (let i = 0; i < n; i++) {
        const replay = await store.acquire(k, "fp", 30_000);
        if (replay.state !== "done" || replay.record.body.length !== size) throw new Error("replay");
      }
      const used = process.cpuUsage(cpu);
      const wall = (performance.now() - started) / n;
      const cpuMs = (used.user + used.system) / 1000 / n;
      console.log(
        `| ${label} | ${binary ? "binary (B)" : "text (R, base64)"} | ${strlen} | ${memory} | ${cpuMs.toFixed(3)} ms | ${wall.toFixed(3)} ms |`,
      );
      await redis.del(k);
    }
  }
}

/** Commit → subscriber woken, one key at a time. */
async function wakeLatency(label: string, leader: IdempotencyStore, waiter: IdempotencyStore, n: number) {
  const samples: number[] = [];
  let missed = 0;
  const record = recordOf(64);
  const warm = waiter.subscribe?.(`bench:wake:warm`, () => {}); // the subscriber connection(s) opened and ready
  await new Promise((r) => setTimeout(r, 1000));
  for (let i = 0; i < n; i++) {
    const k = `bench:wake:${newToken()}`;
    let resolveWoken!: (t: number) => void;
    const woken = new Promise<number>((r) => (resolveWoken = r));
    const off = waiter.subscribe?.(k, () => resolveWoken(performance.now()));
    await new Promise((r) => setTimeout(r, 30)); // the subscription reaches the server
    const lease = await leader.acquire(k, "fp", 30_000);
    if (lease.state !== "acquired") throw new Error("lease");
    const sent = performance.now();
    await leader.commit(k, lease.token, record, 60_000);
    const at = await Promise.race([woken, new Promise<undefined>((r) => setTimeout(r, 1000))]);
    if (at === undefined) missed++;
    else samples.push(at - sent);
    off?.();
  }
  warm?.();
  console.log(
    `| ${label} | ${median(samples).toFixed(2)} ms | ${p95(samples).toFixed(2)} ms | ${samples.length} (${missed} not woken in 1 s) |`,
  );
}

async function commitCost(label: string, store: IdempotencyStore, n: number): Promise<number> {
  const record = recordOf(1024);
  const leases: [string, string][] = [];
  for (let i = 0; i < n; i++) {
    const k = `bench:wait:${newToken()}`;
    const lease = await store.acquire(k, "fp", 30_000);
    if (lease.state === "acquired") leases.push([k, lease.token]);
  }
  const started = performance.now();
  for (const [k, token] of leases) await store.commit(k, token, record, 60_000);
  const ms = (performance.now() - started) / leases.length;
  console.log(`| ${label} | ${ms.toFixed(3)} ms |`);
  return ms;
}

async function main(): Promise<void> {
  const server = await startPrivateRedis();
  const cluster = await startCluster("bench");
  const opened: (Redis | Cluster)[] = [];
  const redis = (): Redis => {
    const r = new Redis({ port: server.port });
    opened.push(r);
    return r;
  };
  const clusterClient = async (): Promise<Cluster> => {
    const c = new Cluster(cluster.nodes);
    opened.push(c);
    await new Promise((r) => c.once("ready", r));
    return c;
  };
  try {
    await layouts(redis());

    console.log("\n## Wake-up latency, commit sent → waiter's subscriber called (SPUBLISH/SSUBSCRIBE)\n");
    console.log("| setup | median | p95 | samples |");
    console.log("|---|---|---|---|");
    const w1 = ioredisStore({ redis: redis() });
    await wakeLatency("standalone Redis 7", ioredisStore({ redis: redis() }), w1, 100);
    await w1.close?.();
    const w2 = ioredisStore({ redis: (await clusterClient()) as IoredisClient });
    await wakeLatency("Redis Cluster (3+3)", ioredisStore({ redis: await clusterClient() }), w2, 100);
    await w2.close?.();

    console.log("\n## Commit cost with replicaAck (WAIT 1) on the cluster, 1 KiB records, sequential\n");
    console.log("| commit | per commit |");
    console.log("|---|---|");
    const c = await clusterClient();
    for (let round = 1; round <= 3; round++) {
      await commitCost(`plain, round ${round}`, ioredisStore({ redis: c }), 300);
      await commitCost(
        `replicaAck { timeoutMs: 1000 }, round ${round}`,
        ioredisStore({ redis: c, replicaAck: { timeoutMs: 1000 } }),
        300,
      );
    }
  } finally {
    for (const r of opened) r.disconnect();
    await server.stop();
    await cluster.stop();
  }
}

await main();
