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
import {
  type ForgetResult,
  type IdempotencyStore,
  type LiveHead,
  type LiveRead,
  newToken,
  type StoredRecord,
} from "../src/store.ts";

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

// Live streams (docs/protocol.md "The live-stream capability"): one more key per store key, KEYS[2], always on
// KEYS[1]'s Cluster slot (liveKeyOf). It holds, while a lease streams and for as long as that lease lives:
//   "S" <id> <n> ":" <head JSON, n bytes> <body bytes>    id: SHA1 hex of the owner token (40), never the token
// and after that lease's commit, for as long as the record: "D" <id> <SHA1 hex of the record value>.
// Every live script checks the lease at KEYS[1] first, so a part under a token that lost the lease stores nothing.
// They wake readers on a channel named like KEYS[2]; commit and release wake KEYS[1]'s waiters as before.
// A text transport (Upstash REST: JSON strings both ways, replies decoded as UTF-8) cannot carry raw bytes, and a
// part may end inside a UTF-8 character: with "hex" as their last ARGV, PUBLISH_LIVE takes the part's bytes as hex
// and READ_LIVE answers the body as hex. What is stored is the same raw bytes either way, so offsets stay byte
// offsets and an ioredisStore and an upstashStore read each other's streams.

/** Lua: the owner check without copying a record value (GETRANGE of the lease prefix only), and the wake-ups. */
const LIVE_LIB = `
local function owns(token)
  local owner = "L" .. token .. ":"
  local p = redis.pcall("GETRANGE", KEYS[1], 0, #owner - 1)
  return type(p) == "string" and p == owner
end
local function wake(key, message)
  if not pcall(redis.call, "SPUBLISH", key, message) then redis.call("PUBLISH", key, message) end
end
-- The stream's first body byte (0-based) when KEYS[2] holds the stream of id, else nil.
local function bodyStart(id)
  local top = redis.pcall("GETRANGE", KEYS[2], 0, 63)
  if type(top) ~= "string" or string.sub(top, 1, 41) ~= "S" .. id then return nil end
  local n = string.match(top, "^(%d+):", 42)
  if not n then return nil end
  return 41 + #n + 1 + tonumber(n)
end`;

/** Lua: hex <-> bytes for a text transport, by table (gsub with a table runs no Lua function per byte). */
const HEX_LIB = `
local function hexTable()
  local t = {}
  for i = 0, 255 do
    local c, h = string.char(i), string.format("%02x", i)
    t[c] = h
    t[h] = c
  end
  return t
end`;

/**
 * Stores one part of the owner's stream. Returns 1 stored (or the part last stored, sent again), 0 not the
 * owner, -1 a head part not at offset 0, -2 a second head, -3 a body part before the head, -4 a gap.
 */
export const PUBLISH_LIVE = `${LIVE_LIB}${HEX_LIB}
-- KEYS[1]  store key (the lease)
-- KEYS[2]  live key
-- ARGV[1]  owner token
-- ARGV[2]  body bytes published before this part (decimal)
-- ARGV[3]  this part's body bytes (hex when ARGV[5] is "hex")
-- ARGV[4]  "" or the head as JSON: this part starts the stream
-- ARGV[5]  absent, or "hex": ARGV[3] is hex (a text transport)
if not owns(ARGV[1]) then return 0 end
local ttl = redis.call("PTTL", KEYS[1])
if ttl <= 0 then return 0 end
local body = ARGV[3]
if ARGV[5] == "hex" then
  if #body % 2 ~= 0 or string.find(body, "[^0-9a-f]") then return -5 end
  body = string.gsub(body, "..", hexTable())
end
local id = redis.sha1hex(ARGV[1])
local offset = tonumber(ARGV[2])
local start = bodyStart(id)
local length = -1
if start then length = redis.call("STRLEN", KEYS[2]) - start end
if length == offset + #body and (ARGV[4] == "" or offset == 0) then
  if #body == 0 or redis.call("GETRANGE", KEYS[2], start + offset, start + length - 1) == body then return 1 end
end
if ARGV[4] ~= "" then
  if offset ~= 0 then return -1 end
  if start then return -2 end
  redis.call("SET", KEYS[2], "S" .. id .. #ARGV[4] .. ":" .. ARGV[4] .. body, "PX", ttl)
else
  if not start then return -3 end
  if length ~= offset then return -4 end
  redis.call("APPEND", KEYS[2], body)
  redis.call("PEXPIRE", KEYS[2], ttl)
end
wake(KEYS[2], "part")
return 1
`;

