// The one store contract (test/conformance.ts) against indexedDBStore running in Chromium: vitest drives, the page stores.
import type { Browser, Page } from "playwright-core";
import type { AcquireResult, IdempotencyStore, StoredRecord } from "../../src/store.ts";
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

let browser: Browser | undefined;
let site: Site | undefined;
let page: Page;
const DB = "idemfetch-conformance";

/**
 * An IdempotencyStore whose every call runs `indexedDBStore` in the page: the suite runs unchanged
 * in Node, every operation and every IndexedDB transaction happens in real Chromium.
 */
async function storeInPage(dbName: string): Promise<IdempotencyStore> {
  const listeners = new Map<number, () => void>();
  let nextId = 0;
  await page.exposeFunction("storeChanged", (id: number) => listeners.get(id)?.());
  await page.evaluate((db) => {
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
    const store = window.idemfetch.indexedDBStore({ dbName: db });
    const subscriptions = new Map<number, () => void>();
    window.rpc = {
      acquire: async (k, fp, ms) => {
        const result = await store.acquire(k as string, fp as string, ms as number);
        return result.state === "done"
          ? { ...result, record: { ...result.record, body: toBase64(result.record.body) } }
          : result;
      },
      commit: async (k, token, record, ttl) =>
        store.commit(
          k as string,
          token as string,
          { ...(record as StoredRecord), body: fromBase64((record as WireRecord).body) },
          ttl as number,
        ),
      release: async (k, token) => store.release(k as string, token as string),
      renew: async (k, token, ms) => store.renew(k as string, token as string, ms as number),
      forget: async (k, force) => store.forget(k as string, force as boolean),
      subscribe: async (id, k) => {
        subscriptions.set(
          id as number,
          store.subscribe?.(k as string, () => window.storeChanged(id as number)) ?? (() => {}),
        );
      },
      unsubscribe: async (id) => {
        subscriptions.get(id as number)?.();
        subscriptions.delete(id as number);
      },
      close: async () => store.close?.(),
    };
  }, dbName);

  const call = <T>(op: string, ...args: unknown[]): Promise<T> =>
    page.evaluate(([name, list]) => window.rpc[name as string]!(...(list as unknown[])), [
      op,
      args,
    ] as const) as Promise<T>;

  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      type Wire = Exclude<AcquireResult, { state: "done" }> | { state: "done"; record: WireRecord };
      const result = await call<Wire>("acquire", storeKey, fingerprint, leaseMs);
      if (result.state !== "done") return result;
      return {
        state: "done",
        record: { ...result.record, body: new Uint8Array(Buffer.from(result.record.body, "base64")) },
      };
    },
    commit: (storeKey, token, record, ttlMs) =>
      call("commit", storeKey, token, { ...record, body: Buffer.from(record.body).toString("base64") }, ttlMs),
    release: (storeKey, token) => call("release", storeKey, token),
    renew: (storeKey, token, leaseMs) => call("renew", storeKey, token, leaseMs),
    forget: (storeKey, force) => call("forget", storeKey, force),
    subscribe(storeKey, onChange) {
      const id = ++nextId;
      listeners.set(id, onChange);
      void call("subscribe", id, storeKey);
      return () => {
        listeners.delete(id);
        void call("unsubscribe", id);
      };
    },
    close: () => call("close"),
  };
}

testStore(
  "indexedDBStore in Chromium",
  async () => {
    site = await startSite();
    browser = await launchChromium();
    page = await openPage(browser, site.url);
    return storeInPage(DB);
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
    cleanup: async () => {
      await browser?.close();
      await site?.close();
    },
  },
);
