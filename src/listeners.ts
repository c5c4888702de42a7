// The keyed listener registry behind every store's subscribe(): separate subscriptions, asynchronous and isolated wake-ups.

/** Subscriptions per store key. */
export interface KeyedListeners {
  /** Subscribes `fn` to `key`; each call is its own subscription. Returns its unsubscribe (idempotent). */
  add(key: string, fn: () => void): () => void;
  /** Wakes every subscription of `key` in a later microtask (never inside the caller), each isolated from the others. */
  notify(key: string): void;
  /** Whether `key` has a subscription. */
  has(key: string): boolean;
  /** Keys with at least one subscription. */
  keys(): IterableIterator<string>;
  /** Drops every subscription (without calling `onLast`). */
  clear(): void;
}

export interface KeyedListenersHooks {
  /** Called when `key` gets its first subscription, e.g. to SUBSCRIBE a channel or open a watch. */
  onFirst?(key: string): void;
  /** Called when `key` loses its last subscription. */
  onLast?(key: string): void;
}

export function keyedListeners(hooks: KeyedListenersHooks = {}): KeyedListeners {
  // A wrapper object per subscription: the same function subscribed twice is two entries.
  const byKey = new Map<string, Set<{ fn: () => void }>>();
  return {
    add(key, fn) {
      let set = byKey.get(key);
      const first = set === undefined;
      if (!set) byKey.set(key, (set = new Set()));
      const entry = { fn };
      set.add(entry);
      if (first) hooks.onFirst?.(key);
      return () => {
        if (!set.delete(entry) || set.size > 0 || byKey.get(key) !== set) return;
        byKey.delete(key);
        hooks.onLast?.(key);
      };
    },
    notify(key) {
      const set = byKey.get(key);
      if (!set) return;
      for (const entry of [...set]) {
        queueMicrotask(() => {
          // Unsubscribed since the notification: not called.
          if (!set.has(entry)) return;
          try {
            entry.fn();
          } catch {
            // A listener's own failure must not reach the store's caller or skip the other listeners;
            // waiters also poll, so nothing is lost.
          }
        });
      }
    },
    has: (key) => byKey.has(key),
    keys: () => byKey.keys(),
    clear() {
      for (const set of byKey.values()) set.clear();
      byKey.clear();
    },
  };
}
