// The Lua scripts both Redis adapters (ioredis, Upstash) run: one script call per store operation.
//
// Value layout: one Redis string per store key, so every script touches exactly KEYS[1] (Cluster safe).
//   lease:   "L" <token> ":" <fingerprint>      token: 32 hex chars (newToken), so the first ":" ends it
//   record:  "R" <encodeRecord(record)>         JSON text, body base64
// Expiry is the key's own PX/PEXPIRE, measured by the Redis server's clock, never the callers'.
// Anything else at the key (another prefix, another Redis type, "L" without ":", an "R" value that is
// not a JSON object) is corrupt and treated as absent: acquire takes it over and reports "A1".
// A record that looks like JSON but does not decode (decodeRecord, in JS) goes back through ACQUIRE
// with its SHA1, which replaces it only if it is still byte for byte the value the caller saw.
// commit and release PUBLISH on a channel named exactly like the key (keyPrefix included), so a
// subscriber derives the channel the same way the scripts do.
import { decodeRecord, encodeRecord } from "../src/record.js";
import { type IdempotencyStore, newToken } from "../src/store.js";

/**
 * Takes a lease unless a live record or lease holds the key. Returns a plain string, so RESP2, RESP3
 * and Upstash's optional JSON deserialization all hand it back unchanged:
 *   "A0" acquired; "A1" acquired over a corrupt value; "L<fingerprint>" pending (the token stays in Redis);
 *   "R<json>" done: the record value itself; "H<sha1 hex>R<json>" done, when ARGV[4] named another value.
 * A record is checked only for its first and last bytes here: decoding 5 MiB of JSON on every replay
 * belongs in the caller, not in the single-threaded server.
 */
export const ACQUIRE = `
-- KEYS[1]  store key
-- ARGV[1]  new owner token (hex, no ":")
-- ARGV[2]  fingerprint of the caller's request
-- ARGV[3]  lease in ms (positive integer)
-- ARGV[4]  "" or the SHA1 hex of a record value the caller could not decode: replace it if still there
local v = redis.pcall("GET", KEYS[1])
if type(v) == "table" then v = "" end -- another Redis type: corrupt
local corrupt = "0"
if v then
  local kind = string.sub(v, 1, 1)
  if kind == "R" and string.sub(v, 2, 2) == "{" and string.sub(v, -1) == "}" then
    if ARGV[4] == "" then return v end
    local sha = redis.sha1hex(v)
    if sha ~= ARGV[4] then return "H" .. sha .. v end
  elseif kind == "L" then
    local sep = string.find(v, ":", 2, true)
    if sep then return "L" .. string.sub(v, sep + 1) end
  end
  corrupt = "1"
end
redis.call("SET", KEYS[1], "L" .. ARGV[1] .. ":" .. ARGV[2], "PX", ARGV[3])
return "A" .. corrupt
`;

/** Stores the record in place of the owner's lease and wakes subscribers. Returns 1, or 0 when not the owner. */
export const COMMIT = `
-- KEYS[1]  store key
-- ARGV[1]  owner token
-- ARGV[2]  record value: "R" .. encodeRecord(record)
-- ARGV[3]  ttl in ms (positive integer)
local v = redis.pcall("GET", KEYS[1])
local owner = "L" .. ARGV[1] .. ":"
if type(v) ~= "string" or string.sub(v, 1, #owner) ~= owner then return 0 end
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
redis.call("PUBLISH", KEYS[1], "commit")
return 1
`;

/** Deletes the owner's lease and wakes subscribers. Returns 1, or 0 when not the owner. */
export const RELEASE = `
-- KEYS[1]  store key
-- ARGV[1]  owner token
local v = redis.pcall("GET", KEYS[1])
local owner = "L" .. ARGV[1] .. ":"
if type(v) ~= "string" or string.sub(v, 1, #owner) ~= owner then return 0 end
redis.call("DEL", KEYS[1])
redis.call("PUBLISH", KEYS[1], "release")
return 1
`;

/** Extends the owner's live lease. Returns 1, or 0 when not the owner. */
export const RENEW = `
-- KEYS[1]  store key
-- ARGV[1]  owner token
-- ARGV[2]  lease in ms from now (positive integer)
local v = redis.pcall("GET", KEYS[1])
local owner = "L" .. ARGV[1] .. ":"
if type(v) ~= "string" or string.sub(v, 1, #owner) ~= owner then return 0 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return 1
`;

/** SHA1 (hex) of each script, as EVALSHA wants it; a test checks each against SCRIPT LOAD. */
export const SHA1 = {
  ACQUIRE: "aae627cd6dfb7f3fef3555dc7b781ac29cf67744",
  COMMIT: "85570d21f95652ee237ce955804e8ab4ae7b8ca1",
  RELEASE: "9907b37b99957508c9542ff423819de692483f76",
  RENEW: "a6f3d16635bd8a94a6751e8d6bd56ef28d85f5ed",
} as const;

/** One script with its SHA1, for `evalScript`. */
export interface Script {
  readonly lua: string;
  readonly sha1: string;
}

export const SCRIPTS = {
  acquire: { lua: ACQUIRE, sha1: SHA1.ACQUIRE },
  commit: { lua: COMMIT, sha1: SHA1.COMMIT },
  release: { lua: RELEASE, sha1: SHA1.RELEASE },
  renew: { lua: RENEW, sha1: SHA1.RENEW },
} as const satisfies Record<string, Script>;

