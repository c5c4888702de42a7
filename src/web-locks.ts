// withWebLocks(): a store shared by tabs (indexedDBStore) whose leases live as long as the leader's tab and call, via Web Locks.
import { type AcquireResult, hasLive, type IdempotencyStore } from "./store.ts";
import { type OptionNames, strictOptions } from "./strict.ts";

export interface WebLocksOptions {
  /** Names this store's locks: give each database its own (its dbName). Default "idemfetch". */
  name?: string;
}

/** How long a lease taken again for a late commit lasts, in ms; the commit follows at once. */
const REPAIR_LEASE_MS = 10_000;
/** Holders remembered for a takeover; beyond this the oldest are forgotten (they then expire as usual). */
const MAX_SEEN = 1000;

interface Lease {
  storeKey: string;
  fingerprint: string;
  token: string;
}

/**
 * Wraps a store that every tab of an origin shares. The leader of a call holds a Web Lock from its
 * acquire until its commit or release, and the browser frees that lock the moment the tab closes or
 * crashes. So:
 * - a lease whose holder's tab is alive is never taken over, even when the store's lease expired
 *   because a background tab's timers (the heartbeat) were throttled; its late commit still lands;
 * - a tab waiting on a leader whose tab closed takes over at once instead of after the lease time,
 *   woken by the lock's release.
 * Without `navigator.locks` (Node, older browsers) the store is returned as it is.
 * Only for stores shared by tabs: over a per-tab store the locks would make tabs wait on each other.
 */