/**
 * What a reader finds: "A" absent; "P" a lease with no stream yet; "S" + the stream's prefix (id, head)
 * + its body from ARGV[2] when ARGV[1] is its id, else from 0 (as hex when ARGV[3] is "hex"); "D" + 80 chars
 * (the tombstone's id and record SHA1, or "-" x 80) + the record value.
 */
export const READ_LIVE = `${LIVE_LIB}${HEX_LIB}
-- KEYS[1]  store key
-- KEYS[2]  live key
-- ARGV[1]  "" or the stream id the reader holds
-- ARGV[2]  body bytes of that stream the reader holds (decimal)
-- ARGV[3]  absent, or "hex": answer the body as hex (a text transport)
local v = redis.pcall("GET", KEYS[1])
if type(v) ~= "string" then return "A" end
local kind = string.sub(v, 1, 1)
if kind == "R" or kind == "B" then
  local top = redis.pcall("GETRANGE", KEYS[2], 0, 80)
  if type(top) == "string" and #top == 81 and string.sub(top, 1, 1) == "D" then return "D" .. string.sub(top, 2) .. v end
  return "D" .. string.rep("-", 80) .. v
end
local sep = string.find(v, ":", 2, true)
if kind ~= "L" or not sep or redis.call("PTTL", KEYS[1]) == -1 then return "A" end
local id = redis.sha1hex(string.sub(v, 2, sep - 1))
local start = bodyStart(id)
if not start then return "P" end
local from = start
if ARGV[1] == id then from = start + tonumber(ARGV[2]) end
local body = redis.call("GETRANGE", KEYS[2], from, -1)
if ARGV[3] == "hex" then body = string.gsub(body, ".", hexTable()) end
return redis.call("GETRANGE", KEYS[2], 0, start - 1) .. body
`;

/** COMMIT for a lease that streamed: also leaves the tombstone in place of the chunks. Returns 1, or 0. */
export const COMMIT_LIVE = `${LIVE_LIB}
-- KEYS[1]  store key
-- KEYS[2]  live key
-- ARGV[1]  owner token
-- ARGV[2]  record value, either layout
-- ARGV[3]  ttl in ms (positive integer)
-- ARGV[4]  SHA1 hex of ARGV[2], for the tombstone
if not owns(ARGV[1]) then return 0 end
redis.call("SET", KEYS[1], ARGV[2], "PX", ARGV[3])
local id = redis.sha1hex(ARGV[1])
if bodyStart(id) then
  redis.call("SET", KEYS[2], "D" .. id .. ARGV[4], "PX", ARGV[3])
else
  redis.call("DEL", KEYS[2])
end
wake(KEYS[1], "commit")
wake(KEYS[2], "commit")
return 1
`;

/** RELEASE for a lease that streamed: drops the chunks too. Returns 1, or 0. */
export const RELEASE_LIVE = `${LIVE_LIB}
-- KEYS[1]  store key
-- KEYS[2]  live key
-- ARGV[1]  owner token
if not owns(ARGV[1]) then return 0 end
redis.call("DEL", KEYS[1], KEYS[2])
wake(KEYS[1], "release")
wake(KEYS[2], "release")
return 1
`;

