// W1-W5 on the server side: every contender in its own process around the same handler, driven over HTTP.
import type { Redis } from "ioredis";
import { type Host, interleave, LoadClient, median, type Reply, sleep, startHost, tally } from "./lib.ts";
import type { ServerContender } from "./server-host.ts";

export interface ServerSpec {
  id: ServerContender;
  name: string;
  store: string;
  /** The plain server it is measured against (same HTTP framework), or null for a baseline. */
  baseline: ServerContender | null;
  peer: boolean;
}

export interface ServerHost {
  spec: ServerSpec;
  host: Host<{ url: string; adapter: string }>;
  client: LoadClient;
}

/** What a workload drives: a process answering `count` and `cpu`, and a client to its server (a face host too). */
export interface Driven {
  host: Pick<Host, "call">;
  client: LoadClient;
}

export const body = (i: number | string) => JSON.stringify({ amount: 100, currency: "eur", order: i });

export async function startServers(
  specs: ServerSpec[],
  redisUrl: string,
  /** Extra node flags for one contender's process (`--cpu-prof` for a profile). */
  execArgv: (id: ServerContender) => string[] = () => [],
): Promise<ServerHost[]> {
  return Promise.all(
    specs.map(async (spec) => {
      const host = await startHost<{ url: string; adapter: string }>(
        "./server-host.ts",
        { CONTENDER: spec.id, REDIS_URL: redisUrl },
        execArgv(spec.id),
      );
      if (spec.id === "express-idempotency") spec.store = host.ready.adapter;
      return { spec, host, client: new LoadClient(host.ready.url) };
    }),
  );
}

export async function closeServers(hosts: ServerHost[]): Promise<void> {
  await Promise.all(
    hosts.map(async (h) => {
      h.client.close();
      await h.host.close();
    }),
  );
}

const replayed = (r: Reply): boolean =>
  r.headers["idempotent-replayed"] === "true" || r.headers["x-replayed"] === "true";
const label = (r: Reply): string => `${r.status}`;

export interface ServerLatency {
  samples: number[];
  /** Handler executions during the run. */
  executions: number;
  errors: number;
  replays: number;
}

/** Sequential requests number `first` .. `first + n - 1`, interleaved across servers; request i sends body i. */
export async function serverLatency(
  hosts: Driven[],
  workMs: number,
  n: number,
  keyOf: (host: number, i: number) => string,
  first = 0,
): Promise<ServerLatency[]> {
  const before = await Promise.all(hosts.map((h) => h.host.call<number>("count")));
  const stats = hosts.map(() => ({ errors: 0, replays: 0 }));
  const samples = await interleave(
    hosts.map((h, index) => ({ h, index })),
    n,
    async ({ h, index }, i) => {
      const started = performance.now();
      const reply = await h.client.send(`/work?ms=${workMs}`, keyOf(index, first + i), body(first + i));
      const elapsed = performance.now() - started;
      const s = stats[index] as { errors: number; replays: number };
      if (reply.status !== 200) s.errors++;
      if (replayed(reply)) s.replays++;
      return elapsed;
    },
  );
  const after = await Promise.all(hosts.map((h) => h.host.call<number>("count")));
  return hosts.map((_, index) => ({
    samples: samples[index] as number[],
    executions: (after[index] as number) - (before[index] as number),
    ...(stats[index] as { errors: number; replays: number }),
  }));
}

export interface ServerBurst {
  size: number;
  workMs: number;
  wallMs: number;
  oneCallMs: number;
  executions: number;
  outcomes: string;
  /** Callers that got a 200 with the same body as the most common 200 (one execution's answer). */
  same200: number;
  correct: boolean;
}

/** `size` concurrent identical requests (same key and body) on sockets opened beforehand. */
export async function serverBurst(h: Driven, size: number, workMs: number, tag: string): Promise<ServerBurst> {
  const path = `/work?ms=${workMs}`;
  // Open `size` keep-alive sockets first (distinct keys), so the burst measures the layer, not TCP handshakes.
  await Promise.all(Array.from({ length: size }, (_, i) => h.client.send(path, `${tag}-warm-${i}`, body(`w${i}`))));
  const singles: number[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    await h.client.send(path, `${tag}-single-${i}`, body(`s${i}`));
    singles.push(performance.now() - started);
  }
  const before = await h.host.call<number>("count");
  const started = performance.now();
  const replies = await Promise.all(
    Array.from({ length: size }, () =>
      h.client.send(path, `${tag}-burst`, body("burst")).catch((): Reply => ({ status: 0, headers: {}, body: "" })),
    ),
  );
  const wallMs = performance.now() - started;
  const executions = (await h.host.call<number>("count")) - before;
  const bodies = new Map<string, number>();
  for (const r of replies) if (r.status === 200) bodies.set(r.body, (bodies.get(r.body) ?? 0) + 1);
  const same200 = Math.max(0, ...bodies.values());
  return {
    size,
    workMs,
    wallMs,
    oneCallMs: median(singles),
    executions,
    outcomes: tally(replies.map(label)),
    same200,
    correct: executions === 1 && same200 === size,
  };
}

/**
 * Same key, other body, after the first completed: a 4xx refusal is right (409/422 per the IETF draft, 417 is
 * express-idempotency's choice); a 200 either replays the first request's answer to a different request or runs it.
 */
