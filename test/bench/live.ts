// `npx tsx test/bench/live.ts [store]`: a live stream on a real store, leader and reader in two processes: the reader's
// chunk latency behind the leader (p50/p99), first bytes for a reader joining mid-stream, store ops/s. Not a test:
// prints numbers. `store` is a name of LIVE_STORES (default redis); each opens its backend under a unique prefix
// and deletes what it wrote at the end. Redis: 127.0.0.1:6379 (REDIS_URL to change). upstash: the Upstash REST
// fixture (test/fixtures/upstash-server.ts) over that Redis, started by the leader process and handed to the readers
// in the environment; UPSTASH_REDIS_REST_URL and UPSTASH_REDIS_REST_TOKEN set measure a real Upstash database instead.
// PostgreSQL: database `test` on 127.0.0.1:5432 (PG_URL to change), a table of the run's own, woken by LISTEN/NOTIFY.
import { spawn } from "node:child_process";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { Redis } from "ioredis";
import pg from "pg";
import { ioredisStore } from "../../adapters/ioredis.ts";
import { migrate, pgListen, postgresStore } from "../../adapters/postgres.ts";
import { sqliteStore } from "../../adapters/sqlite.ts";
import { upstashStore } from "../../adapters/upstash.ts";
import { followLive, liveWriter } from "../../src/live.ts";
import { hasLive, type IdempotencyStore, type LiveStore, newToken } from "../../src/store.ts";
import { openSqlite } from "../fixtures/sqlite.ts";
import { startUpstashFixture } from "../fixtures/upstash-server.ts";

const URL_ = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const PG_URL = process.env.PG_URL ?? "postgres://postgres@127.0.0.1:5432/test";

/** A backend the bench can open twice (leader and reader process) under one `prefix`. */
interface LiveBackend {
  /** Issue 17's target for this store, printed beside the figures. */
  target?: string;
  /** Opens a store under `prefix`; `close` frees its connections (`clean` also deletes what `prefix` holds). */
  open(prefix: string): Promise<{ store: IdempotencyStore; close(clean: boolean): Promise<void> }>;
}

/** The stores with the live-stream capability the bench can measure, by name. */
const LIVE_STORES: Record<string, LiveBackend> = {
  redis: {
    target:
      "a token behind the leader's p50 ≤ 5 ms, p99 ≤ 25 ms; a late joiner's first byte ≤ 10 ms after it reaches the store",
    async open(prefix) {
      const redis = new Redis(URL_, { keyPrefix: prefix });
      await new Promise((resolve) => redis.once("ready", resolve));
      const store = ioredisStore({ redis });
      return {
        store,
        async close(clean) {
          await store.close?.(); // its subscriber connection would keep the process alive
          if (clean) {
            const admin = new Redis(URL_);
            const keys = await admin.keys(`${prefix}*`);
            if (keys.length) await admin.del(...keys);
            admin.disconnect();
          }
          redis.disconnect();
        },
      };
    },
  },
  upstash: {
    target: "none set: REST cannot block, so readers poll (25 ms doubling to 250 ms here); measured and stated",
    async open(prefix) {
      // The leader starts the fixture; the readers it spawns inherit its address through the environment.
      const fixture =
        process.env.UPSTASH_REDIS_REST_URL === undefined ? await startUpstashFixture({ redisUrl: URL_ }) : undefined;
      if (fixture) {
        process.env.UPSTASH_REDIS_REST_URL = fixture.url;
        process.env.UPSTASH_REDIS_REST_TOKEN = fixture.token;
      }
      const url = process.env.UPSTASH_REDIS_REST_URL as string;
      const token = process.env.UPSTASH_REDIS_REST_TOKEN as string;
      return {
        // REST has no keyPrefix: the bench's keys get this one.
        store: prefixed(upstashStore({ url, token }), prefix),
        async close(clean) {
          if (clean && fixture) {
            const admin = new Redis(URL_);
            const keys = await admin.keys(`${prefix}*`);
            if (keys.length) await admin.del(...keys);
            admin.disconnect();
          }
          await fixture?.close();
        },
      };
    },
  },
  postgres: {
    target: "a token behind the leader's p50 ≤ 20 ms",
    async open(prefix) {
      // The prefix names the run's own table: "idemfetch-bench:live:<hex>:" -> idemfetch_bench_live_<hex>.
      const table = prefix.replace(/[^a-z0-9]+/g, "_").replace(/_$/, "");
      const config = { connectionString: PG_URL };
      const pool = new pg.Pool({ ...config, max: 4 });
      await migrate(pool, { table });
      const store = postgresStore({ client: pool, table, listen: pgListen(() => new pg.Client(config)) });
      return {
        store,
        async close(clean) {
          await store.close?.();
          if (clean) await pool.query(`DROP TABLE IF EXISTS ${table}, ${table}_live`);
          await pool.end();
        },
      };
    },
  },
  sqlite: {
    target: "none set (issue 19's store): readers in other processes poll the file (25 ms, doubling while idle)",
    async open(prefix) {
      // One file per run, named by the prefix, that the leader and the readers it spawns open.
      const file = join(tmpdir(), `${prefix.replace(/[^a-z0-9]+/g, "_").replace(/_$/, "")}.db`);
      const { db, close } = openSqlite(file);
      return {
        store: sqliteStore({ db }),
        async close(clean) {
          close();
          if (clean) for (const suffix of ["", "-wal", "-shm"]) rmSync(`${file}${suffix}`, { force: true });
        },
      };
    },
  },
};

