// `npx tsx test/bench/client-burst-micro.ts <checkout root>`: in-process client burst (1,000 identical calls of a 50 ms fetch) and replay cost, no network; compares two checkouts of the engine.
const root = process.argv[2];
const { createIdempotentFetch } = await import(`${root}/src/fetch.ts`);
const f = createIdempotentFetch({
  fetch: async () => {
    await new Promise((r) => setTimeout(r, 50));
    return new Response('{"ok":true}', { headers: { "content-type": "application/json" } });
  },
});
const init = (k: string) => ({
  method: "POST",
  headers: { "content-type": "application/json", "idempotency-key": k },
  body: '{"a":1}',
});
const runs: number[] = [];
for (let r = 0; r < 12; r++) {
  const t0 = performance.now();
  await (await f("http://x.test/a", init(`one-${r}`))).text();
  const one = performance.now() - t0;
  const t1 = performance.now();
  await Promise.all(
    Array.from({ length: 1000 }, () => f("http://x.test/a", init(`many-${r}`)).then((x: Response) => x.text())),
  );
  const many = performance.now() - t1;
  if (r >= 2) runs.push(((many - one) / 999) * 1000);
}
runs.sort((a, b) => a - b);
const replay: number[] = [];
for (let i = 0; i < 2000; i++) {
  const t = performance.now();
  await (await f("http://x.test/a", init("many-5"))).text();
  replay.push((performance.now() - t) * 1000);
}
replay.sort((a, b) => a - b);
console.log(
  root,
  "per extra caller µs",
  runs[Math.floor(runs.length / 2)]?.toFixed(1),
  "replay µs",
  replay[1000]?.toFixed(1),
);
