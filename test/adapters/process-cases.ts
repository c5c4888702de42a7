// Cases every store shared by processes passes, from its own processes test: one execution per key among four
// processes, and a leader killed with SIGKILL mid-request while another process waits on it.
import { expect, it } from "vitest";
import { newToken } from "../../src/store.ts";
import type { Worker } from "../fixtures/processes.ts";
import type { Upstream } from "../fixtures/upstream.ts";
import { sleep } from "../fixtures/util.ts";
import type { Outcome } from "../fixtures/worker.ts";

/** The store under test, in worker processes (test/fixtures/worker.ts) the test file spawns and exits. */
export interface ProcessStore {
  /** The upstream the workers call, reset before each test. */
  upstream(): Upstream;
  /** Spawns `k` workers on the store, with `extra` in their environment. */
  spawn(k: number, extra?: Record<string, string>): Promise<Worker[]>;
}

const decode = (o: Outcome | undefined) => JSON.parse(Buffer.from(o?.body ?? "", "base64").toString("utf8"));

/** Defines the cases, with the concurrent calls spread over `keys` keys. */
export function processCases(store: ProcessStore, keys = 1): void {
  it(`4 processes × 25 concurrent calls over ${keys} key(s): 1 execution per key, identical bytes; another body gets 409`, async () => {
    const up = store.upstream();
    const ws = await store.spawn(4);
    const calls = Array.from({ length: keys }, (_, i) => ({
      url: `${up.url}/echo?ms=200`,
      key: `same-${i}-${newToken()}`,
      body: '{"prompt":"hi"}',
    }));
    const plan = Array.from({ length: 25 }, (_, i) => calls[i % keys] as (typeof calls)[number]);
    const results = (await Promise.all(ws.map((w) => w.fire(plan)))).flat();
    expect(results.map((r) => r.status)).toEqual(Array(100).fill(200));
    for (const { key } of calls) {
      expect(up.keys.filter((k) => k === key)).toHaveLength(1);
      const bodies = results.filter((_, i) => plan[i % 25]?.key === key).map((r) => r.body);
      expect(new Set(bodies).size).toBe(1);
    }
    expect(up.count()).toBe(keys);
    const [other] = await (ws[2] as Worker).fire([{ ...(calls[0] as (typeof calls)[number]), body: '{"prompt":"x"}' }]);
    expect(other?.status).toBe(409);
    expect(decode(other).error.code).toBe("IDEMPOTENCY_CONFLICT");
    expect(up.count()).toBe(keys);
    await Promise.all(ws.map((w) => w.exit()));
  });

  it("kill -9 of the leader mid-request: nothing runs twice while its lease lives; a waiter takes over after it", async () => {
    const up = store.upstream();
    const [leader, waiter] = (await store.spawn(2, { LEASE_MS: "600" })) as [Worker, Worker];
    const call = { url: `${up.url}/echo?ms=3000`, key: `crash-${newToken()}`, body: "{}" };
    void leader.fire([call]);
    await leader.waitForEvent("execute");
    const waiting = waiter.fire([call]);
    await waiter.waitForEvent("wait");
    await sleep(1500); // 2.5 leases: the leader's heartbeat (renew) keeps its lease alive
    expect(up.count()).toBe(1);
    const killedAt = Date.now();
    leader.child.kill("SIGKILL");
    const [outcome] = await waiting;
    expect(outcome?.status).toBe(200);
    expect(decode(outcome).n).toBe(2);
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(3000); // the takeover ran the 3 s call itself
    expect(waiter.events).toContain("takeover");
    expect(up.count()).toBe(2);
    await Promise.all([leader.exit(), waiter.exit()]);
  });
}