export function withWebLocks(store: IdempotencyStore, options: WebLocksOptions = {}): IdempotencyStore {
  strictOptions(options, { name: true } satisfies OptionNames<WebLocksOptions>, "withWebLocks()");
  const locks = typeof navigator === "undefined" ? undefined : navigator.locks;
  if (!locks) return store;
  const name = options.name ?? "idemfetch";
  if (typeof name !== "string" || name === "") throw new TypeError("withWebLocks: name must be a non-empty string");
  const prefix = `idemfetch-lease:${name}:`;
  const lockName = (lease: Lease): string => prefix + JSON.stringify([lease.storeKey, lease.fingerprint, lease.token]);

  /** Locks this tab holds, by lease token: letting go is resolving the lock's callback. */
  const held = new Map<string, () => void>();
  /** The last live holder seen per store key: if its lock goes while its lease stays, its tab is gone. */
  const seen = new Map<string, string>();
  const listeners = new Map<string, Set<() => void>>();
  const watched = new Set<string>();
  /** Keys whose watched holder's lock went since this tab last acquired them: committed, released, or tab closed. */
  const lockGone = new Set<string>();

  const holderOf = async (storeKey: string): Promise<(Lease & { lock: string }) | undefined> => {
    const snapshot = await locks.query();
    for (const lock of snapshot.held ?? []) {
      // Shared holds are waiters watching a lease (see watch), never its holder.
      if (lock.mode !== "exclusive" || !lock.name?.startsWith(prefix)) continue;
      try {
        const [key, fingerprint, token] = JSON.parse(lock.name.slice(prefix.length)) as string[];
        if (key === storeKey && typeof fingerprint === "string" && typeof token === "string") {
          return { storeKey, fingerprint, token, lock: lock.name };
        }
      } catch {
        // a lock of another format: not ours
      }
    }
    return undefined;
  };

  const hold = (lease: Lease): Promise<void> =>
    new Promise<void>((granted) => {
      locks
        .request(lockName(lease), () => {
          granted();
          return new Promise<void>((letGo) => held.set(lease.token, letGo));
        })
        // No lock (an opaque origin, a page being torn down): the store's own lease expiry still applies.
        .catch(() => granted());
    });
  const letGo = (token: string): void => {
    held.get(token)?.();
    held.delete(token);
  };

  const fire = (storeKey: string): void => {
    for (const fn of [...(listeners.get(storeKey) ?? [])]) queueMicrotask(fn);
  };
  /** Wakes this tab's waiters when a holder's lock goes: committed, released, or its tab closed. */
  const watch = (lock: string, storeKey: string): void => {
    if (watched.has(lock)) return;
    watched.add(lock);
    locks
      .request(lock, { mode: "shared" }, () => {
        watched.delete(lock);
        lockGone.add(storeKey);
        if (lockGone.size > MAX_SEEN) lockGone.delete(lockGone.values().next().value as string);
        fire(storeKey);
      })
      .catch(() => watched.delete(lock));
  };
  const remember = (storeKey: string, token: string): void => {
    seen.delete(storeKey);
    seen.set(storeKey, token);
    if (seen.size > MAX_SEEN) seen.delete(seen.keys().next().value as string);
  };

  const wrapped: IdempotencyStore & { name?: unknown } = {
    // The wrapped store's name, for the engine's warnings.
    name: (store as { name?: unknown }).name,
    async acquire(storeKey, fingerprint, leaseMs) {
      lockGone.delete(storeKey);
      const holder = await holderOf(storeKey);
      if (holder) {
        // A live tab leads: never touch its lease, whatever the store's expiry says.
        remember(storeKey, holder.token);
        watch(holder.lock, storeKey);
        return { state: "pending", fingerprint: holder.fingerprint };
      }
      let result: AcquireResult = await store.acquire(storeKey, fingerprint, leaseMs);
      const gone = seen.get(storeKey);
      // A lease whose holder's lock is gone: that tab closed mid-call. Its token frees only its own lease.
      if (result.state === "pending" && gone !== undefined && (await store.release(storeKey, gone))) {
        result = await store.acquire(storeKey, fingerprint, leaseMs);
      }
      if (result.state !== "pending") seen.delete(storeKey);
      if (result.state === "acquired") await hold({ storeKey, fingerprint, token: result.token });
      return result;
    },
    async commit(storeKey, token, record, ttlMs) {
      try {
        if (await store.commit(storeKey, token, record, ttlMs)) return true;
        if (!held.has(token)) return false;
        // The store's lease lapsed (throttled heartbeats) while our lock kept every lock-aware tab off it.
        const again = await store.acquire(storeKey, record.fingerprint, REPAIR_LEASE_MS);
        return again.state === "acquired" && (await store.commit(storeKey, again.token, record, ttlMs));
      } finally {
        letGo(token);
      }
    },
    async release(storeKey, token) {
      try {
        return await store.release(storeKey, token);
      } finally {
        letGo(token);
      }
    },
    forget: (storeKey, force) => store.forget(storeKey, force),
    async renew(storeKey, token, leaseMs) {
      // While the lock is held the lease is ours even if the store's copy lapsed: the commit retakes it.
      return (await store.renew(storeKey, token, leaseMs)) || held.has(token);
    },
    subscribe(storeKey, onChange) {
      const off = store.subscribe?.(storeKey, onChange);
      let set = listeners.get(storeKey);
      if (!set) listeners.set(storeKey, (set = new Set()));
      set.add(onChange);
      return () => {
        off?.();
        set.delete(onChange);
        if (set.size === 0 && listeners.get(storeKey) === set) listeners.delete(storeKey);
      };
    },
    async close() {
      for (const token of [...held.keys()]) letGo(token);
      listeners.clear();
      await store.close?.();
    },
  };
  // The live-stream capability passes through when the store has it: the store fences each part by its token.
  if (hasLive(store)) {
    wrapped.publishLive = store.publishLive.bind(store);
    wrapped.readLive = async (storeKey, stream, offset) => {
      // Taken before the read: a commit or release lands before its lock goes, so a read begun after sees it.
      const orphaned = lockGone.has(storeKey);
      const read = await store.readLive(storeKey, stream, offset);
      // A lease left by a closed tab reads as absent, not for the rest of its lease time: a reader holding
      // nothing acquires (and takes over at once), one holding a prefix stops.
      return orphaned && (read.state === "pending" || read.state === "live") ? { state: "absent" } : read;
    };
    if (store.subscribeLive) wrapped.subscribeLive = store.subscribeLive.bind(store);
  }
  return wrapped;
}
