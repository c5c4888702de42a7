// The Lua scripts both Redis adapters (ioredis, Upstash) run: one script call per store operation.
//
// Value layout: one Redis string per store key, so every script touches exactly KEYS[1] (Cluster safe).
//   lease:   "L" <token> ":" <fingerprint>      token: 32 hex chars (newToken), so the first ":" ends it
//   record, binary (ioredis):  "B" <n> ":" <header> <body>   n: decimal byte length of header, the JSON of
//            encodeRecord with an empty body; body: the raw bytes, no base64
//   record, text (Upstash, and ioredis before binary records):  "R" <encodeRecord(record)>   JSON, body base64
// Both record layouts are read by both adapters, so one database can hold either.
// Expiry is the key's own PX/PEXPIRE, measured by the Redis server's clock, never the callers'.
// Anything else at the key (another prefix, another Redis type, "L" without ":", a lease without an expiry,
// an "R" value that is not a JSON object, "B" without its length) is corrupt and treated as absent: acquire
// takes it over and reports "A1". A lease without an expiry (written without PX by a bug or a restore) would
// otherwise block its key forever.
// A record that does not decode (decodeRecord, in JS) goes back through ACQUIRE with its SHA1, which
// replaces it only if it is still byte for byte the value the caller saw.
// commit, release and forget publish on a channel named exactly like the key (keyPrefix included), so a
// subscriber derives the channel the same way the scripts do: SPUBLISH (sharded pub/sub, Redis >= 7: the
// message stays on the key's own shard in a Cluster), or PUBLISH where SPUBLISH is unknown.
import { decodeRecord, encodeRecord } from "../src/record.ts";
import { type ForgetResult, type IdempotencyStore, newToken, type StoredRecord } from "../src/store.ts";

/** Lua: wakes the key's subscribers; a Redis without sharded pub/sub (< 7) answers SPUBLISH with an error. */
const WAKE = `
local function wake(message)
  if not pcall(redis.call, "SPUBLISH", KEYS[1], message) then redis.call("PUBLISH", KEYS[1], message) end
end`;

/**
 * Takes a lease unless a live record or lease holds the key. Returns a plain string, so RESP2, RESP3
 * and Upstash's optional JSON deserialization all hand it back unchanged:
 *   "A0" acquired (also when the lease found is ARGV[1]'s own: the same call resent); "A1" acquired over a
 *   corrupt value; "L<fingerprint>" pending (the token stays in Redis);
 *   "R..." or "B..." done: the record value itself; "H<sha1 hex>" + value: done, when ARGV[4] named another value.
 * A record is checked only for its first bytes (and last, for JSON) here: decoding 5 MiB on every replay
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
  if (kind == "R" and string.sub(v, 2, 2) == "{" and string.sub(v, -1) == "}")
    or (kind == "B" and string.find(v, "^%d+:{", 2)) then
    if ARGV[4] == "" then return v end
    local sha = redis.sha1hex(v)
    if sha ~= ARGV[4] then return "H" .. sha .. v end
  elseif kind == "L" then
    local sep = string.find(v, ":", 2, true)
    -- PTTL -1: no expiry, so no owner will ever be waited for
    if sep and redis.call("PTTL", KEYS[1]) ~= -1 then
      -- This same acquire, sent again (a client resending after a reconnect): the caller's own lease.
      if string.sub(v, 2, sep - 1) == ARGV[1] then return "A0" end
      return "L" .. string.sub(v, sep + 1)
    end
  end
  corrupt = "1"
end
redis.call("SET", KEYS[1], "L" .. ARGV[1] .. ":" .. ARGV[2], "PX", ARGV[3])
return "A" .. corrupt
`;

/** Stores the record in place of the owner's lease and wakes subscribers. Returns 1, or 0 when not the owner. */
export const COMMIT = `${WAKE}
-- KEYS[1]  store key
-- ARGV[1]  owner token
-- ARGV[2]  record value, either layout
-- ARGV[3]  ttl in ms (positive integer)
local v = redis.pcall("GET", KEYS[1])
local owner = "L" .. ARGV[1] .. ":"
if type(v) ~= "string" or string.sub(v, 1, #owner) ~= owner then return 0 end
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
wake("commit")
return 1
`;

/** Deletes the owner's lease and wakes subscribers. Returns 1, or 0 when not the owner. */
export const RELEASE = `${WAKE}
-- KEYS[1]  store key
-- ARGV[1]  owner token
local v = redis.pcall("GET", KEYS[1])
local owner = "L" .. ARGV[1] .. ":"
if type(v) ~= "string" or string.sub(v, 1, #owner) ~= owner then return 0 end
redis.call("DEL", KEYS[1])
wake("release")
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

/**
 * Deletes what the key holds, except a live lease unless ARGV[1] is "1", and wakes subscribers when it
 * deleted something. Returns 1 forgotten, 0 absent, 2 in progress (the lease left in place).
 */
export const FORGET = `${WAKE}
-- KEYS[1]  store key
-- ARGV[1]  "1": delete a live lease too
if redis.call("EXISTS", KEYS[1]) == 0 then return 0 end
local v = redis.pcall("GET", KEYS[1])
if ARGV[1] ~= "1" and type(v) == "string" and string.sub(v, 1, 1) == "L" and string.find(v, ":", 2, true)
  and redis.call("PTTL", KEYS[1]) ~= -1 then return 2 end