export async function keyReuseProbe(h: ServerHost, tag: string): Promise<{ status: number; correct: boolean }> {
  await h.client.send("/work?ms=0", `${tag}-reuse`, body("first"));
  const second = await h.client.send("/work?ms=0", `${tag}-reuse`, body("second"));
  return { status: second.status, correct: second.status >= 400 && second.status < 500 };
}

export interface CommandCount {
  /** Client commands per request (a script call counts once). */
  roundTrips: number;
  /** Every command Redis executed per request, those inside Lua scripts included. */
  executed: number;
  /** Per-request calls by command name. */
  breakdown: string;
}

/** Redis commands per request from INFO commandstats, between CONFIG RESETSTAT and the end of `run`. */
export async function commandsPerRequest(admin: Redis, n: number, run: () => Promise<void>): Promise<CommandCount> {
  await admin.config("RESETSTAT");
  await run();
  const info = await admin.info("commandstats");
  const calls = new Map<string, number>();
  for (const match of info.matchAll(/^cmdstat_([^:]+):calls=(\d+)/gm)) {
    const [, name, count] = match;
    if (!name || name === "info" || name.startsWith("config")) continue;
    calls.set(name, Number(count));
  }
  const executed = [...calls.values()].reduce((a, b) => a + b, 0);
  // idemfetch's Redis stores send only EVALSHA/EVAL (plus SUBSCRIBE); the peers send no scripts. So with
  // scripts in the stats, the round trips are the script calls; without, every command is one.
  const scripts = (calls.get("evalsha") ?? 0) + (calls.get("eval") ?? 0);
  const roundTrips = scripts > 0 ? scripts : executed;
  const breakdown = [...calls]
    .sort((a, b) => b[1] - a[1])
    .map(([name, count]) => `${name} ${(count / n).toFixed(2).replace(/\.?0+$/, "")}`)
    .join(" · ");
  return { roundTrips: roundTrips / n, executed: executed / n, breakdown };
}

export interface Throughput {
  concurrency: number;
  rps: number;
  errors: number;
  /** The server process's CPU time (user + system) per answered request, µs. */
  cpuUs: number;
}

/** Requests/s with distinct keys, `concurrency` in flight, for `seconds`. */
export async function throughput(
  h: ServerHost,
  concurrency: number,
  seconds: number,
  workMs: number,
  tag: string,
): Promise<Throughput> {
  let done = 0;
  let errors = 0;
  let next = 0;
  const cpu0 = await h.host.call<number>("cpu");
  const deadline = performance.now() + seconds * 1000;
  const started = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const i = next++;
        const reply = await h.client.send(`/work?ms=${workMs}`, `${tag}-${i}`, body(i));
        if (reply.status === 200) done++;
        else errors++;
      }
    }),
  );
  const rps = done / ((performance.now() - started) / 1000);
  const cpuUs = ((await h.host.call<number>("cpu")) - cpu0) / Math.max(1, done + errors);
  return { concurrency, rps, errors, cpuUs };
}

export interface CrossProcess {
  spec: ServerSpec;
  processes: number;
  rounds: number;
  /** Handler executions per round, over all processes. */
  executionsPerRound: number[];
  outcomes: string;
  /** For each request that waited and got the answer: its completion time minus the first completion of its round (rounds after the first). */
  wakeMs: number[];
  /** The same in the first round, when every process meets the key (and its store connections) for the first time. */
  firstWakeMs: number[];
  correct: boolean;
}

/**
 * K processes on one Redis; each round sends the same key to all of them at once. The handler's work varies
 * per round (workMs .. workMs + 99 ms) so that polling intervals cannot line up with it by chance.
 */
export async function crossProcess(
  spec: ServerSpec,
  redisUrl: string,
  processes: number,
  rounds: number,
  workMs: number,
  tag: string,
): Promise<CrossProcess> {
  const hosts = await startServers(
    Array.from({ length: processes }, () => ({ ...spec })),
    redisUrl,
  );
  try {
    for (const h of hosts) await h.client.send("/work?ms=0", `${tag}-warm-${h.host.child.pid}`, body("warm"));
    const executionsPerRound: number[] = [];
    const labels: string[] = [];
    const wakeMs: number[] = [];
    const firstWakeMs: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const roundMs = workMs + ((round * 37) % 100);
      const before = await Promise.all(hosts.map((h) => h.host.call<number>("count")));
      const key = `${tag}-round-${round}`;
      const results = await Promise.all(
        hosts.map(async (h) => {
          const reply = await h.client.send(`/work?ms=${roundMs}`, key, body(`round-${round}`));
          return { reply, at: performance.now() };
        }),
      );
      const after = await Promise.all(hosts.map((h) => h.host.call<number>("count")));
      executionsPerRound.push(after.reduce((sum, a, i) => sum + a - (before[i] as number), 0));
      for (const r of results) labels.push(label(r.reply));
      const ok = results.filter((r) => r.reply.status === 200).sort((a, b) => a.at - b.at);
      for (const r of ok.slice(1)) (round === 0 ? firstWakeMs : wakeMs).push(r.at - (ok[0] as { at: number }).at);
      await sleep(20);
    }
    return {
      // The store the processes reported (express-idempotency: its Redis adapter only when installed).
      spec: { ...spec, store: hosts[0]?.spec.store ?? spec.store },
      processes,
      rounds,
      executionsPerRound,
      outcomes: tally(labels),
      wakeMs,
      firstWakeMs,
      correct: executionsPerRound.every((e) => e === 1) && labels.every((l) => l === "200"),
    };
  } finally {
    await closeServers(hosts);
  }
}
