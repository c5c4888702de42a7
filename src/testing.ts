// idemfetch/testing: testStore(), the conformance suite every IdempotencyStore passes, on any test runner.
import { encodeRecord, isStoredRecord } from "./record.ts";
import { type AcquireResult, type IdempotencyStore, newToken, type StoredRecord } from "./store.ts";

/** The test runner's functions the suite registers itself with (vitest, jest and node:test shapes fit). */
export interface TestApi {
  /** Groups tests under a title. */
  describe(name: string, body: () => void): unknown;
  /** One test; `fn` rejects to fail. */
  it(name: string, fn: () => Promise<void>): unknown;
  /** Runs once before the group's tests (node:test calls it `before`). */
  beforeAll(fn: () => Promise<void>): unknown;
  /** Runs once after the group's tests (node:test calls it `after`). */
  afterAll(fn: () => Promise<void>): unknown;
  /** Registers a test the runner reports as skipped. Default: `it.skip` (vitest, jest, node:test). */
  skip?(name: string, fn: () => Promise<void>): unknown;
}

/**
 * How the suite runs against one store. The runner's functions default to globals of the same names
 * (vitest with `globals: true`, jest); else pass them: vitest's directly, `nodeTestApi(await import("node:test"))`,
 * or `denoTestApi(Deno.test)`.
 */
export interface TestStoreOptions extends Partial<TestApi> {
  /** Puts `value` at `storeKey` exactly as the backend holds it, bypassing the store: enables the corruption tests. */
  writeRaw?: (storeKey: string, value: string) => Promise<void>;
  /** Runs after the suite (after `store.close()`), e.g. to delete the keys it wrote. */
  cleanup?: (store: IdempotencyStore) => Promise<void>;
  /** Every store key the suite uses starts with this. Default: "idemfetch-conformance:<random>:". */
  keyPrefix?: string;
  /**
   * Whether the store has `subscribe`. Default true: its wake-up tests run, and fail on a store without it.
   * false: the store has none (its waiters poll): those tests are reported as skipped, and the suite checks
   * instead that the store indeed has no `subscribe` and that a polling waiter sees each change at once.
   */
  subscribe?: boolean;
}

/** Short real timings: the suite also runs against Redis over the network, so every wait has a margin of 100+ ms. */
const SHORT_LEASE_MS = 150;
const LONG_MS = 30_000;

/** Values a store may find at a key that it did not write: other formats, other libraries, truncation. */
const CORRUPT_VALUES = [
  "",
  "garbage",
  "null",
  '{"some":"other library"}',
  '{"v":1,"s":200',
  "L",
  "Lno-separator",
  "R",
  "R{}",
  'R{"v":1,"s":200',
  'R{"v":999,"s":200,"t":"OK","h":[],"b":"","c":1,"f":"x"}',
  'R{"v":1,"s":200,"t":"OK","h":[],"b":"not base64!","c":1,"f":"x"}',
];

/**
 * Registers the store contract's tests for the store `makeStore` makes (once, before the tests; closed after).
 * Keys are unique per run, so the suite can share a backend with other runs.
 */