redis.call("DEL", KEYS[1])
wake("forget")
return 1
`;

/** SHA1 (hex) of each script, as EVALSHA wants it; a test checks each against SCRIPT LOAD. */
export const SHA1 = {
  ACQUIRE: "47d2832516d9953ecb39a906e2dee700715e6308",
  COMMIT: "38f0b146ac00a0ad4efbb39a622744e5e97ccecf",
  RELEASE: "d60ce671d7c7c9a5242884771fa8d84408cb76a3",
  RENEW: "a6f3d16635bd8a94a6751e8d6bd56ef28d85f5ed",
  FORGET: "d4f82cb42445f50e1388294187251df6a7276f73",
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
  forget: { lua: FORGET, sha1: SHA1.FORGET },
} as const satisfies Record<string, Script>;

/**
 * Runs one script on one key: EVALSHA `script.sha1` (EVAL `script.lua` on NOSCRIPT) with KEYS[1] = `key`.
 * String replies come back as strings (text clients) or bytes (binary clients).
 */
export type RunScript = (script: Script, key: string, args: (string | Uint8Array)[]) => Promise<unknown>;

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
    if (!isNoScript(error)) throw error;
    return evalText(script.lua);
  }
}

/** Whether Redis answered that it has not cached the script. */
export function isNoScript(error: unknown): boolean {
  return String((error as { message?: unknown } | null)?.message).includes("NOSCRIPT");
}

/**
 * Refuses the `timeoutMs` option these stores once had. The engine's `storeTimeoutMs` is the one timeout
 * layer: it releases an acquire that lands after it gave up, which a timer here would hide from it.
 */
export function refuseTimeoutOption(name: string, options: object): void {
  if ("timeoutMs" in options && (options as { timeoutMs?: unknown }).timeoutMs !== undefined) {
    throw new TypeError(`${name}: timeoutMs is gone; the engine's storeTimeoutMs bounds every store call`);
  }
}

/**
 * The store operations over the scripts, shared by both Redis adapters. Each is one script call (one
 * round trip), except an acquire that meets an undecodable record (two, at most three).
 * No timer here: the engine bounds each call and releases an acquire that lands late, which it can do
 * only if this side reports the late success instead of rejecting first.
 * `binary`: commit writes the binary layout (raw body bytes) instead of the text one; `run` must then
 * pass bytes through unchanged.
 */
export function scriptStore(
  name: string,
  call: RunScript,
  binary = false,
): Pick<IdempotencyStore, "acquire" | "commit" | "release" | "renew" | "forget"> {
  const acquireOnce = async (storeKey: string, args: string[]): Promise<unknown> => {
    try {
      return await call(SCRIPTS.acquire, storeKey, args);
    } catch (error) {
      // The answer may be lost after the script ran (a connection dropped mid-reply): release the lease
      // it may have taken, or it would block the key for leaseMs with nobody to commit it. Harmless when
      // it took nothing: RELEASE changes only a lease with this token.
      call(SCRIPTS.release, storeKey, [args[0] as string]).catch(() => {});
      throw error;
    }
  };
  return {
    async acquire(storeKey, fingerprint, leaseMs) {
      const token = newToken();
      const lease = pxMs(leaseMs);
      let unreadable = "";
      for (let attempt = 0; attempt < 3; attempt++) {
        const reply = parseAcquireReply(await acquireOnce(storeKey, [token, fingerprint, lease, unreadable]));
        if (reply.state === "acquired") {
          return reply.replacedCorrupt
            ? { state: "acquired", token, replacedCorrupt: true }
            : { state: "acquired", token };
        }
        if (reply.state === "pending") return { state: "pending", fingerprint: reply.fingerprint };
        const record = decodeValue(reply.value);
        if (record) return { state: "done", record };
        // Replace exactly the value found unreadable. Our SHA1 misses only when the text came back
        // altered (bytes that are not UTF-8, through a text client); then the next try uses the server's own.
        unreadable = reply.sha1 ?? (await sha1Hex(reply.value));
      }
      throw new Error(`${name}: a stored value does not decode and kept changing while being replaced`);
    },
    async commit(storeKey, token, record, ttlMs) {
      const value = binary ? encodeBinary(record) : `R${encodeRecord(record)}`;
      return isOne(await call(SCRIPTS.commit, storeKey, [token, value, pxMs(ttlMs)]));
    },
    async release(storeKey, token) {
      return isOne(await call(SCRIPTS.release, storeKey, [token]));
    },
    async renew(storeKey, token, leaseMs) {
      return isOne(await call(SCRIPTS.renew, storeKey, [token, pxMs(leaseMs)]));
    },
    async forget(storeKey, force) {
      const reply = Number(await call(SCRIPTS.forget, storeKey, [force ? "1" : "0"]));
      const result = (["absent", "forgotten", "in-progress"] as const)[reply];
      if (result === undefined) throw new Error(`${name}: unexpected reply from the forget script: ${reply}`);
      return result satisfies ForgetResult;
    },
  };
}