/** Runs one script on one key: EVALSHA `script.sha1` (EVAL `script.lua` on NOSCRIPT) with KEYS[1] = `key`. */
export type RunScript = (script: Script, key: string, args: string[]) => Promise<unknown>;

/**
 * Runs a script by SHA1 and falls back to the full text once when the server has not cached it
 * (first call, SCRIPT FLUSH, failover): the common call sends 40 bytes instead of the script.
 */
export async function evalWithFallback(
  script: Script,
  evalsha: (sha1: string) => Promise<unknown>,
  evalText: (lua: string) => Promise<unknown>,
): Promise<unknown> {
  try {
    return await evalsha(script.sha1);
  } catch (error) {
    if (!String((error as { message?: unknown } | null)?.message).includes("NOSCRIPT")) throw error;
    return evalText(script.lua);
  }
}

/** Validates a `timeoutMs` option: a number of ms >= 0, 0 for none. */
export function timeoutOption(name: string, value: number | undefined, fallback: number): number {
  const ms = value ?? fallback;
  if (typeof ms !== "number" || Number.isNaN(ms) || ms < 0) {
    throw new TypeError(`${name}: timeoutMs must be a number of ms >= 0 (0: none), got ${String(value)}`);
  }
  return ms;
}

/**
 * The four store operations over the scripts, shared by both Redis adapters. Each is one script
 * call (one round trip), except an acquire that meets an undecodable record (two, at most three).
 * `timeoutMs` bounds every call on this side: a client left with its defaults queues commands
 * for a long time while Redis is down, and a store call must never hang a request.
 */
export function scriptStore(
  name: string,
  run: RunScript,
  timeoutMs: number,
): Pick<IdempotencyStore, "acquire" | "commit" | "release" | "renew"> {
  const call = (script: Script, key: string, args: string[]): Promise<unknown> => {
    const pending = run(script, key, args);
    if (timeoutMs === 0 || !Number.isFinite(timeoutMs)) return pending;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${name}: no reply within ${timeoutMs} ms`)), timeoutMs);
      pending.then(resolve, reject).finally(() => clearTimeout(timer));
    });
  };
  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      const token = newToken();
      const lease = pxMs(leaseMs);
      let unreadable = "";
      for (let attempt = 0; attempt < 3; attempt++) {
        const reply = parseAcquireReply(await call(SCRIPTS.acquire, storeKey, [token, fingerprint, lease, unreadable]));
        if (reply.state === "acquired") {
          return reply.replacedCorrupt
            ? { state: "acquired", token, replacedCorrupt: true }
            : { state: "acquired", token };
        }
        if (reply.state === "pending") return { state: "pending", fingerprint: reply.fingerprint };
        const record = decodeRecord(reply.value.slice(1));
        if (record) return { state: "done", record };
        // Replace exactly the value found unreadable. Our SHA1 misses only when the text came back
        // altered (bytes that are not UTF-8); then the next try uses the server's own.
        unreadable = reply.sha1 ?? (await sha1Hex(reply.value));
      }
      throw new Error(`${name}: a stored value does not decode and kept changing while being replaced`);
    },
    async commit(storeKey, token, record, ttlMs) {
      return isOne(await call(SCRIPTS.commit, storeKey, [token, `R${encodeRecord(record)}`, pxMs(ttlMs)]));
    },
    async release(storeKey, token) {
      return isOne(await call(SCRIPTS.release, storeKey, [token]));
    },
    async renew(storeKey, token, leaseMs) {
      return isOne(await call(SCRIPTS.renew, storeKey, [token, pxMs(leaseMs)]));
    },
  };
}

/** Lease and ttl values for PX: Redis wants a positive integer. */
function pxMs(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`idemfetch: expected a positive number of ms, got ${ms}`);
  return String(Math.ceil(ms));
}

/** ACQUIRE's reply; `value` is the whole stored record value, "R" included. */
type AcquireReply =
  | { state: "acquired"; replacedCorrupt: boolean }
  | { state: "pending"; fingerprint: string }
  | { state: "record"; value: string; sha1?: string };

function parseAcquireReply(reply: unknown): AcquireReply {
  if (typeof reply === "string") {
    if (reply === "A0" || reply === "A1") return { state: "acquired", replacedCorrupt: reply === "A1" };
    if (reply.startsWith("L")) return { state: "pending", fingerprint: reply.slice(1) };
    if (reply.startsWith("R")) return { state: "record", value: reply };
    if (reply.startsWith("H")) return { state: "record", sha1: reply.slice(1, 41), value: reply.slice(41) };
  }
  throw new Error(`idemfetch: unexpected reply from the acquire script: ${String(reply).slice(0, 40)}`);
}

/** 1 from COMMIT/RELEASE/RENEW, as a number (RESP2/RESP3) or a string (ioredis `stringNumbers`). */
function isOne(reply: unknown): boolean {
  return reply === 1 || reply === "1";
}

/** SHA1 hex of text as UTF-8, equal to Lua's redis.sha1hex of the same bytes (Web Crypto: every runtime). */
async function sha1Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
  let out = "";
  for (const b of new Uint8Array(digest)) out += (b < 16 ? "0" : "") + b.toString(16);
  return out;
}
