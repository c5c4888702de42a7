// What a Redis Cluster failover costs ioredisStore: a graceful CLUSTER FAILOVER under load, a crash with writes not yet replicated, and WAIT.
import { Cluster, Redis } from "ioredis";
import { afterAll, beforeAll, expect, it } from "vitest";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { newToken, type StoredRecord } from "../../src/store.ts";
import { type LocalCluster, startCluster } from "../fixtures/redis-cluster.ts";
import { sleep, until } from "../fixtures/util.ts";

// Its own cluster: these tests kill and promote nodes. Each test uses another master and its replica.
let cluster: LocalCluster;
const opened: (Cluster | Redis)[] = [];
const cli = (): Cluster => {
  const redis = new Cluster(cluster.nodes, { redisOptions: { commandTimeout: 1000 } });
  redis.on("error", () => {});
  opened.push(redis);
  return redis;
};
const direct = new Map<number, Redis>();
/** One connection per node, reused. */
const node = (port: number): Redis => {
  let redis = direct.get(port);
  if (!redis) {
    redis = new Redis({ port, commandTimeout: 2000, maxRetriesPerRequest: 1 });
    redis.on("error", () => {});
    opened.push(redis);
    direct.set(port, redis);
  }
  return redis;
};

interface Shard {
  master: number;
  replica: number;
  /** Slot ranges the master serves, inclusive. */
  slots: [number, number][];
}
let shards: Shard[];

beforeAll(async () => {
  cluster = await startCluster("failover");
  const lines = String(await node(cluster.ports[0] as number).cluster("NODES"))
    .trim()
    .split("\n")
    .map((line) => line.split(" "));
  const portOf = (fields: string[]) => Number((fields[1] as string).split(":")[1]?.split("@")[0]);
  shards = lines
    .filter((f) => f[2]?.includes("master"))
    .map((m) => ({
      master: portOf(m),
      replica: portOf(lines.find((r) => r[3] === m[0]) as string[]),
      slots: m.slice(8).map((range) => range.split("-").map(Number) as [number, number]),
    }));
  expect(shards).toHaveLength(3);
});
afterAll(async () => {
  for (const redis of opened) redis.disconnect();
  await cluster?.stop();
});

const record: StoredRecord = {
  status: 200,
  statusText: "OK",
  headers: [],
  body: new TextEncoder().encode("once"),
  createdAt: 0,
  fingerprint: "fp",
};

/** `count` fresh keys whose slot the shard's master serves. */
async function keysOn(shard: Shard, count: number): Promise<string[]> {
  const probe = node(shard.master);
  const out: string[] = [];
  while (out.length < count) {
    const k = `failover:${newToken()}`;
    const slot = Number(await probe.cluster("KEYSLOT", k));
    if (shard.slots.some(([a, b]) => slot >= a && slot <= b)) out.push(k);
  }
  return out;
}

const isMaster = async (port: number) => String((await node(port).role())[0]) === "master";

/** Kills the shard's master as a crash would and promotes its replica at once (TAKEOVER: no vote needed). */
async function crashMaster(shard: Shard): Promise<void> {
  process.kill(await cluster.pid(shard.master), "SIGKILL");
  await promote(shard);
}
async function promote(shard: Shard): Promise<void> {
  await node(shard.replica).cluster("FAILOVER", "TAKEOVER");
  await until(() => isMaster(shard.replica), 10_000);
}

/** Runs `fn` until it succeeds; resolves the ms it took. */
async function firstSuccess(fn: () => Promise<unknown>): Promise<number> {
  const started = performance.now();
  for (;;) {
    try {
      await fn();
      return performance.now() - started;
    } catch {
      await sleep(50);
    }
  }
}

it("a graceful CLUSTER FAILOVER under load loses no record; calls fail or stall only for a moment", async () => {
  const shard = shards[0] as Shard;
  const store = ioredisStore({ redis: cli() });
  const committed: string[] = [];
  let [errors, worstMs, running] = [0, 0, true];
  const loop = async () => {
    while (running) {
      const k = `graceful:${newToken()}`; // spread over every shard
      const started = performance.now();
      try {
        const lease = await store.acquire(k, "fp", 30_000);
        if (lease.state === "acquired" && (await store.commit(k, lease.token, record, 60_000))) committed.push(k);
      } catch {
        errors++;
        await sleep(20);
      }
      worstMs = Math.max(worstMs, performance.now() - started);
    }
  };
  const loops = Array.from({ length: 4 }, loop);
  await sleep(300);
  const before = committed.length;
  const failoverAt = performance.now();
  // A manual failover gives up after a few seconds when the replica cannot catch up (a loaded machine): ask again.
  for (let attempt = 0; attempt < 3 && !(await isMaster(shard.replica)); attempt++) {
    await node(shard.replica).cluster("FAILOVER");
    const deadline = Date.now() + 6000;
    while (Date.now() < deadline && !(await isMaster(shard.replica))) await sleep(50);
  }
  expect(await isMaster(shard.replica)).toBe(true);
  const promotedMs = performance.now() - failoverAt;
  await sleep(500);
  running = false;
  await Promise.all(loops);
  expect(committed.length).toBeGreaterThan(before); // calls went on through the failover
  const states = await Promise.all(committed.map(async (k) => (await store.acquire(k, "fp", 30_000)).state));
  expect(states.filter((s) => s !== "done")).toEqual([]); // a manual failover waits for the replica to catch up
  console.info(
    `graceful failover (promoted in ${Math.round(promotedMs)} ms): ${committed.length} commits, ${errors} failed calls, ` +
      `slowest call ${Math.round(worstMs)} ms, 0 records lost`,
  );
});

