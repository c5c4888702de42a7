// The one store contract (test/conformance.ts) against indexedDBStore running in Chromium: vitest drives, the page stores.
import type { Browser, Page } from "playwright-core";
import { afterAll, expect, it } from "vitest";
import type { AcquireResult, IdempotencyStore, LivePart, LiveRead, StoredRecord } from "../../src/store.ts";
import { testStore } from "../conformance.ts";
import { launchChromium, openPage, type Site, startSite } from "./harness.ts";

declare global {
  interface Window {
    rpc: Record<string, (...args: unknown[]) => Promise<unknown>>;
    storeChanged(id: number): void;
  }
}

/** A record on the wire: Playwright passes JSON, so the body travels as base64. */
type WireRecord = Omit<StoredRecord, "body"> & { body: string };
type WireRead =
  | Exclude<LiveRead, { state: "live" } | { state: "done" }>
  | (Omit<Extract<LiveRead, { state: "live" }>, "body"> & { body: string })
  | (Omit<Extract<LiveRead, { state: "done" }>, "record"> & { record: WireRecord });

let chromium: Promise<{ site: Site; browser: Browser }> | undefined;
/** One Chromium for the file, one page per suite (each page's store is its own tab). */
const newPage = async (): Promise<Page> => {
  chromium ??= Promise.all([startSite(), launchChromium()]).then(([site, browser]) => ({ site, browser }));
  const { site, browser } = await chromium;
  return openPage(browser, site.url);
};
afterAll(async () => {
  const opened = await chromium;
  await opened?.browser.close();
  await opened?.site.close();
});

const toBytes = (text: string): Uint8Array => new Uint8Array(Buffer.from(text, "base64"));
const toText = (bytes: Uint8Array): string => Buffer.from(bytes).toString("base64");
const fromWire = (record: WireRecord): StoredRecord => ({ ...record, body: toBytes(record.body) });

/**
 * An IdempotencyStore whose every call runs `indexedDBStore` (wrapped by `withWebLocks` when `locks`) in the
 * page: the suite runs unchanged in Node, every operation and every IndexedDB transaction happens in real Chromium.
 */
async function storeInPage(page: Page, dbName: string, locks: boolean): Promise<IdempotencyStore> {
  const listeners = new Map<number, () => void>();
  let nextId = 0;
  await page.exposeFunction("storeChanged", (id: number) => listeners.get(id)?.());
  await page.evaluate(
    ([db, withLocks]) => {
      const toBase64 = (bytes: Uint8Array): string => {
        let text = "";
        for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        return btoa(text);
      };
      const fromBase64 = (text: string): Uint8Array => {
        const binary = atob(text);
        const bytes = new Uint8Array(binary.length);
        for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
        return bytes;
      };
      const { indexedDBStore, withWebLocks } = window.idemfetch;
      const plain = indexedDBStore({ dbName: db });
      const store = withLocks ? withWebLocks(plain, { name: db }) : plain;
      const subscriptions = new Map<number, () => void>();
      const record = (r: StoredRecord) => ({ ...r, body: toBase64(r.body) });
      const listen = (id: unknown, off: (() => void) | undefined) => subscriptions.set(id as number, off ?? (() => {}));
      window.rpc = {
        acquire: async (k, fp, ms) => {
          const result = await store.acquire(k as string, fp as string, ms as number);
          return result.state === "done" ? { ...result, record: record(result.record) } : result;
        },
        commit: async (k, token, r, ttl) =>
          store.commit(
            k as string,
            token as string,
            { ...(r as StoredRecord), body: fromBase64((r as WireRecord).body) },
            ttl as number,
          ),
        release: async (k, token) => store.release(k as string, token as string),
        renew: async (k, token, ms) => store.renew(k as string, token as string, ms as number),
        forget: async (k, force) => store.forget(k as string, force as boolean),
        subscribe: async (id, k) => {
          listen(
            id,
            store.subscribe?.(k as string, () => window.storeChanged(id as number)),
          );
        },
        subscribeLive: async (id, k) => {
          listen(
            id,
            store.subscribeLive?.(k as string, () => window.storeChanged(id as number)),
          );
        },
        unsubscribe: async (id) => {
          subscriptions.get(id as number)?.();
          subscriptions.delete(id as number);
        },
        publishLive: async (k, token, part) => {
          const { head, offset, body } = part as { head?: LivePart["head"]; offset: number; body: string };
          const bytes = fromBase64(body);
          return store.publishLive?.(
            k as string,
            token as string,
            head ? { head, offset, body: bytes } : { offset, body: bytes },
          );
        },
        readLive: async (k, stream, offset) => {
          const read = await store.readLive?.(
            k as string,
            (stream ?? undefined) as string | undefined,
            offset as number,
          );
          if (read?.state === "live") return { ...read, body: toBase64(read.body) };
          if (read?.state === "done") return { ...read, record: record(read.record) };
          return read;
        },
        close: async () => store.close?.(),
      };
    },
    [dbName, locks] as const,
  );

  const call = <T>(op: string, ...args: unknown[]): Promise<T> =>
    page.evaluate(([name, list]) => window.rpc[name as string]!(...(list as unknown[])), [
      op,
      args,
    ] as const) as Promise<T>;
  const subscription = (op: string, storeKey: string, onChange: () => void): (() => void) => {
    const id = ++nextId;
    listeners.set(id, onChange);
    void call(op, id, storeKey);
    return () => {
      listeners.delete(id);
      void call("unsubscribe", id);
    };
  };

  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      type Wire = Exclude<AcquireResult, { state: "done" }> | { state: "done"; record: WireRecord };
      const result = await call<Wire>("acquire", storeKey, fingerprint, leaseMs);
      return result.state === "done" ? { state: "done", record: fromWire(result.record) } : result;
    },
    commit: (storeKey, token, record, ttlMs) =>
      call("commit", storeKey, token, { ...record, body: toText(record.body) }, ttlMs),
    release: (storeKey, token) => call("release", storeKey, token),
    renew: (storeKey, token, leaseMs) => call("renew", storeKey, token, leaseMs),
    forget: (storeKey, force) => call("forget", storeKey, force),
    subscribe: (storeKey, onChange) => subscription("subscribe", storeKey, onChange),
    publishLive: (storeKey, token, { head, offset, body }) =>
      call("publishLive", storeKey, token, { ...(head ? { head } : {}), offset, body: toText(body) }),
    async readLive(storeKey, stream, offset) {
      // undefined does not survive Playwright's serialisation inside an array: null stands for it.
      const read = await call<WireRead>("readLive", storeKey, stream ?? null, offset);
      if (read.state === "live") return { ...read, body: toBytes(read.body) };
      if (read.state === "done") return { ...read, record: fromWire(read.record) };
      return read;
    },
    subscribeLive: (storeKey, onChange) => subscription("subscribeLive", storeKey, onChange),
    close: () => call("close"),
  };
}