/** `store` with `prefix` before every store key it is given. */
function prefixed(store: IdempotencyStore, prefix: string): IdempotencyStore {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(store)) {
    out[name] =
      typeof fn === "function"
        ? (storeKey: string, ...rest: unknown[]) => fn.call(store, prefix + storeKey, ...rest)
        : fn;
  }
  return out as unknown as IdempotencyStore;
}

function backend(name: string): LiveBackend {
  const found = LIVE_STORES[name];
  if (found === undefined) throw new Error(`unknown store ${name}: one of ${Object.keys(LIVE_STORES).join(", ")}`);
  return found;
}
const clock = (): number => performance.timeOrigin + performance.now();
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Counts store calls by method. */
function counted(store: IdempotencyStore): { store: LiveStore; ops: Map<string, number> } {
  const ops = new Map<string, number>();
  const wrapped = { ...store } as Record<string, unknown>;
  for (const [name, fn] of Object.entries(store)) {
    if (typeof fn !== "function" || name === "subscribe" || name === "subscribeLive" || name === "close") continue;
    wrapped[name] = (...args: unknown[]) => {
      ops.set(name, (ops.get(name) ?? 0) + 1);
      return (fn as (...a: unknown[]) => unknown).apply(store, args);
    };
  }
  if (!hasLive(wrapped as unknown as IdempotencyStore)) throw new Error("no live capability");
  return { store: wrapped as unknown as LiveStore, ops };
}

