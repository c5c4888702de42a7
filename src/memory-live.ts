// liveMemoryStore: memoryStore with the live-stream capability, for two engines on one store in one process.
import { keyedListeners } from "./listeners.ts";
import { copyRecord, createMemoryStore, type MemoryInternals, type MemoryStoreOptions } from "./memory-store.ts";
import { type LiveHead, type LivePart, type LiveRead, type LiveStore, newToken } from "./store.ts";
import { checkLivePart, resendShaped } from "./store-state.ts";

/**
 * memoryStore plus `publishLive`, `readLive` and `subscribeLive`: a duplicate in another engine on the same
 * store reads a leader's stream live. Its own module, so `memoryStore` alone stays as small as it was.
 */
export function liveMemoryStore(options: MemoryStoreOptions = {}): LiveStore {
  return createMemoryStore(options, liveExtension) as LiveStore;
}

function liveExtension({ current, now }: MemoryInternals) {
  const liveListeners = keyedListeners();
  // Live streams beside the entries: a stream counts only while its owner's lease is the key's live entry.
  const live = new Map<string, Live>();
  let sweepAt = 64;
  /** The stream of `storeKey` owned by its live lease, if any; a stream left by a lapsed lease is dropped. */
  const ownStream = (storeKey: string): Stream | undefined => {
    const stream = live.get(storeKey);
    if (stream === undefined || stream.kind !== "stream") return undefined;
    const entry = current(storeKey);
    if (entry?.kind === "lease" && entry.token === stream.owner) return stream;
    live.delete(storeKey);
    return undefined;
  };
  /** Streams whose lease lapsed without a commit or release (a crashed or stuck leader) go once the map doubles. */
  const sweep = () => {
    if (live.size < sweepAt) return;
    for (const [storeKey, stream] of live) {
      if (stream.kind === "stream") ownStream(storeKey);
      else if (stream.expiresAt <= now()) live.delete(storeKey);
    }
    sweepAt = Math.max(64, live.size * 2);
  };
  /** After a commit, release or forget took effect: the key's stream ends (a commit leaves which stream it was). */
  const ended = (storeKey: string, token?: string, ttlMs?: number) => {
    const stream = live.get(storeKey);
    if (stream === undefined) return;
    if (stream.kind === "stream" && stream.owner === token && ttlMs !== undefined) {
      live.set(storeKey, { kind: "ended", stream: stream.id, expiresAt: now() + ttlMs });
    } else live.delete(storeKey);
    liveListeners.notify(storeKey);
  };

  return {
    ended,
    methods: {
      async publishLive(storeKey, token, part) {
        const entry = current(storeKey);
        if (entry?.kind !== "lease" || entry.token !== token) return false;
        const stream = ownStream(storeKey);
        const { head, body } = part;
        if (stream !== undefined && resent(stream, part)) return true; // the part last stored, sent again
        checkLivePart("liveMemoryStore", stream?.length, part);
        if (head !== undefined) {
          const bytes = new Uint8Array(Math.max(1024, body.length));
          bytes.set(body);
          live.set(storeKey, {
            kind: "stream",
            id: newToken(),
            owner: token,
            head: copyHead(head),
            bytes,
            length: body.length,
          });
          sweep();
        } else if (stream !== undefined) {
          if (stream.length + body.length > stream.bytes.length) {
            const grown = new Uint8Array(Math.max(stream.bytes.length * 2, stream.length + body.length));
            grown.set(stream.bytes.subarray(0, stream.length));
            stream.bytes = grown;
          }
          stream.bytes.set(body, stream.length);
          stream.length += body.length;
        }
        liveListeners.notify(storeKey);
        return true;
      },
      async readLive(storeKey, streamId, offset): Promise<LiveRead> {
        const entry = current(storeKey);
        if (entry === undefined) return { state: "absent" };
        if (entry.kind === "record") {
          const ended = live.get(storeKey);
          const record = copyRecord(entry.record);
          return ended?.kind === "ended" && ended.expiresAt > now() && ended.stream === streamId
            ? { state: "done", record, stream: ended.stream }
            : { state: "done", record };
        }
        const stream = ownStream(storeKey);
        if (stream === undefined) return { state: "pending" };
        const from = stream.id === streamId ? Math.min(offset, stream.length) : 0;
        return {
          state: "live",
          stream: stream.id,
          head: copyHead(stream.head),
          body: stream.bytes.slice(from, stream.length),
        };
      },
      subscribeLive: (storeKey, onChange) => liveListeners.add(storeKey, onChange),
    } satisfies Partial<LiveStore>,
  };
}

/** A key's live stream, or which stream a commit ended (kept as long as the record). */
type Live =
  | Stream
  | {
      kind: "ended";
      stream: string;
      /** Unix ms, the record's expiry. */
      expiresAt: number;
    };

interface Stream {
  kind: "stream";
  /** What readers see: not the token, which would let them commit. */
  id: string;
  owner: string;
  head: LiveHead;
  /** The body so far in `bytes[0, length)`; capacity doubles as it grows. */
  bytes: Uint8Array;
  length: number;
}

/** Whether `part` ends where the stream does and holds the same bytes: a resend after a lost reply. */
function resent(stream: Stream, part: LivePart): boolean {
  if (!resendShaped(stream.length, part)) return false;
  const { offset, body } = part;
  for (let i = 0; i < body.length; i++) if (stream.bytes[offset + i] !== body[i]) return false;
  return true;
}

function copyHead(head: LiveHead): LiveHead {
  return { status: head.status, statusText: head.statusText, headers: head.headers.map(([k, v]) => [k, v]) };
}
