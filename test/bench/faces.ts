// `npx tsx test/bench/faces.ts [--rounds=5] [--seconds=1] [--only=express,node]`: the server faces (memory
// store) beside their plain framework, interleaved in rounds: req/s ratio and server CPU µs per request, c=32.

import type { FaceContender } from "./face-host.ts";
import { type Host, LoadClient, median, startHost } from "./lib.ts";

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string): string =>
  argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const rounds = Number(flag("rounds", "5"));
const seconds = Number(flag("seconds", "1"));
const concurrency = Number(flag("c", "32"));
const frameworks = flag("only", "node,express,fastify,hono").split(",");

interface Running {
  id: FaceContender;
  host: Host<{ url: string }>;
  client: LoadClient;
  rps: number[];
  cpu: number[];
}

const body = (i: number) => JSON.stringify({ amount: 100, currency: "eur", order: i });
let next = 0;

async function load(r: Running): Promise<void> {
  const cpu0 = await r.host.call<number>("cpu");
  let done = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const i = next++;
        const reply = await r.client.send("/work", `faces-${process.pid}-${i}`, body(i));
        if (reply.status !== 200) throw new Error(`${r.id}: status ${reply.status} ${reply.body}`);
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu1 = await r.host.call<number>("cpu");
  r.rps.push(done / elapsed);
  r.cpu.push((cpu1 - cpu0) / done);
}

const ids = frameworks.flatMap((f) => [`${f}-plain`, `${f}-idemfetch`] as FaceContender[]);
const running: Running[] = [];
for (const id of ids) {
  const host = await startHost<{ url: string }>("./face-host.ts", { CONTENDER: id });
  running.push({ id, host, client: new LoadClient(host.ready.url), rps: [], cpu: [] });
}
try {
  for (const r of running) await load(r); // warm-up
  for (const r of running) {
    r.rps.length = 0;
    r.cpu.length = 0;
  }
  for (let i = 0; i < rounds; i++) for (const r of running) await load(r);
  console.log("| face | req/s | ÷ plain | CPU µs/req |");
  console.log("|---|---|---|---|");
  for (const r of running) {
    const plain = running.find((p) => p.id === r.id.replace("idemfetch", "plain")) as Running;
    const ratio = r.rps.map((v, i) => v / (plain.rps[i] as number));
    console.log(
      `| ${r.id} | ${median(r.rps).toFixed(0)} | ${median(ratio).toFixed(2)}× | ${median(r.cpu).toFixed(0)} |`,
    );
  }
} finally {
  for (const r of running) {
    r.client.close();
    await r.host.close();
  }
}
