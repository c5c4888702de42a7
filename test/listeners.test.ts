// keyedListeners(): the registry behind every store's subscribe(), on its own (the stores' suite covers it through them).
import { describe, expect, it } from "vitest";
import { keyedListeners } from "../src/listeners.ts";

const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

describe("keyedListeners", () => {
  it("calls onFirst and onLast once per key, however many subscriptions come and go", () => {
    const log: string[] = [];
    const listeners = keyedListeners({ onFirst: (k) => log.push(`first ${k}`), onLast: (k) => log.push(`last ${k}`) });
    const fn = () => {};
    const offA = listeners.add("a", fn);
    const offB = listeners.add("a", fn);
    const offC = listeners.add("b", fn);
    offA();
    offA();
    expect(listeners.has("a")).toBe(true);
    offB();
    offC();
    expect(log).toEqual(["first a", "first b", "last a", "last b"]);
    expect([...listeners.keys()]).toEqual([]);
  });

  it("wakes later, in order, skips what was unsubscribed since, and survives a throwing listener", async () => {
    const listeners = keyedListeners();
    const calls: string[] = [];
    listeners.add("k", () => {
      throw new Error("listener failure");
    });
    listeners.add("k", () => calls.push("one"));
    const offTwo = listeners.add("k", () => calls.push("two"));
    listeners.add("other", () => calls.push("other"));
    listeners.notify("k");
    expect(calls).toEqual([]);
    offTwo();
    await tick();
    expect(calls).toEqual(["one"]);
  });

  it("clear drops every subscription, including notifications in flight", async () => {
    const listeners = keyedListeners();
    let calls = 0;
    listeners.add("k", () => calls++);
    listeners.notify("k");
    listeners.clear();
    listeners.notify("k");
    await tick();
    expect(calls).toBe(0);
    expect(listeners.has("k")).toBe(false);
  });
});