/** RENEW for a lease that streamed: the chunks live as long as the lease. Returns 1, or 0. */
export const RENEW_LIVE = `${LIVE_LIB}
-- KEYS[1]  store key
-- KEYS[2]  live key
-- ARGV[1]  owner token
-- ARGV[2]  lease in ms from now (positive integer)
if not owns(ARGV[1]) then return 0 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
if bodyStart(redis.sha1hex(ARGV[1])) then redis.call("PEXPIRE", KEYS[2], ARGV[2]) end
return 1
`;

/** SHA1 (hex) of each script, as EVALSHA wants it; a test checks each against SCRIPT LOAD. */
export const SHA1 = {
  ACQUIRE: "47d2832516d9953ecb39a906e2dee700715e6308",
  COMMIT: "38f0b146ac00a0ad4efbb39a622744e5e97ccecf",
  RELEASE: "d60ce671d7c7c9a5242884771fa8d84408cb76a3",
  RENEW: "a6f3d16635bd8a94a6751e8d6bd56ef28d85f5ed",
  FORGET: "d4f82cb42445f50e1388294187251df6a7276f73",
  PUBLISH_LIVE: "4552b71e0669d0d86b778c2e00bed1722c40fc11",
  READ_LIVE: "2964ec85e267278ba8c9f680b95494e5d06e653d",
  COMMIT_LIVE: "621f906f20f1cd60dc6d3966469195477abadecf",
  RELEASE_LIVE: "373b825241adf746990d916c40d7bf7791994a5f",
  RENEW_LIVE: "7e12a6cfcfe2fc3c99cceb291530844e7764db0a",
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
  publishLive: { lua: PUBLISH_LIVE, sha1: SHA1.PUBLISH_LIVE },
  readLive: { lua: READ_LIVE, sha1: SHA1.READ_LIVE },
  commitLive: { lua: COMMIT_LIVE, sha1: SHA1.COMMIT_LIVE },
  releaseLive: { lua: RELEASE_LIVE, sha1: SHA1.RELEASE_LIVE },
  renewLive: { lua: RENEW_LIVE, sha1: SHA1.RENEW_LIVE },
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

/** Runs one script on two keys (KEYS[1], KEYS[2]), as RunScript does on one. */
export type RunScript2 = (script: Script, keys: [string, string], args: (string | Uint8Array)[]) => Promise<unknown>;

/**
 * The live-stream capability over the live scripts, for a Redis adapter. Its commit, release and renew replace
 * the plain ones: for a lease this store object published under, they run the live variants (chunks replaced by
 * the tombstone, dropped, extended); for any other, the plain script, so an answer never streamed costs nothing
 * more. The leader must publish, renew and commit through the same store object.
 */
export function liveScriptStore(
  name: string,
  call: RunScript2,
  ops: Pick<IdempotencyStore, "commit" | "release" | "renew">,
  options: {
    binary: boolean;
    keyPrefix: string;
    /** A text transport (REST): body parts travel as hex both ways (the scripts store and read raw bytes). */
    hex?: boolean;
  },
): Required<Pick<IdempotencyStore, "commit" | "release" | "renew" | "publishLive" | "readLive">> {
  // storeKey -> the token that published under it here; bounded (a lease abandoned without commit or release).
  const streaming = new Map<string, string>();
  const keys = (storeKey: string): [string, string] => [storeKey, liveKeyOf(storeKey, options.keyPrefix)];
  const transport = options.hex ? ["hex"] : [];
  const mine = (storeKey: string, token: string): boolean => {
    if (streaming.get(storeKey) !== token) return false;
    streaming.delete(storeKey);
    return true;
  };
  return {
    async publishLive(storeKey, token, { head, offset, body }) {
      if (!Number.isSafeInteger(offset) || offset < 0) throw new RangeError(`${name}: bad live offset ${offset}`);
      const reply = Number(
        await call(SCRIPTS.publishLive, keys(storeKey), [
          token,
          String(offset),
          options.hex ? toHex(body) : body,
          head ? JSON.stringify({ s: head.status, t: head.statusText, h: head.headers }) : "",
          ...transport,
        ]),
      );
      if (reply === 1) {
        if (!streaming.has(storeKey) && streaming.size >= 10_000)
          streaming.delete(streaming.keys().next().value as string);
        streaming.set(storeKey, token);
        return true;
      }
      if (reply === 0) return false;
      throw new RangeError(
        `${name}: publishLive refused the part at offset ${offset}: ${PUBLISH_ERRORS[reply] ?? reply}`,
      );
    },
    async readLive(storeKey, stream, offset) {
      const reply = await call(SCRIPTS.readLive, keys(storeKey), [
        stream ?? "",
        String(Math.max(0, offset)),
        ...transport,
      ]);
      const bytes = typeof reply === "string" ? utf8.encode(reply) : (reply as Uint8Array);
      return parseLiveReply(name, bytes, stream, options.hex === true);
    },
    async commit(storeKey, token, record, ttlMs) {
      if (!mine(storeKey, token)) return ops.commit(storeKey, token, record, ttlMs);
      const value = options.binary ? encodeBinary(record) : `R${encodeRecord(record)}`;
      const args = [token, value, pxMs(ttlMs), await sha1Hex(value)];
      return isOne(await call(SCRIPTS.commitLive, keys(storeKey), args));
    },
    async release(storeKey, token) {
      if (!mine(storeKey, token)) return ops.release(storeKey, token);
      return isOne(await call(SCRIPTS.releaseLive, keys(storeKey), [token]));
    },
    async renew(storeKey, token, leaseMs) {
      if (streaming.get(storeKey) !== token) return ops.renew(storeKey, token, leaseMs);
      const renewed = isOne(await call(SCRIPTS.renewLive, keys(storeKey), [token, pxMs(leaseMs)]));
      if (!renewed) streaming.delete(storeKey);
      return renewed;
    },
  };
}

const PUBLISH_ERRORS: Record<number, string> = {
  [-1]: "a head part must have offset 0",
  [-2]: "this lease's stream already has its head",
  [-3]: "a body part before this lease's head",
  [-4]: "a gap (the offset is not the bytes stored)",
  [-5]: "the part's hex does not decode",
};

const DASHES = "-".repeat(80);

/** READ_LIVE's reply; a record that does not decode reads as absent (the next acquire replaces it). */
async function parseLiveReply(
  name: string,
  reply: Uint8Array,
  asked: string | undefined,
  hex: boolean,
): Promise<LiveRead> {
  const kind = String.fromCharCode(reply[0] ?? 0);
  if (kind === "A") return { state: "absent" };
  if (kind === "P") return { state: "pending" };
  if (kind === "D") {
    const tomb = fromUtf8.decode(reply.subarray(1, 81));
    const value = reply.subarray(81);
    const record = decodeValue(value);
    if (!record) return { state: "absent" };
    const stream = tomb.slice(0, 40);
    // The tombstone counts only for the very record it was written with (a forget and another commit may follow).
    if (tomb !== DASHES && stream === asked && tomb.slice(40) === (await sha1Hex(value))) {
      return { state: "done", record, stream };
    }
    return { state: "done", record };
  }
  if (kind === "S") {
    const stream = fromUtf8.decode(reply.subarray(1, 41));
    const colon = reply.indexOf(COLON, 41);
    const length = Number(fromUtf8.decode(reply.subarray(41, colon)));
    const head = parseHead(fromUtf8.decode(reply.subarray(colon + 1, colon + 1 + length)));
    const rest = reply.subarray(colon + 1 + length);
    // Copied: the reply buffer may be pooled.
    const body = hex ? fromHex(rest) : new Uint8Array(rest);
    if (colon > 0 && Number.isInteger(length) && head && body) return { state: "live", stream, head, body };
  }
  throw new Error(`${name}: unexpected reply from the read-live script: ${fromUtf8.decode(reply.subarray(0, 40))}`);
}

const HEX = Array.from({ length: 256 }, (_, i) => (i < 16 ? "0" : "") + i.toString(16));

/** Lower-case hex of the bytes, as the scripts' hexTable writes and reads it. */
function toHex(bytes: Uint8Array): string {
  let out = "";
  for (const b of bytes) out += HEX[b] as string;
  return out;
}

/** The bytes of lower-case hex given as its ASCII bytes; undefined when it is not that. */
function fromHex(ascii: Uint8Array): Uint8Array | undefined {
  if (ascii.length % 2 !== 0) return undefined;
  const out = new Uint8Array(ascii.length / 2);
  for (let i = 0; i < out.length; i++) {
    const hi = nibble(ascii[2 * i] as number);
    const lo = nibble(ascii[2 * i + 1] as number);
    if (hi < 0 || lo < 0) return undefined;
    out[i] = (hi << 4) | lo;
  }
  return out;
}

/** 0-15 for an ASCII "0"-"9" or "a"-"f", else -1. */
function nibble(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

function parseHead(text: string): LiveHead | undefined {
  try {
    const { s, t, h } = JSON.parse(text) as { s?: unknown; t?: unknown; h?: unknown };
    const headers =
      Array.isArray(h) && h.every((p) => Array.isArray(p) && p.length === 2 && p.every((x) => typeof x === "string"));
    if (typeof s === "number" && typeof t === "string" && headers)
      return { status: s, statusText: t, headers: h as [string, string][] };
  } catch {}
  return undefined;
}

/**
 * The key of `storeKey`'s live stream, on the Cluster slot of `keyPrefix + storeKey` (the client prefixes
 * both): `<storeKey>:live` when the full key has a hash tag, else `<storeKey>:live{<tag>}` with a short tag of
 * the same slot (store keys have no braces), else a searched suffix.
 */
export function liveKeyOf(storeKey: string, keyPrefix = ""): string {
  const full = keyPrefix + storeKey;
  if (hashTag(full) !== undefined) return `${storeKey}:live`;
  const slot = keySlot(full);
  if (!full.includes("{")) return `${storeKey}:live{${tagOfSlot(slot)}}`;
  // A "{" with no tag after it: the whole key is hashed; append until the slot matches.
  for (let i = 0; ; i++) {
    const candidate = `${storeKey}:live:${i.toString(36)}`;
    if (keySlot(keyPrefix + candidate) === slot) return candidate;
  }
}

/** Redis Cluster's slot of a key (CRC16/XMODEM of its hash tag, or of the whole key, mod 16384). */
export function keySlot(key: string): number {
  return crc16(utf8.encode(hashTag(key) ?? key)) & 16_383;
}

/** The part of `key` Redis hashes when it has one: between the first "{" and the next "}", if not empty. */
function hashTag(key: string): string | undefined {
  const open = key.indexOf("{");
  if (open < 0) return undefined;
  const close = key.indexOf("}", open + 1);
  return close > open + 1 ? key.slice(open + 1, close) : undefined;
}

const slotTags = new Map<number, string>();

/** The first base-36 string whose slot is `slot` (about 16 000 CRCs of 3 bytes once per slot, then cached). */
function tagOfSlot(slot: number): string {
  let tag = slotTags.get(slot);
  for (let i = 0; tag === undefined; i++) {
    const candidate = i.toString(36);
    if ((crc16(utf8.encode(candidate)) & 16_383) === slot) tag = candidate;
  }
  slotTags.set(slot, tag);
  return tag;
}

let crcTable: Uint16Array | undefined;

function crc16(bytes: Uint8Array): number {
  if (!crcTable) {
    crcTable = new Uint16Array(256);
    for (let i = 0; i < 256; i++) {
      let c = i << 8;
      for (let j = 0; j < 8; j++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
      crcTable[i] = c;
    }
  }
  let crc = 0;
  for (const b of bytes) crc = ((crc << 8) & 0xffff) ^ (crcTable[((crc >> 8) ^ b) & 0xff] as number);
  return crc;
}
