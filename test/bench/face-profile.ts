// `npx tsx test/bench/face-profile.ts node-idemfetch [seconds]`: a CPU profile of one face contender under c=32 load, summarised.
import { readdirSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { renderSummary, summarise } from "./cpu-profile.ts";
import type { FaceContender } from "./face-host.ts";
import { LoadClient, startHost } from "./lib.ts";

const id = (process.argv[2] ?? "node-idemfetch") as FaceContender;
const seconds = Number(process.argv[3] ?? 3);
const dir = `${tmpdir()}/idemfetch-face-prof-${process.pid}`;
const host = await startHost<{ url: string }>("./face-host.ts", { CONTENDER: id }, [
  "--cpu-prof",
  `--cpu-prof-dir=${dir}`,
]);
const client = new LoadClient(host.ready.url);
let next = 0;
const deadline = performance.now() + seconds * 1000;
await Promise.all(
  Array.from({ length: 32 }, async () => {
    while (performance.now() < deadline) {
      const i = next++;
      await client.send(
        "/work",
        `prof-${process.pid}-${i}`,
        JSON.stringify({ amount: 100, currency: "eur", order: i }),
      );
    }
  }),
);
client.close();
await host.close();
const file = readdirSync(dir)
  .map((f) => `${dir}/${f}`)
  .sort((a, b) => statSync(b).size - statSync(a).size)[0] as string; // the main thread, not tsx's loader worker
console.log(renderSummary(`${id}: ${next} requests in ${seconds} s`, summarise(file, 25)));
