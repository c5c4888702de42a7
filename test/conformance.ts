// testStore(): the one conformance suite every IdempotencyStore passes (docs/protocol.md "The store contract").
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeRecord } from "../src/record.js";
import { type AcquireResult, type IdempotencyStore, newToken, type StoredRecord } from "../src/store.js";
import { sleep } from "./fixtures/util.js";

export interface TestStoreOptions {
  /** Puts `value` at `storeKey` exactly as the backend holds it, bypassing the store: enables the corruption tests. */
  writeRaw?: (storeKey: string, value: string) => Promise<void>;
  /** Runs after the suite (after `store.close()`), e.g. to delete the keys it wrote. */
  cleanup?: (store: IdempotencyStore) => Promise<void>;
  /** Every store key the suite uses starts with this. Default: "idemfetch-conformance:<random>:". */
  keyPrefix?: string;
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

export function testStore(
  name: string,
  makeStore: () => Promise<IdempotencyStore> | IdempotencyStore,
  options: TestStoreOptions = {},
): void {
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
      expect(result).toMatchObject({ state: "acquired" });
      return (result as Extract<AcquireResult, { state: "acquired" }>).token;
    };
    const done = async (storeKey: string, fingerprint = "fp-a"): Promise<StoredRecord> => {
      const result = await store.acquire(storeKey, fingerprint, LONG_MS);
      expect(result.state).toBe("done");
      return (result as Extract<AcquireResult, { state: "done" }>).record;
    };
    const expectPending = async (storeKey: string, holderFingerprint: string): Promise<void> => {
      expect(await store.acquire(storeKey, "fp-probe", LONG_MS)).toEqual({
        state: "pending",
        fingerprint: holderFingerprint,
      });
    };

    it("acquire on an empty key returns acquired with a token", async () => {
      const result = await store.acquire(key(), "fp-a", LONG_MS);
      expect(result.state).toBe("acquired");
      const { token, replacedCorrupt } = result as Extract<AcquireResult, { state: "acquired" }>;
      expect(typeof token).toBe("string");
      expect(token.length).toBeGreaterThanOrEqual(16);
      expect(replacedCorrupt).not.toBe(true);
    });

    it("every acquire gets a new token", async () => {
      const k = key();
      const first = await acquired(k);
      const other = await acquired(key());
      expect(await store.release(k, first)).toBe(true);
      const second = await acquired(k);
      expect(new Set([first, other, second]).size).toBe(3);
    });

    it("pending reports the lease holder's fingerprint", async () => {
      const k = key();
      await acquired(k, "fp-holder");
      expect(await store.acquire(k, "fp-other", LONG_MS)).toEqual({ state: "pending", fingerprint: "fp-holder" });
      // The holder's own fingerprint does not get a second lease either.
      expect(await store.acquire(k, "fp-holder", LONG_MS)).toEqual({ state: "pending", fingerprint: "fp-holder" });
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
      expect(winners).toHaveLength(1);
      const winner = `fp-${winners[0]}`;
      for (const r of results) if (r.state !== "acquired") expect(r).toEqual({ state: "pending", fingerprint: winner });
    });

    it("commit with the owner token stores the record and acquire returns done", async () => {
      const k = key();
      const token = await acquired(k);
      const rec = record();
      expect(await store.commit(k, token, rec, LONG_MS)).toBe(true);
      expectSameRecord(await done(k), rec);
    });

    it("done returns the record regardless of the asker's fingerprint", async () => {
      const k = key();
      const token = await acquired(k, "fp-first");
      expect(await store.commit(k, token, record({ fingerprint: "fp-first" }), LONG_MS)).toBe(true);
      const result = await store.acquire(k, "fp-someone-else", LONG_MS);
      expect(result.state).toBe("done");
      expect((result as Extract<AcquireResult, { state: "done" }>).record.fingerprint).toBe("fp-first");
    });

    it("commit with a stale token changes nothing and returns false", async () => {
      const k = key();
      const stale = await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      const current = await acquired(k, "fp-b");
      expect(await store.commit(k, stale, record({ fingerprint: "fp-a" }), LONG_MS)).toBe(false);
      await expectPending(k, "fp-b");
      expect(await store.commit(k, current, record({ fingerprint: "fp-b" }), LONG_MS)).toBe(true);
      expect((await done(k)).fingerprint).toBe("fp-b");
    });

