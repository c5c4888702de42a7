// liveWriter's pacing (issue 17): a part goes to the store at once unless one went within maxDelayMs; writes made
// while a part is in flight, or within maxDelayMs of the last one, go together as the next part.
import { describe, expect, it } from "vitest";
import { liveWriter } from "../src/live.ts";
import { liveMemoryStore } from "../src/memory-live.ts";
import type { LivePart, LiveStore } from "../src/store.ts";
import { sleep } from "./fixtures/util.ts";

const encoder = new TextEncoder();
const head = { status: 200, statusText: "OK", headers: [["content-type", "text/event-stream"]] as [string, string][] };

/** A live store whose publishes are recorded with when they were called; `delayMs` holds each one that long. */
async function leased(delayMs = 0) {
  const store = liveMemoryStore();
  const lease = await store.acquire("k", "fp", 10_000);
  if (lease.state !== "acquired") throw new Error("no lease");
  const parts: { at: number; part: LivePart }[] = [];
  const publish = store.publishLive.bind(store);
  const counted: LiveStore = {
    ...store,
    publishLive: async (key, token, part) => {
      parts.push({ at: performance.now(), part });
      if (delayMs > 0) await sleep(delayMs);
      return publish(key, token, part);
    },
  };
  return { store: counted, token: lease.token, parts };
}

describe("liveWriter pacing", () => {
  it("a write with nothing published within maxDelayMs goes at once, head included", async () => {
    const { store, token, parts } = await leased();
    const writer = liveWriter(store, "k", token, head, { maxDelayMs: 50 });
    const wrote = performance.now();
    writer.write(encoder.encode("a"));
    await sleep(5);
    expect(parts).toHaveLength(1);
    expect(parts[0]?.at as number).toBeLessThan(wrote + 5);
    expect(parts[0]?.part.head).toEqual(head);
    // Sparse writes (further apart than maxDelayMs) each go at once too.
    await sleep(60);
    const again = performance.now();
    writer.write(encoder.encode("b"));
    await sleep(5);
    expect(parts).toHaveLength(2);
    expect(parts[1]?.at as number).toBeLessThan(again + 5);
    expect(parts[1]?.part).toMatchObject({ offset: 1 });
    writer.close();
  });

  it("writes within maxDelayMs of the last part go together as one part, at most one part per maxDelayMs", async () => {
    const { store, token, parts } = await leased();
    const writer = liveWriter(store, "k", token, head, { maxDelayMs: 40 });
    const started = performance.now();
    for (let i = 0; i < 20; i++) {
      writer.write(encoder.encode(String(i % 10)));
      await sleep(5);
    }
    await writer.flush();
    const gaps = parts.slice(1).map((p, i) => p.at - (parts[i]?.at as number));
    // Timers fire a little early or late; the pacing is what matters: far fewer parts than writes.
    expect(parts.length).toBeLessThanOrEqual(Math.ceil((performance.now() - started) / 40) + 2);
    for (const gap of gaps.slice(0, -1)) expect(gap).toBeGreaterThanOrEqual(35);
    const bytes = parts.reduce((n, p) => n + p.part.body.length, 0);
    expect(bytes).toBe(20);
    expect(writer.published).toBe(20);
    writer.close();
  });

  it("writes made while a part is in flight wait for it and then go as one part, offsets exact", async () => {
    const { store, token, parts } = await leased(30);
    const writer = liveWriter(store, "k", token, head, { maxDelayMs: 1 });
    writer.write(encoder.encode("first"));
    await sleep(2); // "first" is in flight (held 30 ms); writes made in one tick go together anyway
    for (const word of ["x", "y", "z"]) writer.write(encoder.encode(word));
    await sleep(80);
    expect(parts.map((p) => [p.part.offset, new TextDecoder().decode(p.part.body)])).toEqual([
      [0, "first"],
      [5, "xyz"],
    ]);
    expect(await store.readLive("k", undefined, 0)).toMatchObject({ state: "live", body: encoder.encode("firstxyz") });
    writer.close();
  });

  it("close() resolves once the part in flight has settled, and drops what is queued", async () => {
    const { store, token, parts } = await leased(40);
    const writer = liveWriter(store, "k", token, head, { maxDelayMs: 1 });
    writer.write(encoder.encode("first"));
    await sleep(2);
    writer.write(encoder.encode("dropped"));
    const started = performance.now();
    await writer.close();
    expect(performance.now() - started).toBeGreaterThan(25);
    expect(writer.published).toBe(5);
    expect(parts).toHaveLength(1);
  });

  it("a writer closed before its first write and before maxDelayMs costs no store operation", async () => {
    const { store, token, parts } = await leased();
    const writer = liveWriter(store, "k", token, head, { maxDelayMs: 20 });
    writer.close();
    await sleep(40);
    expect(parts).toHaveLength(0);
  });

  it("with no write within maxDelayMs the head goes alone", async () => {
    const { store, token, parts } = await leased();
    const writer = liveWriter(store, "k", token, head, { maxDelayMs: 20 });
    await sleep(60);
    expect(parts).toHaveLength(1);
    expect(parts[0]?.part).toMatchObject({ head, offset: 0 });
    expect(parts[0]?.part.body).toHaveLength(0);
    writer.close();
  });
});