export function testStore(
  name: string,
  makeStore: () => Promise<IdempotencyStore> | IdempotencyStore,
  options: TestStoreOptions = {},
): void {
  const { describe, it, beforeAll, afterAll, skip } = testApi(options);
  describe(`store contract: ${name}`, () => {
    let store: IdempotencyStore;
    // Unique per run, so the suite can share a Redis with other runs and other suites.
    const base = options.keyPrefix ?? `idemfetch-conformance:${newToken().slice(0, 12)}:`;
    let counter = 0;
    const key = (): string => `${base}${++counter}`;

    beforeAll(async () => {
      store = await makeStore();
    });
    afterAll(async () => {
      await store?.close?.();
      await options.cleanup?.(store);
    });

    const acquired = async (storeKey: string, fingerprint = "fp-a", leaseMs = LONG_MS): Promise<string> => {
      const result = await store.acquire(storeKey, fingerprint, leaseMs);
      like(result, { state: "acquired" });
      return (result as Extract<AcquireResult, { state: "acquired" }>).token;
    };
    const done = async (storeKey: string, fingerprint = "fp-a"): Promise<StoredRecord> => {
      const result = await store.acquire(storeKey, fingerprint, LONG_MS);
      equal(result.state, "done");
      const found = (result as Extract<AcquireResult, { state: "done" }>).record;
      check(isStoredRecord(found), `done holds no valid StoredRecord: ${show(found)}`);
      return found;
    };
    const expectPending = async (storeKey: string, holderFingerprint: string): Promise<void> => {
      equal(await store.acquire(storeKey, "fp-probe", LONG_MS), { state: "pending", fingerprint: holderFingerprint });
    };

    it("acquire on an empty key returns acquired with a token", async () => {
      const result = await store.acquire(key(), "fp-a", LONG_MS);
      equal(result.state, "acquired");
      const { token, replacedCorrupt } = result as Extract<AcquireResult, { state: "acquired" }>;
      equal(typeof token, "string");
      check(token.length >= 16, `token ${token} is shorter than 16 characters`);
      check(replacedCorrupt !== true, "replacedCorrupt on an empty key");
    });

    it("every acquire gets a new token", async () => {
      const k = key();
      const first = await acquired(k);
      const other = await acquired(key());
      equal(await store.release(k, first), true);
      const second = await acquired(k);
      equal(new Set([first, other, second]).size, 3);
    });

    it("pending reports the lease holder's fingerprint", async () => {
      const k = key();
      await acquired(k, "fp-holder");
      equal(await store.acquire(k, "fp-other", LONG_MS), { state: "pending", fingerprint: "fp-holder" });
      // The holder's own fingerprint does not get a second lease either.
      equal(await store.acquire(k, "fp-holder", LONG_MS), { state: "pending", fingerprint: "fp-holder" });
    });

    it("fingerprints with separators and unicode round-trip through a lease", async () => {
      const k = key();
      const fingerprint = 'a:b:c "quoted" \\ ünïcode ✓ 😀 L R';
      await acquired(k, fingerprint);
      await expectPending(k, fingerprint);
    });

    it("of 50 concurrent acquires exactly one is acquired", async () => {
      const k = key();
      const results = await Promise.all(Array.from({ length: 50 }, (_, i) => store.acquire(k, `fp-${i}`, LONG_MS)));
      const winners = results.flatMap((r, i) => (r.state === "acquired" ? [i] : []));
      equal(winners.length, 1);
      const winner = `fp-${winners[0]}`;
      for (const r of results) if (r.state !== "acquired") equal(r, { state: "pending", fingerprint: winner });
    });

    it("commit with the owner token stores the record and acquire returns done", async () => {
      const k = key();
      const token = await acquired(k);
      const rec = record();
      equal(await store.commit(k, token, rec, LONG_MS), true);
      expectSameRecord(await done(k), rec);
    });

    it("done returns the record regardless of the asker's fingerprint", async () => {
      const k = key();
      const token = await acquired(k, "fp-first");
      equal(await store.commit(k, token, record({ fingerprint: "fp-first" }), LONG_MS), true);
      const result = await store.acquire(k, "fp-someone-else", LONG_MS);
      equal(result.state, "done");
      equal((result as Extract<AcquireResult, { state: "done" }>).record.fingerprint, "fp-first");
    });

    it("commit with a stale token changes nothing and returns false", async () => {
      const k = key();
      const stale = await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      const current = await acquired(k, "fp-b");
      equal(await store.commit(k, stale, record({ fingerprint: "fp-a" }), LONG_MS), false);
      await expectPending(k, "fp-b");
      equal(await store.commit(k, current, record({ fingerprint: "fp-b" }), LONG_MS), true);
      equal((await done(k)).fingerprint, "fp-b");
    });

    it("commit with a token that never held the key returns false and stores nothing", async () => {
      const empty = key();
      equal(await store.commit(empty, newToken(), record(), LONG_MS), false);
      await acquired(empty); // still empty
      const leased = key();
      await acquired(leased, "fp-holder");
      equal(await store.commit(leased, newToken(), record(), LONG_MS), false);
      await expectPending(leased, "fp-holder");
    });

    it("commit after the lease expired returns false and stores nothing", async () => {
      const k = key();
      const token = await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      equal(await store.commit(k, token, record(), LONG_MS), false);
      await acquired(k);
    });

    it("a token commits at most once", async () => {
      const k = key();
      const token = await acquired(k);
      const first = record({ statusText: "First" });
      equal(await store.commit(k, token, first, LONG_MS), true);
      equal(await store.commit(k, token, record({ statusText: "Second" }), LONG_MS), false);
      expectSameRecord(await done(k), first);
    });

    it("release with the owner token frees the key", async () => {
      const k = key();
      const token = await acquired(k);
      equal(await store.release(k, token), true);
      const next = await acquired(k, "fp-b");
      check(next !== token, "a new lease got the old token");
    });

    it("release with another token changes nothing and returns false", async () => {
      const k = key();
      await acquired(k, "fp-holder");
      equal(await store.release(k, newToken()), false);
      await expectPending(k, "fp-holder");
      equal(await store.release(key(), newToken()), false); // empty key
    });

    it("release after commit returns false and keeps the record", async () => {
      const k = key();
      const token = await acquired(k);
      const rec = record();
      equal(await store.commit(k, token, rec, LONG_MS), true);
      equal(await store.release(k, token), false);
      expectSameRecord(await done(k), rec);
    });

    it("renew extends only the owner's live lease", async () => {
      const k = key();
      const token = await acquired(k, "fp-holder", 300);
      await sleep(100);
      equal(await store.renew(k, newToken(), LONG_MS), false);
      equal(await store.renew(k, token, 600), true); // now until ~t=700
      await sleep(300); // ~t=400: past the original 300 ms
      await expectPending(k, "fp-holder");
      await sleep(450); // ~t=850: past the renewed lease, counted from the renew and not added to the rest
      await acquired(k, "fp-next");
    });

    it("renew after the lease expired returns false and the key stays free", async () => {
      const k = key();
      const token = await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      equal(await store.renew(k, token, LONG_MS), false);
      await acquired(k, "fp-b");
    });

    it("renew on a record returns false and keeps the record", async () => {
      const k = key();
      const token = await acquired(k);
      const rec = record();
      equal(await store.commit(k, token, rec, LONG_MS), true);
      equal(await store.renew(k, token, LONG_MS), false);
      expectSameRecord(await done(k), rec);
    });

    it("a record expires after its ttl", async () => {
      const k = key();
      const token = await acquired(k);
      equal(await store.commit(k, token, record(), 250), true);
      await done(k);
      await sleep(400);
      await acquired(k);
    });

    it("a record lives for its ttl, not for the lease it replaced", async () => {
      const k = key();
      const token = await acquired(k, "fp-a", SHORT_LEASE_MS);
      equal(await store.commit(k, token, record(), LONG_MS), true);
      await sleep(SHORT_LEASE_MS + 150);
      await done(k);
    });

    it("a lease expires after leaseMs and the key can be acquired again", async () => {
      const k = key();
      await acquired(k, "fp-a", 250);
      await expectPending(k, "fp-a");
      await sleep(400);
      await acquired(k, "fp-b");
    });

    it("records round-trip byte-exact: binary body (all 256 byte values)", async () => {
      const body = new Uint8Array(512);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7) % 256; // every value, not in order
      const rec = record({ body, headers: [["content-type", "application/octet-stream"]] });
      await roundTrip(rec);
    });

    it("records round-trip byte-exact: 5 MiB body", async () => {
      const body = new Uint8Array(5 * 1024 * 1024);
      for (let i = 0; i < body.length; i += 65_536) crypto.getRandomValues(body.subarray(i, i + 65_536));
      await roundTrip(record({ body }), 10_000);
    });

    it("records round-trip byte-exact: empty body", async () => {
      await roundTrip(record({ status: 204, statusText: "No Content", headers: [], body: new Uint8Array(0) }));
    });

    it("records round-trip byte-exact: unicode headers, status text and fingerprint", async () => {
      await roundTrip(
        record({
          status: 201,
          statusText: "Créé ✓",
          headers: [
            ["x-title", "naïve café ✓ 日本語 😀"],
            ["x-quoted", 'a "quoted" \\ value\twith tab'],
            ["x-empty", ""],
          ],
          fingerprint: "ƒingerprint ✓ 😀",
          createdAt: 1_767_225_600_123,
        }),
      );
    });

    it("records round-trip byte-exact: multiple set-cookie headers in order", async () => {
      await roundTrip(
        record({
          headers: [
            ["set-cookie", "a=1; Path=/"],
            ["content-type", "text/plain"],
            ["set-cookie", "b=2; HttpOnly; Expires=Wed, 21 Oct 2026 07:28:00 GMT"],
            ["set-cookie", "c=3"],
          ],
        }),
      );
    });

    it("the store shares no mutable bytes with its callers", async () => {
      const views: [string, Uint8Array][] = [["a Uint8Array", bytes("original")]];
      // A Node Buffer's slice() is a view, not a copy.
      const { Buffer } = globalThis as { Buffer?: { from(text: string): Uint8Array } };
      if (Buffer) views.push(["a Buffer", Buffer.from("original")]);
      for (const [label, body] of views) {
        const k = key();
        const token = await acquired(k);
        const rec = record({ body });
        equal(await store.commit(k, token, rec, LONG_MS), true);
        rec.body[0] = 0;
        rec.headers[0]![1] = "changed";
        const first = await done(k);
        equal({ label, body: text(first.body) }, { label, body: "original" });
        equal(first.headers[0]![1], "application/json");
        first.body[0] = 0;
        first.headers[0]![1] = "changed";
        equal({ label, body: text((await done(k)).body) }, { label, body: "original" });
      }
    });

    it("keys are independent", async () => {
      const a = key();
      const b = key();
      const tokenA = await acquired(a, "fp-a");
      const tokenB = await acquired(b, "fp-b"); // a's lease does not cover b
      equal(await store.commit(b, tokenA, record(), LONG_MS), false);
      equal(await store.release(b, tokenA), false);
      equal(await store.renew(b, tokenA, LONG_MS), false);
      equal(await store.commit(a, tokenA, record({ fingerprint: "fp-a" }), LONG_MS), true);
      await expectPending(b, "fp-b");
      equal(await store.release(b, tokenB), true);
      equal((await done(a)).fingerprint, "fp-a");
      await acquired(b);
    });

    if (options.writeRaw) {
      const writeRaw = options.writeRaw;

      it("a corrupted stored value is treated as absent and acquire overwrites it (replacedCorrupt: true)", async () => {
        const values = [
          ...CORRUPT_VALUES,
          encodeRecord(record()).slice(0, 60),
          `R${encodeRecord(record()).slice(0, 60)}`,
        ];
        for (const value of values) {
          const k = key();
          await writeRaw(k, value);
          const result = await store.acquire(k, "fp-a", LONG_MS);
          like({ value, result }, { value, result: { state: "acquired", replacedCorrupt: true } });
          const token = (result as Extract<AcquireResult, { state: "acquired" }>).token;
          await expectPending(k, "fp-a"); // a real lease now
          equal(await store.commit(k, token, record(), LONG_MS), true);
          await done(k);
        }
      });

      it("commit, release and renew on a corrupted value return false", async () => {
        for (const value of ["garbage", "Lno-separator", 'R{"v":999}']) {
          const k = key();
          await writeRaw(k, value);
          equal(await store.commit(k, newToken(), record(), LONG_MS), false);
          equal(await store.release(k, newToken()), false);
          equal(await store.renew(k, newToken(), LONG_MS), false);
        }
      });
    }

    const subscribable = (): Required<Pick<IdempotencyStore, "subscribe">> => {
      check(
        typeof store.subscribe === "function",
        "the store has no subscribe; pass { subscribe: false } to testStore if its waiters poll",
      );
      return store as Required<Pick<IdempotencyStore, "subscribe">>;
    };
    // Declared, not detected: the store is made in beforeAll, after the tests are registered, and a store
    // whose subscribe went missing must fail, not pass 8 tests that check nothing.
    const itSubscribe = (title: string, fn: () => Promise<void>) =>
      options.subscribe === false ? skip(`${title} (skipped: the store has no subscribe)`, fn) : it(title, fn);

    if (options.subscribe === false) {
      it("has no subscribe, as declared (its waiters poll)", async () => {
        equal(typeof store.subscribe, "undefined", "typeof store.subscribe");
      });

      it("without subscribe, a polling waiter sees a commit, a release and a forget on its next acquire", async () => {
        const k = key();
        const token = await acquired(k, "fp-a");
        await expectPending(k, "fp-a"); // the waiter's poll
        equal(await store.commit(k, token, record(), LONG_MS), true);
        await done(k); // the very next poll: no delay, no notification needed
        const released = key();
        equal(await store.release(released, await acquired(released, "fp-a")), true);
        await acquired(released, "fp-b");
        equal(await store.forget(released, true), "forgotten");
        await acquired(released, "fp-c");
      });
    }

    itSubscribe("subscribe wakes on commit and on release", async () => {
      const committed = key();
      const released = key();
      const onCommit = callCounter();
      const onRelease = callCounter();
      const offCommit = subscribable().subscribe(committed, onCommit.fn);
      const offRelease = subscribable().subscribe(released, onRelease.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      const t1 = await acquired(committed);
      const t2 = await acquired(released);
      equal(onCommit.calls + onRelease.calls, 0); // a new lease wakes no one
      equal(await store.commit(committed, t1, record(), LONG_MS), true);
      await onCommit.reached(1);
      equal(await store.release(released, t2), true);
      await onRelease.reached(1);
      offCommit();
      offRelease();
    });

    itSubscribe("subscribe is per key and unsubscribe stops notifications", async () => {
      const k = key();
      const other = key();
      const kept = callCounter();
      const dropped = callCounter();
      const onOther = callCounter();
      const offKept = subscribable().subscribe(k, kept.fn);
      const offDropped = subscribable().subscribe(k, dropped.fn);
      const offOther = subscribable().subscribe(other, onOther.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      offDropped();
      const token = await acquired(k);
      equal(await store.commit(k, token, record(), LONG_MS), true);
      await kept.reached(1);
      await sleep(100); // anything else in flight arrives by now
      equal(dropped.calls, 0);
      equal(onOther.calls, 0);
      offKept();
      offOther();
    });

    itSubscribe("a stale commit or release wakes no one", async () => {
      const k = key();
      const woken = callCounter();
      const off = subscribable().subscribe(k, woken.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      await acquired(k);
      equal(await store.commit(k, newToken(), record(), LONG_MS), false);
      equal(await store.release(k, newToken()), false);
      await sleep(150);
      equal(woken.calls, 0);
      off();
    });

    itSubscribe("notifications are asynchronous: never inside the commit or release call", async () => {
      const k = key();
      const woken = callCounter();
      const off = subscribable().subscribe(k, woken.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      const first = await acquired(k);
      const committing = store.commit(k, first, record(), LONG_MS);
      equal(woken.calls, 0, "wake-ups during the commit call");
      equal(await committing, true);
      await woken.reached(1);
      const k2 = key();
      const off2 = subscribable().subscribe(k2, woken.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      const releasing = store.release(k2, await acquired(k2));
      equal(woken.calls, 1, "wake-ups during the release call");
      equal(await releasing, true);
      await woken.reached(2);
      off();
      off2();
    });

    itSubscribe(
      "each subscription is separate: the same function twice is woken twice, one unsubscribe leaves the other",
      async () => {
        const k = key();
        const woken = callCounter();
        const offFirst = subscribable().subscribe(k, woken.fn);
        const offSecond = subscribable().subscribe(k, woken.fn);
        await sleep(SUBSCRIBE_SETTLE_MS);
        equal(await store.commit(k, await acquired(k), record(), LONG_MS), true);
        await woken.reached(2);
        const k2 = key();
        const offThird = subscribable().subscribe(k2, woken.fn);
        const offFourth = subscribable().subscribe(k2, woken.fn);
        await sleep(SUBSCRIBE_SETTLE_MS);
        offThird();
        offThird(); // idempotent: does not remove the other subscription
        equal(await store.commit(k2, await acquired(k2), record(), LONG_MS), true);
        await woken.reached(3);
        await sleep(100);
        equal(woken.calls, 3);
        offFirst();
        offFourth();
        offSecond();
      },
    );

    itSubscribe("a throwing listener does not keep the others from waking", async () => {
      const k = key();
      const woken = callCounter();
      const offThrowing = subscribable().subscribe(k, () => {
        throw new Error("listener failure (expected by the test)");
      });
      const off = subscribable().subscribe(k, woken.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      equal(await store.commit(k, await acquired(k), record(), LONG_MS), true);
      await woken.reached(1);
      offThrowing();
      off();
    });

    itSubscribe("a stale commit or release after the lease changed hands wakes no one", async () => {
      const k = key();
      const woken = callCounter();
      const off = subscribable().subscribe(k, woken.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      const stale = await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      await acquired(k, "fp-b");
      equal(await store.commit(k, stale, record(), LONG_MS), false);
      equal(await store.release(k, stale), false);
      await sleep(150);
      equal(woken.calls, 0);
      off();
    });

    itSubscribe("forget wakes subscribers when it removed something", async () => {
      const k = key();
      const woken = callCounter();
      const off = subscribable().subscribe(k, woken.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      const token = await acquired(k);
      equal(await store.forget(k, true), "forgotten"); // a forced lease
      await woken.reached(1);
      equal(await store.commit(k, token, record(), LONG_MS), false);
      equal(await store.commit(k, await acquired(k), record(), LONG_MS), true);
      await woken.reached(2);
      equal(await store.forget(k, false), "forgotten"); // a record
      await woken.reached(3);
      await acquired(k);
      equal(await store.forget(k, false), "in-progress");
      equal(await store.forget(k, false), "in-progress");
      await sleep(150);
      equal(woken.calls, 3, "wake-ups after a forget that removed nothing");
      off();
    });

    it("forget removes a record: 'forgotten', and the next acquire is acquired", async () => {
      const k = key();
      equal(await store.commit(k, await acquired(k), record(), LONG_MS), true);
      equal(await store.forget(k, false), "forgotten");
      await acquired(k, "fp-next");
      const forced = key();
      equal(await store.commit(forced, await acquired(forced), record(), LONG_MS), true);
      equal(await store.forget(forced, true), "forgotten");
      await acquired(forced);
    });

    it("forget on an empty or expired key is 'absent'", async () => {
      equal(await store.forget(key(), false), "absent");
      equal(await store.forget(key(), true), "absent");
      const k = key();
      await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      equal(await store.forget(k, false), "absent");
      await acquired(k);
    });

    it("forget leaves a live lease in place ('in-progress'); its owner still commits", async () => {
      const k = key();
      const token = await acquired(k, "fp-holder");
      equal(await store.forget(k, false), "in-progress");
      await expectPending(k, "fp-holder");
      equal(await store.commit(k, token, record({ fingerprint: "fp-holder" }), LONG_MS), true);
      equal((await done(k)).fingerprint, "fp-holder");
    });

    it("forget with force removes a live lease: 'forgotten', and the old owner's commit, release and renew return false", async () => {
      const k = key();
      const token = await acquired(k, "fp-holder");
      equal(await store.forget(k, true), "forgotten");
      equal(await store.commit(k, token, record(), LONG_MS), false);
      equal(await store.renew(k, token, LONG_MS), false);
      equal(await store.release(k, token), false);
      const next = await acquired(k, "fp-next");
      equal(await store.commit(k, token, record(), LONG_MS), false); // not the new owner's either
      await expectPending(k, "fp-next");
      equal(await store.release(k, next), true);
    });

    async function roundTrip(rec: StoredRecord, ttlMs = LONG_MS): Promise<void> {
      const k = key();
      const token = await acquired(k);
      equal(await store.commit(k, token, rec, ttlMs), true);
      expectSameRecord(await done(k), rec);
    }
  });
}

/** A subscription over the network (Redis SUBSCRIBE) takes effect a moment after subscribe() returns. */
const SUBSCRIBE_SETTLE_MS = 150;

function record(overrides: Partial<StoredRecord> = {}): StoredRecord {
  return {
    status: 200,
    statusText: "OK",
    headers: [
      ["content-type", "application/json"],
      ["x-request-id", "r-1"],
    ],
    body: bytes('{"ok":true}'),
    createdAt: 1_767_225_600_000,
    fingerprint: "fp-a",
    ...overrides,
  };
}

/** Compares field by field; the body byte by byte (a generic deep-equal on 5 MiB is very slow). */
function expectSameRecord(actual: StoredRecord, expected: StoredRecord): void {
  const { body: got, ...gotRest } = actual;
  const { body: want, ...wantRest } = expected;
  equal(gotRest, wantRest);
  equal(Object.prototype.toString.call(got), "[object Uint8Array]");
  equal(got.byteLength, want.byteLength);
  let firstDifference = -1;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      firstDifference = i;
      break;
    }
  }
  equal(firstDifference, -1, "first differing byte");
}

function callCounter(): {
  fn: () => void;
  readonly calls: number;
  reached(n: number, withinMs?: number): Promise<void>;
} {
  let calls = 0;
  return {
    fn: () => {
      calls++;
    },
    get calls() {
      return calls;
    },
    async reached(n, withinMs = 2000) {
      const until = Date.now() + withinMs;
      while (calls < n && Date.now() < until) await sleep(10);
      check(calls >= n, `expected ${n} wake-ups within ${withinMs} ms, got ${calls}`);
    },
  };
}

function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

function text(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** The runner's functions: the ones passed in, else globals of the same names. */
function testApi(options: Partial<TestApi>): Required<TestApi> {
  const globals = globalThis as Partial<TestApi>;
  const pick = <K extends keyof TestApi>(name: K): NonNullable<TestApi[K]> => {
    const fn = options[name] ?? globals[name];
    if (typeof fn !== "function") {
      throw new TypeError(
        `testStore: no ${name} function; pass { describe, it, beforeAll, afterAll } from your test runner`,
      );
    }
    return fn as NonNullable<TestApi[K]>;
  };
  const it = pick("it");
  const skip = options.skip ?? (it as { skip?: TestApi["skip"] }).skip;
  if (typeof skip !== "function") {
    throw new TypeError("testStore: `it` has no `skip`; pass { skip } (a test the runner reports as skipped)");
  }
  return {
    describe: pick("describe"),
    it,
    beforeAll: pick("beforeAll"),
    afterAll: pick("afterAll"),
    skip: (name, fn) => skip.call(it, name, fn),
  };
}

/** node:test's functions as a TestApi: `testStore(name, make, { ...nodeTestApi(await import("node:test")) })`. */
export function nodeTestApi(nodeTest: {
  describe(name: string, fn: () => void): unknown;
  it(name: string, fn: () => Promise<void>): unknown;
  it(name: string, options: { skip: boolean }, fn: () => Promise<void>): unknown;
  before(fn: () => Promise<void>): unknown;
  after(fn: () => Promise<void>): unknown;
}): TestApi {
  return {
    describe: (name, body) => nodeTest.describe(name, body),
    it: (name, fn) => nodeTest.it(name, () => fn()),
    skip: (name, fn) => nodeTest.it(name, { skip: true }, () => fn()),
    beforeAll: (fn) => nodeTest.before(() => fn()),
    afterAll: (fn) => nodeTest.after(() => fn()),
  };
}

/** What `denoTestApi` needs of `Deno.test`. */
export type DenoTestLike = (definition: {
  name: string;
  fn: (t: {
    step(step: { name: string; fn: () => Promise<void>; ignore?: boolean }): Promise<boolean>;
  }) => Promise<void>;
  sanitizeOps?: boolean;
  sanitizeResources?: boolean;
}) => void;

/**
 * `Deno.test` as a TestApi: each top-level describe becomes one Deno test whose tests are steps, with the
 * group's beforeAll before the first and afterAll after the last. Deno's op and resource sanitizers are off:
 * a store's connections outlive single steps by design.
 */
export function denoTestApi(test: DenoTestLike): TestApi {
  interface Group {
    name: string;
    before: (() => Promise<void>)[];
    after: (() => Promise<void>)[];
    /** Title, body, and whether Deno reports it as ignored (skipped). */
    tests: [string, () => Promise<void>, boolean][];
  }
  let group: Group | undefined;
  const inGroup = (what: string): Group => {
    if (!group) throw new TypeError(`denoTestApi: ${what} must be inside describe()`);
    return group;
  };
  return {
    describe(name, body) {
      if (group) {
        // Nested: its tests join the enclosing Deno test under a longer title.
        const outer = group;
        const start = outer.tests.length;
        body();
        for (let i = start; i < outer.tests.length; i++) outer.tests[i]![0] = `${name} > ${outer.tests[i]![0]}`;
        return;
      }
      const current: Group = (group = { name, before: [], after: [], tests: [] });
      try {
        body();
      } finally {
        group = undefined;
      }
      test({
        name,
        sanitizeOps: false,
        sanitizeResources: false,
        async fn(t) {
          for (const fn of current.before) await fn();
          try {
            for (const [title, fn, ignore] of current.tests) await t.step({ name: title, fn, ignore });
          } finally {
            for (const fn of current.after) await fn();
          }
        },
      });
    },
    it: (name, fn) => void inGroup("it").tests.push([name, fn, false]),
    skip: (name, fn) => void inGroup("skip").tests.push([name, fn, true]),
    beforeAll: (fn) => void inGroup("beforeAll").before.push(fn),
    afterAll: (fn) => void inGroup("afterAll").after.push(fn),
  };
}

/** Fails with `message` unless `condition` holds. */
function check(condition: boolean, message: string): asserts condition {
  if (!condition) throw new StoreContractError(message);
}

/** Deep equality of plain data: primitives, arrays, plain objects, Uint8Arrays. */
function equal(actual: unknown, expected: unknown, what = "value"): void {
  if (!same(actual, expected, false)) {
    throw new StoreContractError(`${what}: expected ${show(expected)}, got ${show(actual)}`);
  }
}

/** Like `equal`, but objects in `actual` may have keys `pattern` does not mention. */
function like(actual: unknown, pattern: unknown, what = "value"): void {
  if (!same(actual, pattern, true))
    throw new StoreContractError(`${what}: expected ${show(actual)} to match ${show(pattern)}`);
}

function same(a: unknown, b: unknown, partial: boolean): boolean {
  if (Object.is(a, b)) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (a instanceof Uint8Array || b instanceof Uint8Array) {
    if (!(a instanceof Uint8Array && b instanceof Uint8Array) || a.length !== b.length) return false;
    return a.every((byte, i) => byte === b[i]);
  }
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  const ak = Object.keys(a).filter((k) => (a as Record<string, unknown>)[k] !== undefined);
  const bk = Object.keys(b).filter((k) => (b as Record<string, unknown>)[k] !== undefined);
  if (!partial && ak.length !== bk.length) return false;
  return bk.every((k) => same((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], partial));
}

function show(value: unknown): string {
  try {
    return JSON.stringify(value, (_, v) => (v instanceof Uint8Array ? `<${v.length} bytes>` : v)) ?? String(value);
  } catch {
    return String(value);
  }
}

/** A broken store contract; the message says which expectation failed. */
export class StoreContractError extends Error {
  override name: string = "StoreContractError";
}