    it("commit with a token that never held the key returns false and stores nothing", async () => {
      const empty = key();
      expect(await store.commit(empty, newToken(), record(), LONG_MS)).toBe(false);
      await acquired(empty); // still empty
      const leased = key();
      await acquired(leased, "fp-holder");
      expect(await store.commit(leased, newToken(), record(), LONG_MS)).toBe(false);
      await expectPending(leased, "fp-holder");
    });

    it("commit after the lease expired returns false and stores nothing", async () => {
      const k = key();
      const token = await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      expect(await store.commit(k, token, record(), LONG_MS)).toBe(false);
      await acquired(k);
    });

    it("a token commits at most once", async () => {
      const k = key();
      const token = await acquired(k);
      const first = record({ statusText: "First" });
      expect(await store.commit(k, token, first, LONG_MS)).toBe(true);
      expect(await store.commit(k, token, record({ statusText: "Second" }), LONG_MS)).toBe(false);
      expectSameRecord(await done(k), first);
    });

    it("release with the owner token frees the key", async () => {
      const k = key();
      const token = await acquired(k);
      expect(await store.release(k, token)).toBe(true);
      const next = await acquired(k, "fp-b");
      expect(next).not.toBe(token);
    });

    it("release with another token changes nothing and returns false", async () => {
      const k = key();
      await acquired(k, "fp-holder");
      expect(await store.release(k, newToken())).toBe(false);
      await expectPending(k, "fp-holder");
      expect(await store.release(key(), newToken())).toBe(false); // empty key
    });

    it("release after commit returns false and keeps the record", async () => {
      const k = key();
      const token = await acquired(k);
      const rec = record();
      expect(await store.commit(k, token, rec, LONG_MS)).toBe(true);
      expect(await store.release(k, token)).toBe(false);
      expectSameRecord(await done(k), rec);
    });

    it("renew extends only the owner's live lease", async () => {
      const k = key();
      const token = await acquired(k, "fp-holder", 300);
      await sleep(100);
      expect(await store.renew(k, newToken(), LONG_MS)).toBe(false);
      expect(await store.renew(k, token, 600)).toBe(true); // now until ~t=700
      await sleep(300); // ~t=400: past the original 300 ms
      await expectPending(k, "fp-holder");
      await sleep(450); // ~t=850: past the renewed lease, counted from the renew and not added to the rest
      await acquired(k, "fp-next");
    });

    it("renew after the lease expired returns false and the key stays free", async () => {
      const k = key();
      const token = await acquired(k, "fp-a", SHORT_LEASE_MS);
      await sleep(SHORT_LEASE_MS + 150);
      expect(await store.renew(k, token, LONG_MS)).toBe(false);
      await acquired(k, "fp-b");
    });

    it("renew on a record returns false and keeps the record", async () => {
      const k = key();
      const token = await acquired(k);
      const rec = record();
      expect(await store.commit(k, token, rec, LONG_MS)).toBe(true);
      expect(await store.renew(k, token, LONG_MS)).toBe(false);
      expectSameRecord(await done(k), rec);
    });

    it("a record expires after its ttl", async () => {
      const k = key();
      const token = await acquired(k);
      expect(await store.commit(k, token, record(), 250)).toBe(true);
      await done(k);
      await sleep(400);
      await acquired(k);
    });

    it("a record lives for its ttl, not for the lease it replaced", async () => {
      const k = key();
      const token = await acquired(k, "fp-a", SHORT_LEASE_MS);
      expect(await store.commit(k, token, record(), LONG_MS)).toBe(true);
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
      if (typeof Buffer !== "undefined") views.push(["a Buffer", Buffer.from("original")]);
      for (const [label, body] of views) {
        const k = key();
        const token = await acquired(k);
        const rec = record({ body });
        expect(await store.commit(k, token, rec, LONG_MS)).toBe(true);
        rec.body[0] = 0;
        rec.headers[0]![1] = "changed";
        const first = await done(k);
        expect({ label, body: text(first.body) }).toEqual({ label, body: "original" });
        expect(first.headers[0]![1]).toBe("application/json");
        first.body[0] = 0;
        first.headers[0]![1] = "changed";
        expect({ label, body: text((await done(k)).body) }).toEqual({ label, body: "original" });
      }
    });

