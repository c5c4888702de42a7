// idemfetch/testing: testStore(), the conformance suite every IdempotencyStore passes, on any test runner.

import { followLive, isLiveStreamLostError, type LiveEvent, liveWriter } from "./live.ts";
import { encodeRecord, isStoredRecord } from "./record.ts";
import {
  type AcquireResult,
  hasLive,
  type IdempotencyStore,
  type LiveHead,
  type LiveRead,
  type LiveStore,
  newToken,
  type StoredRecord,
} from "./store.ts";

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
  /**
   * Whether the store has the live-stream capability (`publishLive`, `readLive`, and `subscribeLive` unless
   * `subscribe: false`). Default false: its tests are reported as skipped, and the suite checks instead that
   * the store has none of those methods.
   */
  live?: boolean;
  /** Whether the backend still holds chunk data (a head or body bytes) for `storeKey`: enables the checks that it is gone. */
  liveChunks?: (storeKey: string) => Promise<boolean>;
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

    // The live-stream capability (docs/protocol.md "The live-stream capability"): optional, so declared.
    const itLive = (title: string, fn: () => Promise<void>) =>
      options.live === true
        ? it(`live stream: ${title}`, fn)
        : skip(`live stream: ${title} (skipped: not declared)`, fn);
    const liveStore = (): LiveStore => {
      check(hasLive(store), "the store has no publishLive/readLive; pass { live: true } only for a store with them");
      return store as LiveStore;
    };
    const HEAD: LiveHead = {
      status: 200,
      statusText: "OK",
      headers: [
        ["content-type", "text/event-stream"],
        ["x-title", "naïve ✓"],
      ],
    };
    const publish = async (k: string, token: string, offset: number, body: string | Uint8Array, head?: LiveHead) =>
      liveStore().publishLive(k, token, {
        ...(head ? { head } : {}),
        offset,
        body: typeof body === "string" ? bytes(body) : body,
      });
    const readAll = async (
      events: AsyncGenerator<LiveEvent, void, undefined>,
      onEvent: (event: LiveEvent) => void = () => {},
    ): Promise<{ heads: number; body: string; end: string; error?: unknown }> => {
      let heads = 0;
      let body = "";
      try {
        for await (const event of events) {
          onEvent(event);
          if (event.type === "head") heads++;
          else if (event.type === "body") body += text(event.bytes);
          else return { heads, body, end: event.type === "done" ? `done:${text(event.record.body)}` : "absent" };
        }
        return { heads, body, end: "returned" };
      } catch (error) {
        return { heads, body, end: "error", error };
      }
    };
    const follow = (k: string) => followLive(liveStore(), k, { minPollMs: 10, maxPollMs: 100 });

    if (options.live !== true) {
      it("has no live-stream methods, as not declared", async () => {
        equal(
          [typeof store.publishLive, typeof store.readLive, typeof store.subscribeLive],
          ["undefined", "undefined", "undefined"],
          "typeof publishLive, readLive, subscribeLive (pass { live: true } to test them)",
        );
      });
    }

    itLive(
      "readLive: absent on an empty key, pending under a lease with no head, done without a stream on a plain commit",
      async () => {
        const k = key();
        equal(await liveStore().readLive(k, undefined, 0), { state: "absent" });
        const token = await acquired(k);
        equal(await liveStore().readLive(k, undefined, 0), { state: "pending" });
        const rec = record();
        equal(await store.commit(k, token, rec, LONG_MS), true);
        const read = await liveStore().readLive(k, undefined, 0);
        like(read, { state: "done" });
        check(read.state === "done" && read.stream === undefined, `a plain commit named a stream: ${show(read)}`);
        expectSameRecord((read as Extract<LiveRead, { state: "done" }>).record, rec);
      },
    );

    itLive("the head and body parts read back in order, from byte 0 or from an offset of the same stream", async () => {
      const k = key();
      const token = await acquired(k);
      equal(await publish(k, token, 0, "", HEAD), true);
      const first = await liveStore().readLive(k, undefined, 0);
      like(first, { state: "live", head: HEAD, body: bytes("") });
      const stream = (first as Extract<LiveRead, { state: "live" }>).stream;
      check(typeof stream === "string" && stream.length > 0, "live read without a stream id");
      check(!stream.includes(token), "the stream id reveals the lease token");
      equal(await publish(k, token, 0, "data: a\n\n"), true);
      equal(await publish(k, token, 9, "data: b\n\n"), true);
      equal(await publish(k, token, 18, "data: ✓\n\n"), true);
      equal(await liveStore().readLive(k, undefined, 0), {
        state: "live",
        stream,
        head: HEAD,
        body: bytes("data: a\n\ndata: b\n\ndata: ✓\n\n"),
      });
      equal(await liveStore().readLive(k, stream, 9), {
        state: "live",
        stream,
        head: HEAD,
        body: bytes("data: b\n\ndata: ✓\n\n"),
      });
      equal(await liveStore().readLive(k, stream, 29), { state: "live", stream, head: HEAD, body: bytes("") });
      // Another stream's offset means nothing here: from byte 0.
      equal(await liveStore().readLive(k, "some-other-stream", 9), {
        state: "live",
        stream,
        head: HEAD,
        body: bytes("data: a\n\ndata: b\n\ndata: ✓\n\n"),
      });
      equal(await store.release(k, token), true);
    });

    itLive("binary parts round-trip byte-exact (all 256 byte values, 1 MiB in 16 KiB parts)", async () => {
      const k = key();
      const token = await acquired(k);
      const body = new Uint8Array(1024 * 1024);
      for (let i = 0; i < body.length; i++) body[i] = (i * 7 + (i >> 8)) % 256;
      equal(await publish(k, token, 0, body.subarray(0, 16_384), HEAD), true);
      for (let at = 16_384; at < body.length; at += 16_384)
        equal(await publish(k, token, at, body.subarray(at, at + 16_384)), true);
      const read = await liveStore().readLive(k, undefined, 0);
      equal(read.state, "live");
      const got = (read as Extract<LiveRead, { state: "live" }>).body;
      equal(got.length, body.length, "bytes read");
      equal(
        got.findIndex((b, i) => b !== body[i]),
        -1,
        "first differing byte",
      );
      equal(await store.release(k, token), true);
    });

    itLive("a reader attached mid-stream gets every byte from 0, then the rest live, then the record", async () => {
      const k = key();
      const token = await acquired(k);
      equal(await publish(k, token, 0, "one,", HEAD), true);
      equal(await publish(k, token, 4, "two,"), true);
      const seen: string[] = [];
      const reading = readAll(follow(k), (event) => seen.push(event.type === "body" ? text(event.bytes) : event.type));
      await until(() => seen.join("").includes("one,two,"), "the reader got the bytes published before it came");
      equal(await publish(k, token, 8, "three,"), true);
      await until(
        () => seen.join("").includes("three,"),
        "the reader got a part published after it came, before the end",
      );
      equal(await publish(k, token, 14, "four"), true);
      equal(await store.commit(k, token, record({ body: bytes("one,two,three,four") }), LONG_MS), true);
      equal(await reading, { heads: 1, body: "one,two,three,four", end: "done:one,two,three,four" });
      equal(seen[0], "head");
    });

    itLive("two readers from byte 0 get identical bytes, and a complete read equals the record", async () => {
      const k = key();
      const token = await acquired(k);
      const readers = [readAll(follow(k)), readAll(follow(k))];
      await sleep(30);
      let offset = 0;
      let all = "";
      for (let i = 0; i < 20; i++) {
        const part = `data: token ${i}\n\n`;
        equal(await publish(k, token, offset, part, i === 0 ? HEAD : undefined), true);
        offset += bytes(part).length;
        all += part;
        if (i % 5 === 0) await sleep(5);
      }
      equal(await store.commit(k, token, record({ body: bytes(all) }), LONG_MS), true);
      for (const reading of readers) equal(await reading, { heads: 1, body: all, end: `done:${all}` });
    });

    itLive("publishLive under a stale token is refused: false, and nothing stored", async () => {
      const k = key();
      const stale = await acquired(k, "fp-a", SHORT_LEASE_MS);
      equal(await publish(k, stale, 0, "old,", HEAD), true);
      await sleep(SHORT_LEASE_MS + 150);
      equal(await publish(k, stale, 4, "late"), false, "a publish after the lease lapsed");
      equal(await liveStore().readLive(k, undefined, 0), { state: "absent" });
      const current = await acquired(k, "fp-b");
      equal(await publish(k, stale, 4, "late"), false, "a publish under the lapsed token");
      equal(await publish(k, stale, 0, "restart", HEAD), false, "a head under the lapsed token");
      equal(await liveStore().readLive(k, undefined, 0), { state: "pending" });
      equal(await publish(k, newToken(), 0, "never", HEAD), false, "a token that never held the key");
      equal(await publish(key(), newToken(), 0, "empty", HEAD), false, "an empty key");
      equal(await publish(k, current, 0, "new", HEAD), true);
      like(await liveStore().readLive(k, undefined, 0), { state: "live", body: bytes("new") });
      equal(await store.commit(k, current, record(), LONG_MS), true);
      equal(await publish(k, current, 3, "after"), false, "a publish after the commit");
    });

    itLive(
      "a gap and a body part before the head reject; the part last stored, sent again, is stored once",
      async () => {
        const k = key();
        const token = await acquired(k);
        await rejects(publish(k, token, 0, "no head yet"), "a body part before the head");
        equal(await publish(k, token, 0, "ab", HEAD), true);
        equal(await publish(k, token, 0, "ab", HEAD), true, "the head part resent");
        equal(await publish(k, token, 2, "cd"), true);
        equal(await publish(k, token, 2, "cd"), true, "a body part resent");
        await rejects(publish(k, token, 10, "ef"), "a gap");
        await rejects(publish(k, token, 1, "xyz"), "an overlap");
        like(await liveStore().readLive(k, undefined, 0), { state: "live", body: bytes("abcd") });
        equal(await store.release(k, token), true);
      },
    );

    itLive(
      "a reader holding a prefix gets LiveStreamLostError when the lease is released, never more bytes",
      async () => {
        const k = key();
        const token = await acquired(k);
        equal(await publish(k, token, 0, "partial", HEAD), true);
        const seen: string[] = [];
        const reading = readAll(follow(k), (event) => seen.push(event.type));
        await until(() => seen.includes("body"), "the reader got the prefix");
        equal(await store.release(k, token), true);
        const result = await reading;
        equal({ ...result, error: undefined }, { heads: 1, body: "partial", end: "error", error: undefined });
        check(isLiveStreamLostError(result.error), `expected LiveStreamLostError, got ${String(result.error)}`);
        equal(await liveStore().readLive(k, undefined, 0), { state: "absent" });
      },
    );

    itLive(
      "after a takeover, a reader holding a prefix gets an error and one holding nothing follows the new execution",
      async () => {
        const k = key();
        const first = await acquired(k, "fp-a", SHORT_LEASE_MS);
        equal(await publish(k, first, 0, "AAAA", HEAD), true);
        const holding = readAll(follow(k));
        await sleep(50);
        await sleep(SHORT_LEASE_MS + 100); // the first execution's lease lapses (a crash or a stall)
        const second = await acquired(k, "fp-a");
        const freshSeen: string[] = [];
        const fresh = readAll(follow(k), (event) => freshSeen.push(event.type));
        await sleep(30);
        equal(await publish(k, second, 0, "BB", { ...HEAD, status: 201, statusText: "Created" }), true);
        // A polling reader (a store without subscribe) could otherwise sleep through the whole stream.
        await until(() => freshSeen.includes("head"), "the reader holding nothing got the new execution's head");
        equal(await publish(k, second, 2, "BB"), true);
        equal(
          await store.commit(k, second, record({ status: 201, statusText: "Created", body: bytes("BBBB") }), LONG_MS),
          true,
        );
        const held = await holding;
        check(held.end === "error" && isLiveStreamLostError(held.error), `the prefix holder: ${show(held)}`);
        equal(held.body, "AAAA", "bytes the prefix holder got (never one of the new execution's)");
        equal(await fresh, { heads: 1, body: "BBBB", end: "done:BBBB" }, "the reader holding nothing");
      },
    );

    itLive("a reader holding a prefix of a lapsed execution gets an error when another execution commits", async () => {
      const k = key();
      const first = await acquired(k, "fp-a", SHORT_LEASE_MS);
      equal(await publish(k, first, 0, "AA", HEAD), true);
      const events = follow(k);
      like(await events.next(), { value: { type: "head" } });
      like(await events.next(), { value: { type: "body", bytes: bytes("AA") } });
      await sleep(SHORT_LEASE_MS + 150);
      // A second execution commits without streaming; the reader holding "AA" must not continue into it,
      // even though the record starts with the same bytes.
      equal(await store.commit(k, await acquired(k), record({ body: bytes("AABB") }), LONG_MS), true);
      const next = await events.next().then(
        (result) => ({ result }),
        (error: unknown) => ({ error }),
      );
      check("error" in next && isLiveStreamLostError(next.error), `the prefix holder: ${show(next)}`);
      equal(await readAll(follow(k)), { heads: 0, body: "", end: "done:AABB" }, "a reader holding nothing");
    });

    itLive("commit ends readers: done names the stream that committed, and the chunks are gone", async () => {
      const k = key();
      const token = await acquired(k);
      equal(await publish(k, token, 0, "hello ", HEAD), true);
      const live = await liveStore().readLive(k, undefined, 0);
      const stream = (live as Extract<LiveRead, { state: "live" }>).stream;
      if (options.liveChunks) equal(await options.liveChunks(k), true, "chunk data while streaming");
      const rec = record({ body: bytes("hello world") });
      equal(await store.commit(k, token, rec, LONG_MS), true);
      const done = await liveStore().readLive(k, stream, 6);
      like(done, { state: "done", stream });
      expectSameRecord((done as Extract<LiveRead, { state: "done" }>).record, rec);
      if (options.liveChunks) equal(await options.liveChunks(k), false, "chunk data after the commit");
    });

    itLive("a record committed after a forget is never taken for the earlier stream's", async () => {
      const k = key();
      const first = await acquired(k);
      equal(await publish(k, first, 0, "AA", HEAD), true);
      const stream = ((await liveStore().readLive(k, undefined, 0)) as Extract<LiveRead, { state: "live" }>).stream;
      equal(await store.commit(k, first, record({ body: bytes("AA") }), LONG_MS), true);
      like(await liveStore().readLive(k, stream, 2), { state: "done", stream });
      equal(await store.forget(k, false), "forgotten");
      // Another execution, not streamed, commits a record that starts with the same bytes.
      equal(await store.commit(k, await acquired(k), record({ body: bytes("AABB") }), LONG_MS), true);
      const read = await liveStore().readLive(k, stream, 2);
      check(read.state === "done" && read.stream === undefined, `the new record named the old stream: ${show(read)}`);
    });

    itLive("chunk data lapses with the lease, and renew extends it", async () => {
      const k = key();
      const token = await acquired(k, "fp-a", 300);
      equal(await publish(k, token, 0, "x", HEAD), true);
      await sleep(100);
      equal(await store.renew(k, token, 600), true); // now until ~t=700
      await sleep(300); // ~t=400: past the first 300 ms
      like(await liveStore().readLive(k, undefined, 0), { state: "live", body: bytes("x") });
      if (options.liveChunks) equal(await options.liveChunks(k), true, "chunk data within the renewed lease");
      equal(await publish(k, token, 1, "y"), true);
      await sleep(450); // ~t=850: past the renewed lease
      equal(await liveStore().readLive(k, undefined, 0), { state: "absent" });
      if (options.liveChunks) equal(await options.liveChunks(k), false, "chunk data after the lease lapsed");
      equal(await publish(k, token, 2, "z"), false);
    });

    itLive("release and a forced forget end the stream: absent, and the chunks are gone", async () => {
      const released = key();
      const token = await acquired(released);
      equal(await publish(released, token, 0, "x", HEAD), true);
      equal(await store.release(released, token), true);
      equal(await liveStore().readLive(released, undefined, 0), { state: "absent" });
      if (options.liveChunks) equal(await options.liveChunks(released), false, "chunk data after the release");
      const forgotten = key();
      const other = await acquired(forgotten);
      equal(await publish(forgotten, other, 0, "x", HEAD), true);
      equal(await store.forget(forgotten, true), "forgotten");
      equal(await liveStore().readLive(forgotten, undefined, 0), { state: "absent" });
      equal(await publish(forgotten, other, 1, "y"), false);
    });

    itLive("the store shares no mutable bytes with publishers or readers", async () => {
      const k = key();
      const token = await acquired(k);
      const head: LiveHead = { status: 200, statusText: "OK", headers: [["x-a", "original"]] };
      const body = bytes("original");
      equal(await liveStore().publishLive(k, token, { head, offset: 0, body }), true);
      body[0] = 0;
      head.headers[0]![1] = "changed";
      const first = (await liveStore().readLive(k, undefined, 0)) as Extract<LiveRead, { state: "live" }>;
      equal([text(first.body), first.head.headers[0]![1]], ["original", "original"]);
      first.body[0] = 0;
      first.head.headers[0]![1] = "changed";
      const again = (await liveStore().readLive(k, undefined, 0)) as Extract<LiveRead, { state: "live" }>;
      equal([text(again.body), again.head.headers[0]![1]], ["original", "original"]);
      equal(await store.release(k, token), true);
    });

    itLive("streams of different keys are independent", async () => {
      const a = key();
      const b = key();
      const ta = await acquired(a);
      const tb = await acquired(b);
      equal(await publish(a, ta, 0, "for a", HEAD), true);
      equal(await publish(b, ta, 0, "a's token on b", HEAD), false);
      equal(await liveStore().readLive(b, undefined, 0), { state: "pending" });
      equal(await publish(b, tb, 0, "for b", HEAD), true);
      like(await liveStore().readLive(a, undefined, 0), { state: "live", body: bytes("for a") });
      like(await liveStore().readLive(b, undefined, 0), { state: "live", body: bytes("for b") });
      equal(await store.release(a, ta), true);
      equal(await store.release(b, tb), true);
    });

    itLive(
      "liveWriter paces: nothing published for a response written and closed in one tick, else every byte in order, a part per maxDelayMs or maxBytes",
      async () => {
        const quick = key();
        const quickToken = await acquired(quick);
        const fast = liveWriter(liveStore(), quick, quickToken, HEAD, { maxDelayMs: 50 });
        fast.write(bytes("whole"));
        fast.close();
        await sleep(100);
        equal(await liveStore().readLive(quick, undefined, 0), { state: "pending" }, "a quick response");
        equal(await store.release(quick, quickToken), true);

        const k = key();
        const token = await acquired(k);
        const writer = liveWriter(liveStore(), k, token, HEAD, { maxBytes: 8, maxDelayMs: 20 });
        const reading = readAll(follow(k));
        let all = "";
        for (let i = 0; i < 30; i++) {
          const part = `t${i};`;
          writer.write(bytes(part));
          all += part;
          if (i % 3 === 0) await sleep(7);
        }
        equal(await writer.flush(), true);
        equal(writer.published, bytes(all).length);
        writer.close();
        equal(await store.commit(k, token, record({ body: bytes(all) }), LONG_MS), true);
        equal(await reading, { heads: 1, body: all, end: `done:${all}` });
      },
    );

    if (options.live === true && options.subscribe !== false) {
      it("live stream: subscribeLive wakes on each publish and on the commit that ends the stream", async () => {
        check(typeof store.subscribeLive === "function", "the store has subscribe but no subscribeLive");
        const subscribeLive = store.subscribeLive.bind(store);
        const k = key();
        const woken = callCounter();
        const off = subscribeLive(k, woken.fn);
        const plainWoken = callCounter();
        const offPlain = subscribable().subscribe(k, plainWoken.fn);
        await sleep(SUBSCRIBE_SETTLE_MS);
        const token = await acquired(k);
        equal(await publish(k, token, 0, "a", HEAD), true);
        await woken.reached(1);
        equal(await publish(k, token, 1, "b"), true);
        await woken.reached(2);
        equal(plainWoken.calls, 0, "plain subscribers woken by a publish (they would re-acquire per chunk)");
        equal(await store.commit(k, token, record(), LONG_MS), true);
        await woken.reached(3);
        await plainWoken.reached(1);
        off();
        offPlain();
      });
    }

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

/** Waits until `condition` holds, at most `withinMs` ms. */
async function until(condition: () => boolean, what: string, withinMs = 2000): Promise<void> {
  const end = Date.now() + withinMs;
  while (!condition() && Date.now() < end) await sleep(5);
  check(condition(), `not within ${withinMs} ms: ${what}`);
}

/** Fails unless `promise` rejects. */
async function rejects(promise: Promise<unknown>, what: string): Promise<void> {
  const outcome = await promise.then(
    (value) => ({ value }),
    () => undefined,
  );
  check(outcome === undefined, `${what}: expected a rejection, got ${show(outcome?.value)}`);
}

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