/** The reader process: follows `key` from byte 0 and prints, per token, its latency behind the leader's write and publish. */
async function reader(name: string, prefix: string, key: string, waitForGo: boolean): Promise<void> {
  const opened = await backend(name).open(prefix);
  const { store, ops } = counted(opened.store);
  // Connected and subscribed (the first read subscribes; SUBSCRIBE takes effect a moment later): tell the leader.
  // One read first, uncounted: a REST client's first call opens its connection (and Node 20 loads its fetch).
  await opened.store.readLive?.(`${key}:warm`, undefined, 0);
  const probe = store.subscribeLive?.(`${key}`, () => {});
  await new Promise((r) => setTimeout(r, 200));
  probe?.();
  console.log("ready");
  // A late joiner is started before the stream (a process start would take the CPU the stream needs) and waits for "go".
  if (waitForGo) await new Promise((resolve) => createInterface({ input: process.stdin }).once("line", resolve));
  // From the first readLive call: the reader has reached the store.
  let started = Number.NaN;
  const read = store.readLive.bind(store);
  store.readLive = (...args) => {
    if (Number.isNaN(started)) started = clock();
    return read(...args);
  };
  let text = "";
  let firstBody: number | undefined;
  let head: number | undefined;
  const samples: { write: number }[] = [];
  const arrivals: [number, number][] = [];
  let bytes = 0;
  for await (const event of followLive(store, key, { minPollMs: 25, maxPollMs: 250 })) {
    const now = clock();
    if (event.type === "head") head = now - started;
    if (event.type === "body") {
      firstBody ??= now - started;
      bytes += event.bytes.length;
      arrivals.push([bytes, now]);
      text += decoder.decode(event.bytes);
      // Lines "t<seq> <written at>".
      const lines = text.split("\n");
      text = lines.pop() ?? "";
      for (const line of lines) {
        const [, written] = line.split(" ");
        samples.push({ write: now - Number(written) });
      }
    }
    if (event.type === "done" || event.type === "absent") break;
  }
  console.log(JSON.stringify({ head, firstBody, samples, arrivals, ops: Object.fromEntries(ops) }));
  await opened.close(false);
}

