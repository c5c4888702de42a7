// `npx tsx test/bench/ab.ts <other tree> [framework] [rounds]`: one face of this tree beside the same face of another
// checkout (e.g. `git archive <commit>` unpacked, with node_modules linked), loaded in interleaved rounds, c=32.
import { type FaceHost, type Framework, faceThroughput, summary } from "./face-workloads.ts";
import { LoadClient, startHost } from "./lib.ts";

const [other, framework = "node", rounds = "6"] = process.argv.slice(2) as [string, Framework?, string?];
if (!other) throw new Error("usage: ab.ts <other tree> [framework] [rounds]");
const trees = [
  { name: "other", file: `${other}/test/bench/face-host.ts` },
  { name: "this", file: "./face-host.ts" },
];
const faces: (FaceHost & { tree: string })[] = [];
for (const tree of trees) {
  const id = `${framework}-idemfetch` as const;
  const host = await startHost<{ url: string }>(tree.file, { CONTENDER: id });
  faces.push({ id, framework, wrapped: true, host, client: new LoadClient(host.ready.url), tree: tree.name });
}
try {
  const t = await faceThroughput(faces, {
    rounds: Number(rounds),
    seconds: 1,
    concurrency: 32,
    tag: `ab-${process.pid}`,
  });
  for (const [i, f] of faces.entries()) {
    const s = summary(t[i] as (typeof t)[number]);
    const vsOther = (t[i]?.rps ?? []).map((v, k) => v / ((t[0]?.rps[k] as number) ?? Number.NaN));
    vsOther.sort((a, b) => a - b);
    console.log(
      `${f.tree}: ${s.rps.toFixed(0)} req/s, CPU ${s.cpu.toFixed(0)} µs/req, ÷ other per round (median) ${(vsOther[Math.floor(vsOther.length / 2)] as number).toFixed(2)}×`,
    );
  }
} finally {
  for (const f of faces) {
    f.client.close();
    await f.host.close();
  }
}