/** Lease and ttl values for PX: Redis wants a positive integer. */
function pxMs(ms: number): string {
  if (!Number.isFinite(ms) || ms <= 0) throw new RangeError(`idemfetch: expected a positive number of ms, got ${ms}`);
  return String(Math.ceil(ms));
}

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();
const EMPTY = new Uint8Array(0);
const CHAR_B = 0x42;
const CHAR_R = 0x52;
const COLON = 0x3a;

/** The binary layout: "B" <header byte length> ":" <header JSON, empty body> <body bytes>. */
export function encodeBinary(record: StoredRecord): Uint8Array {
  const header = utf8.encode(encodeRecord({ ...record, body: EMPTY }));
  const prefix = utf8.encode(`B${header.length}:`);
  const out = new Uint8Array(prefix.length + header.length + record.body.length);
  out.set(prefix, 0);
  out.set(header, prefix.length);
  out.set(record.body, prefix.length + header.length);
  return out;
}

/** A record value of either layout, as bytes or as text; `undefined` when it does not decode. */
export function decodeValue(value: string | Uint8Array): StoredRecord | undefined {
  if (typeof value === "string") {
    if (value.startsWith("R")) return decodeRecord(value.slice(1));
    // A text client decoded the bytes as UTF-8: exact unless some were not UTF-8 (then U+FFFD stands in).
    return value.startsWith("B") && !value.includes("\uFFFD") ? decodeBinary(utf8.encode(value)) : undefined;
  }
  if (value[0] === CHAR_R) return decodeRecord(fromUtf8.decode(value.subarray(1)));
  return value[0] === CHAR_B ? decodeBinary(value) : undefined;
}

function decodeBinary(bytes: Uint8Array): StoredRecord | undefined {
  const colon = bytes.indexOf(COLON);
  if (colon < 2 || colon > 12) return undefined;
  const length = Number(fromUtf8.decode(bytes.subarray(1, colon)));
  const start = colon + 1 + length;
  if (!Number.isInteger(length) || start > bytes.length) return undefined;
  const header = decodeRecord(fromUtf8.decode(bytes.subarray(colon + 1, start)));
  if (header === undefined || header.body.length !== 0) return undefined;
  // A view, not a copy: the reply is this call's own; a plain Uint8Array, so .slice() copies (Buffer's does not).
  return { ...header, body: new Uint8Array(bytes.buffer, bytes.byteOffset + start, bytes.length - start) };
}

/** ACQUIRE's reply; `value` is the whole stored record value, its layout's first byte included. */
type AcquireReply =
  | { state: "acquired"; replacedCorrupt: boolean }
  | { state: "pending"; fingerprint: string }
  | { state: "record"; value: string | Uint8Array; sha1?: string };

function parseAcquireReply(reply: unknown): AcquireReply {
  if (reply instanceof Uint8Array) {
    const kind = String.fromCharCode(reply[0] ?? 0);
    if (kind === "R" || kind === "B") return { state: "record", value: reply };
    if (kind === "H")
      return { state: "record", sha1: fromUtf8.decode(reply.subarray(1, 41)), value: reply.subarray(41) };
    reply = fromUtf8.decode(reply); // the short replies
  }
  if (typeof reply === "string") {
    if (reply === "A0" || reply === "A1") return { state: "acquired", replacedCorrupt: reply === "A1" };
    if (reply.startsWith("L")) return { state: "pending", fingerprint: reply.slice(1) };
    if (reply.startsWith("R") || reply.startsWith("B")) return { state: "record", value: reply };
    if (reply.startsWith("H")) return { state: "record", sha1: reply.slice(1, 41), value: reply.slice(41) };
  }
  throw new Error(`idemfetch: unexpected reply from the acquire script: ${String(reply).slice(0, 40)}`);
}

/** 1 from COMMIT/RELEASE/RENEW, as a number (RESP2/RESP3) or a string (ioredis `stringNumbers`). */
function isOne(reply: unknown): boolean {
  return reply === 1 || reply === "1";
}

/** SHA1 hex of the bytes (text as UTF-8), equal to Lua's redis.sha1hex of the same bytes (Web Crypto: every runtime). */
async function sha1Hex(value: string | Uint8Array): Promise<string> {
  const bytes = typeof value === "string" ? utf8.encode(value) : value;
  const digest = await crypto.subtle.digest("SHA-1", bytes as Uint8Array<ArrayBuffer>);
  let out = "";
  for (const b of new Uint8Array(digest)) out += (b < 16 ? "0" : "") + b.toString(16);
  return out;
}