async function leader(name: string): Promise<void> {
  const prefix = `idemfetch-bench:live:${newToken().slice(0, 8)}:`;
  const opened = await backend(name).open(prefix);
  const { store, ops } = counted(opened.store);
  const head = {
    status: 200,
    statusText: "OK",
    headers: [["content-type", "text/event-stream"]] as [string, string][],
  };

  const run = async (label: string, tokensPerSecond: number, seconds: number, joinAfterMs: number) => {
    ops.clear();
    const key = `stream:${newToken()}`;
    const lease = await store.acquire(key, "fp", 30_000);
    if (lease.state !== "acquired") throw new Error("no lease");
    // When each part was sent, by the body offset it ends at: a part's latency is until a reader holds that offset.
    const sentAt: [end: number, at: number][] = [];
    const raw = store.publishLive.bind(store);
    store.publishLive = (k, t, part) => {
      sentAt.push([part.offset + part.body.length, clock()]);
      return raw(k, t, part);
    };
    const writer = liveWriter(store, key, lease.token, head);
    const spawnReader = (wait: boolean) => {
      const args = [
        "--import",
        "tsx",
        new URL(import.meta.url).pathname,
        "reader",
        name,
        prefix,
        key,
        wait ? "wait" : "",
      ];
      const child = spawn(process.execPath, args, { stdio: ["pipe", "pipe", "inherit"] });
      const lines = createInterface({ input: child.stdout });
      const ready = new Promise<void>((resolve) => lines.once("line", () => resolve()));
      const result = ready.then(
        () => new Promise<ReaderResult>((resolve) => lines.once("line", (line) => resolve(JSON.parse(line)))),
      );
      // Ending stdin with the line lets the reader exit once done (an open pipe kept both processes alive).
      return { ready, result, go: () => child.stdin.end("go\n") };
    };
    const first = spawnReader(false); // attached before the first byte
    const second = spawnReader(true); // joins mid-stream
    await Promise.all([first.ready, second.ready]);
    const early = first.result;
    const total = tokensPerSecond * seconds;
    let body = "";
    let late: Promise<ReaderResult> | undefined;
    const started = clock();
    for (let i = 0; i < total; i++) {
      const due = started + (i * 1000) / tokensPerSecond;
      const wait = due - clock();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const line = `t${i} ${clock().toFixed(3)}\n`;
      body += line;
      writer.write(encoder.encode(line));
      if (late === undefined && clock() - started >= joinAfterMs) {
        second.go();
        late = second.result;
      }
    }
    await writer.flush();
    writer.close();
    store.publishLive = raw;
    const elapsed = (clock() - started) / 1000;
    const leaderOps = Object.fromEntries(ops);
    await store.commit(
      key,
      lease.token,
      { ...head, body: encoder.encode(body), createdAt: Date.now(), fingerprint: "fp" },
      60_000,
    );
    const [a, b] = await Promise.all([early, late as Promise<ReaderResult>]);
    const writeLatency = a.samples.map((s) => s.write);
    if (process.env.DEBUG_LIVE)
      console.log(writeLatency.map((l, i) => [i, Math.round(l)]).filter(([, l]) => (l as number) > 40));
    console.log(`\n### ${label}: ${tokensPerSecond} tokens/s for ${seconds} s, at most one part per 10 ms or 16 KiB\n`);
    console.log("| measure | p50 | p99 | max |");
    console.log("|---|---|---|---|");
    console.log(
      `| a token's latency at the remote reader behind the leader's write() (ms, pacing included: at most one part per 10 ms) | ${q(writeLatency, 0.5)} | ${q(writeLatency, 0.99)} | ${q(writeLatency, 1)} |`,
    );
    const perPart = partLatency(a.arrivals, sentAt);
    console.log(
      `| a part's latency at the remote reader behind the leader's publishLive call (ms) | ${q(perPart, 0.5)} | ${q(perPart, 0.99)} | ${q(perPart, 1)} |`,
    );
    console.log(
      `\nreader joining at ${joinAfterMs} ms: head after ${b.head?.toFixed(1)} ms, first body (all past bytes) after ${b.firstBody?.toFixed(1)} ms after its first readLive call; tokens received ${b.samples.length}/${total}`,
    );
    const perSecond = (n: number | undefined) => ((n ?? 0) / elapsed).toFixed(1);
    console.log(
      `leader store ops: ${JSON.stringify(leaderOps)} over ${elapsed.toFixed(1)} s = ${perSecond(leaderOps.publishLive)} publishLive/s (+ acquire, commit once)`,
    );
    console.log(`early reader store ops: ${JSON.stringify(a.ops)} = ${perSecond(a.ops.readLive)} readLive/s`);
    console.log(`late reader store ops: ${JSON.stringify(b.ops)}`);
    if (a.samples.length !== total) console.log(`WARNING: the early reader got ${a.samples.length}/${total} tokens`);
  };

  console.log(`\n## Live streams to a duplicate in another process: ${name} (issue 17)`);
  const { target } = backend(name);
  if (target) console.log(`\ntarget: ${target}`);
  // --quick (CI) shortens the streams, never what is measured.
  const quick = process.argv.includes("--quick");
  await run("SSE-like stream", 50, quick ? 3 : 10, quick ? 1500 : 5000);
  await run("fast stream", 500, quick ? 1 : 4, quick ? 500 : 2000);
  await opened.close(true);
}

interface ReaderResult {
  head?: number;
  firstBody?: number;
  samples: { write: number }[];
  arrivals: [number, number][];
  ops: Record<string, number>;
}

/** Each part's latency: from the leader's publishLive call to the reader's first read holding the part's last byte. */
function partLatency(arrivals: [bytes: number, at: number][], sent: [number, number][]): number[] {
  const out: number[] = [];
  for (const [end, at] of sent) {
    const seen = arrivals.find(([bytes]) => bytes >= end);
    if (seen !== undefined && end > 0) out.push(seen[1] - at);
  }
  return out;
}

function q(xs: number[], p: number): string {
  const sorted = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (sorted.length === 0) return "-";
  return (sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] as number).toFixed(1);
}

if (process.argv[2] === "reader") {
  const [name, prefix, key, wait] = process.argv.slice(3) as [string, string, string, string];
  await reader(name, prefix, key, wait === "wait");
} else {
  const names = process.argv.slice(2).filter((arg) => !arg.startsWith("--"));
  for (const name of names.length > 0 ? names : ["redis"]) await leader(name);
}