    it("keys are independent", async () => {
      const a = key();
      const b = key();
      const tokenA = await acquired(a, "fp-a");
      const tokenB = await acquired(b, "fp-b"); // a's lease does not cover b
      expect(await store.commit(b, tokenA, record(), LONG_MS)).toBe(false);
      expect(await store.release(b, tokenA)).toBe(false);
      expect(await store.renew(b, tokenA, LONG_MS)).toBe(false);
      expect(await store.commit(a, tokenA, record({ fingerprint: "fp-a" }), LONG_MS)).toBe(true);
      await expectPending(b, "fp-b");
      expect(await store.release(b, tokenB)).toBe(true);
      expect((await done(a)).fingerprint).toBe("fp-a");
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
          expect({ value, result }).toMatchObject({ value, result: { state: "acquired", replacedCorrupt: true } });
          const token = (result as Extract<AcquireResult, { state: "acquired" }>).token;
          await expectPending(k, "fp-a"); // a real lease now
          expect(await store.commit(k, token, record(), LONG_MS)).toBe(true);
          await done(k);
        }
      });

      it("commit, release and renew on a corrupted value return false", async () => {
        for (const value of ["garbage", "Lno-separator", 'R{"v":999}']) {
          const k = key();
          await writeRaw(k, value);
          expect(await store.commit(k, newToken(), record(), LONG_MS)).toBe(false);
          expect(await store.release(k, newToken())).toBe(false);
          expect(await store.renew(k, newToken(), LONG_MS)).toBe(false);
        }
      });
    }

    const subscribable = (): Required<Pick<IdempotencyStore, "subscribe">> => {
      if (!store.subscribe) throw new Error("unreachable: the store has no subscribe");
      return store as Required<Pick<IdempotencyStore, "subscribe">>;
    };
    // The store instance is made in beforeAll, so whether it has subscribe is known only then.
    const itSubscribe = (title: string, fn: () => Promise<void>) =>
      it(title, async (ctx) => {
        if (!store.subscribe) return ctx.skip("the store has no subscribe");
        await fn();
      });

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
      expect(onCommit.calls + onRelease.calls).toBe(0); // a new lease wakes no one
      expect(await store.commit(committed, t1, record(), LONG_MS)).toBe(true);
      await onCommit.reached(1);
      expect(await store.release(released, t2)).toBe(true);
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
      expect(await store.commit(k, token, record(), LONG_MS)).toBe(true);
      await kept.reached(1);
      await sleep(100); // anything else in flight arrives by now
      expect(dropped.calls).toBe(0);
      expect(onOther.calls).toBe(0);
      offKept();
      offOther();
    });

    itSubscribe("a stale commit or release wakes no one", async () => {
      const k = key();
      const woken = callCounter();
      const off = subscribable().subscribe(k, woken.fn);
      await sleep(SUBSCRIBE_SETTLE_MS);
      await acquired(k);
      expect(await store.commit(k, newToken(), record(), LONG_MS)).toBe(false);
      expect(await store.release(k, newToken())).toBe(false);
      await sleep(150);
      expect(woken.calls).toBe(0);
      off();
    });

    async function roundTrip(rec: StoredRecord, ttlMs = LONG_MS): Promise<void> {
      const k = key();
      const token = await acquired(k);
      expect(await store.commit(k, token, rec, ttlMs)).toBe(true);
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
  expect(gotRest).toEqual(wantRest);
  expect(Object.prototype.toString.call(got)).toBe("[object Uint8Array]");
  expect(got.byteLength).toBe(want.byteLength);
  let firstDifference = -1;
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) {
      firstDifference = i;
      break;
    }
  }
  expect(firstDifference).toBe(-1);
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
      expect(calls).toBeGreaterThanOrEqual(n);
    },
  };
}

function bytes(s: string): Uint8Array {
  return new TextEncoder().encode(s);
}

function text(b: Uint8Array): string {
  return new TextDecoder().decode(b);
}
