// The shared deadline timer behind the store guard and the lease heartbeat.
import { describe, expect, it } from "vitest";
import { Deadlines } from "../src/deadlines.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("Deadlines", () => {
  it("fires each deadline once, no earlier than ms after it was added, in the order added", async () => {
    const d = new Deadlines(30, true);
    const fired: [string, number][] = [];
    const t0 = performance.now();
    d.add(() => fired.push(["a", performance.now() - t0]));
    await sleep(10);
    d.add(() => fired.push(["b", performance.now() - t0]));
    await sleep(60);
    expect(fired.map(([name]) => name)).toEqual(["a", "b"]);
    expect(fired[0]?.[1]).toBeGreaterThanOrEqual(29);
    expect(fired[1]?.[1]).toBeGreaterThanOrEqual(39);
  });

  it("a cancelled deadline never fires; the ones behind it still do", async () => {
    const d = new Deadlines(20, true);
    const fired: string[] = [];
    const a = d.add(() => fired.push("a"));
    d.add(() => fired.push("b"));
    d.cancel(a);
    d.cancel(a);
    await sleep(50);
    expect(fired).toEqual(["b"]);
  });

  it("a deadline added while others fire (a heartbeat renewing itself) keeps its own time", async () => {
    const d = new Deadlines(15, false);
    let beats = 0;
    const beat = () => {
      d.add(() => {
        beats++;
        if (beats < 3) beat();
      });
    };
    beat();
    await sleep(150);
    expect(beats).toBe(3);
  });

  it("many settled deadlines leave nothing behind to fire", async () => {
    const d = new Deadlines(20, true);
    let fired = 0;
    for (let i = 0; i < 5000; i++) d.cancel(d.add(() => fired++));
    const last = d.add(() => fired++);
    await sleep(50);
    expect(fired).toBe(1);
    d.cancel(last);
  });
});