it("a crash before replication loses the record (an execution repeats) and the lease (a second leader); WAIT cannot help a replica that is away", async () => {
  const shard = shards[1] as Shard;
  const [kRecord, kLease, kAck] = await keysOn(shard, 3);
  const plain = ioredisStore({ redis: cli() });
  const acked = ioredisStore({ redis: cli(), replicaAck: { timeoutMs: 300 } });
  await plain.acquire(`${kRecord}:warm`, "fp", 1000); // connected, scripts loaded
  await acked.acquire(`${kAck}:warm`, "fp", 1000);

  // The replica stops reading and its link is cut: what the master accepts now exists only on the master.
  const replicaPid = await cluster.pid(shard.replica);
  process.kill(replicaPid, "SIGSTOP");
  try {
    await node(shard.master).call("CLIENT", "KILL", "TYPE", "replica");
    const lease = await plain.acquire(kRecord as string, "fp", 30_000);
    if (lease.state !== "acquired") throw new Error("expected a lease");
    expect(await plain.commit(kRecord as string, lease.token, record, 60_000)).toBe(true);
    const first = await plain.acquire(kLease as string, "fp", 30_000);
    expect(first.state).toBe("acquired");
    const ackLease = await acked.acquire(kAck as string, "fp", 30_000);
    if (ackLease.state !== "acquired") throw new Error("expected a lease");
    const started = performance.now();
    expect(await acked.commit(kAck as string, ackLease.token, record, 60_000)).toBe(true);
    const waitMs = performance.now() - started;
    expect(waitMs).toBeGreaterThanOrEqual(250); // WAIT ran to its timeout: no replica acknowledged
    console.info(`commit with replicaAck and no reachable replica: ${Math.round(waitMs)} ms (WAIT timeout 300 ms)`);
    // The crash comes before the replica wakes: awake first, it would fetch the writes from the backlog.
    process.kill(await cluster.pid(shard.master), "SIGKILL");
  } finally {
    process.kill(replicaPid, "SIGCONT");
  }
  const crashedAt = performance.now();
  await promote(shard);

  const after = ioredisStore({ redis: cli() });
  const recoveredMs = await firstSuccess(() => after.acquire(`${kRecord}:probe`, "fp", 1000));
  // All three writes are gone: the record runs again, the lease has a second holder, WAIT did not keep it.
  expect(await after.acquire(kRecord as string, "fp", 30_000)).toMatchObject({ state: "acquired" });
  expect(await after.acquire(kLease as string, "fp", 30_000)).toMatchObject({ state: "acquired" });
  expect(await after.acquire(kAck as string, "fp", 30_000)).toMatchObject({ state: "acquired" });
  const oldClientMs = await firstSuccess(() => plain.acquire(`${kLease}:probe`, "fp", 1000));
  console.info(
    `crash + TAKEOVER: promoted and serving in ${Math.round(performance.now() - crashedAt - recoveredMs)}+${Math.round(recoveredMs)} ms; ` +
      `the old client's first success ${Math.round(oldClientMs)} ms after that; 3 of 3 unreplicated writes lost`,
  );
});

it("with replicaAck, a commit the replica acknowledged survives the master's crash", async () => {
  const shard = shards[2] as Shard;
  const [k] = await keysOn(shard, 1);
  const acked = ioredisStore({ redis: cli(), replicaAck: { timeoutMs: 1000 } });
  const lease = await acked.acquire(k as string, "fp", 30_000);
  if (lease.state !== "acquired") throw new Error("expected a lease");
  expect(await acked.commit(k as string, lease.token, record, 60_000)).toBe(true);
  await crashMaster(shard);
  const after = ioredisStore({ redis: cli() });
  await firstSuccess(() => after.acquire(`${k}:probe`, "fp", 1000));
  expect(await after.acquire(k as string, "fp", 30_000)).toMatchObject({ state: "done", record: { status: 200 } });
});
