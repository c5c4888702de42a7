// Issue 15's server faces: each face (memory store) in its own process beside its plain framework, loaded in
// interleaved rounds (req/s and server CPU per request, c=32), the way FACTS.md found ratios to hold steady.
import type { FaceContender } from "./face-host.ts";
import { type Host, LoadClient, median, startHost } from "./lib.ts";
import { body } from "./server-workloads.ts";

export const FRAMEWORKS = ["node", "express", "fastify", "hono", "web"] as const;
export type Framework = (typeof FRAMEWORKS)[number];

export const FACE_NAMES: Record<Framework, { plain: string; face: string }> = {
  node: { plain: "plain node:http", face: "idemfetch/node" },
  express: { plain: "plain Express 5", face: "idemfetch/express" },
  fastify: { plain: "plain Fastify 5", face: "idemfetch/fastify" },
  hono: { plain: "plain Hono (@hono/node-server)", face: "idemfetch/hono" },
  web: { plain: "plain Web handler (@hono/node-server)", face: "idemfetch/server idempotency()" },
};

export interface FaceHost {
  id: FaceContender;
  framework: Framework;
  wrapped: boolean;
  host: Host<{ url: string }>;
  client: LoadClient;
}

export async function startFaces(frameworks: readonly Framework[]): Promise<FaceHost[]> {
  const faces: FaceHost[] = [];
  // One at a time: eight tsx processes starting at once on two cores time out now and then.
  for (const framework of frameworks) {
    for (const wrapped of [false, true]) {
      const id = `${framework}-${wrapped ? "idemfetch" : "plain"}` as FaceContender;
      const host = await startHost<{ url: string }>("./face-host.ts", { CONTENDER: id });
      faces.push({ id, framework, wrapped, host, client: new LoadClient(host.ready.url) });
    }
  }
  return faces;
}

export async function closeFaces(faces: FaceHost[]): Promise<void> {
  for (const f of faces) {
    f.client.close();
    await f.host.close();
  }
}

export interface FaceThroughput {
  /** req/s per round. */
  rps: number[];
  /** Server CPU µs per request, per round. */
  cpu: number[];
  /** req/s ÷ the plain framework's req/s of the same round (1 for a plain one). */
  ratio: number[];
}

export const summary = (t: FaceThroughput) => ({ rps: median(t.rps), cpu: median(t.cpu), ratio: median(t.ratio) });

/** One load of `seconds` at `concurrency`, fresh keys; req/s and CPU µs per request. */
async function load(
  f: FaceHost,
  concurrency: number,
  seconds: number,
  keyOf: (i: number) => string,
): Promise<{ rps: number; cpu: number }> {
  const cpu0 = await f.host.call<number>("cpu");
  let done = 0;
  let next = 0;
  const started = performance.now();
  const deadline = started + seconds * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < deadline) {
        const i = next++;
        const reply = await f.client.send("/work", keyOf(i), body(i));
        if (reply.status !== 200) throw new Error(`${f.id}: status ${reply.status} ${reply.body}`);
        done++;
      }
    }),
  );
  const elapsed = (performance.now() - started) / 1000;
  const cpu1 = await f.host.call<number>("cpu");
  return { rps: done / elapsed, cpu: (cpu1 - cpu0) / done };
}

/** A warm-up round, then `rounds` rounds in which every face is loaded in turn from a rotating start. */
export async function faceThroughput(
  faces: FaceHost[],
  options: { rounds: number; seconds: number; concurrency: number; tag: string },
): Promise<FaceThroughput[]> {
  const out = faces.map((): FaceThroughput => ({ rps: [], cpu: [], ratio: [] }));
  const key = (round: number, index: number) => (i: number) => `${options.tag}-${round}-${index}-${i}`;
  for (const [index, f] of faces.entries()) await load(f, options.concurrency, options.seconds / 2, key(-1, index));
  for (let round = 0; round < options.rounds; round++) {
    for (let j = 0; j < faces.length; j++) {
      const index = (j + round) % faces.length;
      const r = await load(faces[index] as FaceHost, options.concurrency, options.seconds, key(round, index));
      (out[index] as FaceThroughput).rps.push(r.rps);
      (out[index] as FaceThroughput).cpu.push(r.cpu);
    }
  }
  for (const [index, f] of faces.entries()) {
    const plain = out[faces.findIndex((p) => p.framework === f.framework && !p.wrapped)];
    const t = out[index] as FaceThroughput;
    t.ratio = plain ? t.rps.map((v, i) => v / (plain.rps[i] as number)) : [];
  }
  return out;
}
