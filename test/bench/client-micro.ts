// Focused client runs while tuning (not the full bench): replay, burst cost per extra caller, miss vs raw fetch.
import { createIdempotentFetch } from "../../src/fetch.ts";
import { median, ms, startHost } from "./lib.ts";

const n = Number(process.argv.find((a) => a.startsWith("--n="))?.slice(4) ?? 400);
const upstream = await startHost<{ url: string }>("./upstream-host.ts");
const url = `${upstream.ready.url}/echo?ms=0`;
const f = createIdempotentFetch();
const post = (key: string, i: number): RequestInit => ({
  method: "POST",
  headers: { "content-type": "application/json", "idempotency-key": key },
  body: JSON.stringify({ model: "bench", prompt: `hello ${i}`, max_tokens: 16 }),
});
const time = async (run: () => Promise<Response>): Promise<number> => {
  const t = performance.now();
  await (await run()).arrayBuffer();
  return performance.now() - t;
};
const raw: number[] = [];
const miss: number[] = [];
for (let i = 0; i < n + 50; i++) {
  const a = await time(() => fetch(url, post(`r${i}`, i)));
  const b = await time(() => f(url, post(`k${i}`, i)));
  if (i >= 50) {
    raw.push(a);
    miss.push(b);
  }
}
const replay: number[] = [];
for (let i = 0; i < n; i++) replay.push(await time(() => f(url, post(`k${i + 50}`, i + 50))));
const burst = async (size: number, tag: string): Promise<number> => {
  const t = performance.now();
  await Promise.all(Array.from({ length: size }, () => f(url, post(tag, 0)).then((r) => r.arrayBuffer())));
  return performance.now() - t;
};
const ones: number[] = [];
const thousands: number[] = [];
for (let i = 0; i < 5; i++) {
  ones.push(await burst(1, `b1-${i}`));
  thousands.push(await burst(1000, `b1000-${i}`));
}
console.log(
  `raw fetch ${ms(median(raw))}; miss ${ms(median(miss))} (${(median(miss) / median(raw)).toFixed(3)}x); replay ${ms(median(replay))}; burst one ${ms(median(ones))} 1000 ${ms(median(thousands))} per extra caller ${(((median(thousands) - median(ones)) / 999) * 1000).toFixed(1)} µs`,
);
await upstream.close();
