// `npx tsx test/bench/faces.ts [--rounds=5] [--seconds=1] [--c=32] [--only=express,node]`: only the server faces
// (memory store) beside their plain framework, as `npm run bench` measures them: req/s ratio and CPU µs per request.
import { closeFaces, FRAMEWORKS, type Framework, faceThroughput, startFaces, summary } from "./face-workloads.ts";

const argv = process.argv.slice(2);
const flag = (name: string, fallback: string): string =>
  argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3) ?? fallback;
const frameworks = flag("only", FRAMEWORKS.join(",")).split(",") as Framework[];

const faces = await startFaces(frameworks);
try {
  const results = await faceThroughput(faces, {
    rounds: Number(flag("rounds", "5")),
    seconds: Number(flag("seconds", "1")),
    concurrency: Number(flag("c", "32")),
    tag: `faces-${process.pid}`,
  });
  console.log("| face | req/s | ÷ plain | CPU µs/req |");
  console.log("|---|---|---|---|");
  for (const [index, f] of faces.entries()) {
    const s = summary(results[index] as (typeof results)[number]);
    console.log(`| ${f.id} | ${s.rps.toFixed(0)} | ${s.ratio.toFixed(2)}× | ${s.cpu.toFixed(0)} |`);
  }
} finally {
  await closeFaces(faces);
}