let page: Page;
const DB = "idemfetch-conformance";
testStore(
  "indexedDBStore in Chromium",
  async () => {
    page = await newPage();
    return storeInPage(page, DB, false);
  },
  {
    // What another version, another library or a user's devtools could leave in the database.
    writeRaw: (storeKey, value) =>
      page.evaluate(
        ([db, key, raw]) =>
          new Promise<void>((resolve, reject) => {
            const open = indexedDB.open(db);
            open.onerror = () => reject(open.error);
            open.onsuccess = () => {
              const tx = open.result.transaction("records", "readwrite");
              tx.objectStore("records").put(raw, key);
              tx.oncomplete = () => {
                open.result.close();
                resolve();
              };
              tx.onerror = () => reject(tx.error);
            };
          }),
        [DB, storeKey, value] as const,
      ),
    live: true,
    liveChunks: (storeKey) => liveChunks(page, DB, storeKey),
    cleanup: async () => page?.close(),
  },
);

/**
 * Through withWebLocks: the live section only. The rest of the contract (and three live cases) lets a lease lapse
 * and another caller take the key, which withWebLocks refuses on purpose while the holder's tab lives.
 */
const LAPSE_TAKEOVERS = [
  "publishLive under a stale token is refused",
  "after a takeover, a reader holding a prefix",
  "a reader holding a prefix of a lapsed execution",
];
let lockedPage: Page;
const LOCKED_DB = "idemfetch-conformance-locks";
testStore(
  "withWebLocks(indexedDBStore) in Chromium",
  async () => {
    lockedPage = await newPage();
    return storeInPage(lockedPage, LOCKED_DB, true);
  },
  {
    it: (title: string, fn: () => Promise<void>) =>
      title.startsWith("live stream:") && !LAPSE_TAKEOVERS.some((t) => title.includes(t)) ? it(title, fn) : undefined,
    skip: it.skip,
    live: true,
    liveChunks: (storeKey) => liveChunks(lockedPage, LOCKED_DB, storeKey),
    cleanup: async () => lockedPage?.close(),
  },
);

/** Whether the database holds a head (in the lease's entry) or body chunks ([storeKey, stream, end]) for `storeKey`. */
const liveChunks = (on: Page, db: string, storeKey: string): Promise<boolean> =>
  on.evaluate(
    ([name, key]) =>
      new Promise<boolean>((resolve, reject) => {
        const open = indexedDB.open(name);
        open.onerror = () => reject(open.error);
        open.onsuccess = () => {
          const os = open.result.transaction("records").objectStore("records");
          const entry = os.get(key);
          const chunks = os.getAllKeys(IDBKeyRange.bound([key], [key, []]));
          chunks.onsuccess = () => {
            open.result.close();
            resolve((entry.result as { live?: unknown } | undefined)?.live !== undefined || chunks.result.length > 0);
          };
          chunks.onerror = () => reject(chunks.error);
        };
      }),
    [db, storeKey] as const,
  );

it("withWebLocks passes the live-stream methods through only when the wrapped store has them", async () => {
  const on = await newPage();
  const methods = await on.evaluate(() => {
    const { indexedDBStore, memoryStore, withWebLocks } = window.idemfetch;
    const names = (store: object) =>
      ["publishLive", "readLive", "subscribeLive"].map((m) => typeof (store as Record<string, unknown>)[m]);
    return {
      indexedDB: names(withWebLocks(indexedDBStore({ dbName: "idemfetch-passthrough" }))),
      memory: names(withWebLocks(memoryStore())),
    };
  });
  expect(methods).toEqual({
    indexedDB: ["function", "function", "function"],
    memory: ["undefined", "undefined", "undefined"],
  });
  await on.close();
});
