// `npm run demo:two`: the demo twice, as two processes on one Redis (REDIS_URL, default redis://127.0.0.1:6379),
// on PORT and PORT + 1 (default 8000 and 8001): a streaming duplicate sent to the second gets the first one's
// tokens live while it generates them.
import { type ChildProcess, spawn } from "node:child_process";

const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
const base = Number(process.env.PORT ?? 8000);
const ports = [base, base + 1];
let ready = 0;
const children: ChildProcess[] = ports.map((port, i) => {
  const child = spawn(process.execPath, ["--import", "tsx", new URL("./main.ts", import.meta.url).pathname], {
    env: { ...process.env, REDIS_URL: redisUrl, PORT: String(port) },
    stdio: ["ignore", "pipe", "inherit"],
  });
  const name = "AB"[i] as string;
  child.stdout?.on("data", (data: Buffer) => {
    for (const line of data.toString().split("\n").filter(Boolean)) {
      console.log(`[${name}] ${line}`);
      if (line.startsWith("idemfetch demo on ") && ++ready === ports.length) tryThis();
    }
  });
  child.once("exit", (code) => {
    console.log(`[${name}] exited (${code})`);
    stop(code ?? 1);
  });
  return child;
});

const body = `'{"target": "mock", "stream": true, "messages": [{"role": "user", "content": "Count to 5"}]}'`;
function tryThis(): void {
  const chat = (port: number) =>
    `curl -N -X POST http://127.0.0.1:${port}/proxy/llm -H "Idempotency-Key: $K" -d ${body}`;
  console.log(
    [
      "",
      `two processes on ${redisUrl.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@")}. One streaming call to A, the same (same key) to B while A streams:`,
      `  K=live-$(date +%s); ${chat(ports[0] as number)} & sleep 0.8; ${chat(ports[1] as number)}`,
      "B answers `Idempotent-Replayed: true`, its tokens arrive as A's do, and only A calls the model (see each /stats).",
    ].join("\n"),
  );
}

let stopping = false;
function stop(code: number): void {
  if (stopping) return;
  stopping = true;
  for (const child of children) if (child.exitCode === null) child.kill("SIGTERM");
  setTimeout(() => process.exit(code), 500);
}
process.once("SIGINT", () => stop(0));
process.once("SIGTERM", () => stop(0));
