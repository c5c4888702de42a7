// Checks the local Upstash REST fixture against the real @upstash/redis client and the documented wire format.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes, randomUUID } from "node:crypto";
import { once } from "node:events";
import { createServer } from "node:net";
import { Redis } from "@upstash/redis";
import { Redis as IORedis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startUpstashFixture, type UpstashFixture } from "./fixtures/upstash-server.ts";

const prefix = `idemfetch-test:upstash-fixture:${process.pid}:${randomUUID()}:`;
const used = new Set<string>();
const key = (name: string) => {
  used.add(prefix + name);
  return prefix + name;
};
// A fresh script body per test run, so the shared Redis cannot have it cached from an earlier run.
const nonce = () => randomUUID();

let fx: UpstashFixture;
let direct: IORedis;
let plain: Redis; // automaticDeserialization off, auto-pipelining on (the client's default)
let unpiped: Redis; // automaticDeserialization off, auto-pipelining off

beforeAll(async () => {
  fx = await startUpstashFixture();
  direct = new IORedis("redis://127.0.0.1:6379", { protocol: 2 });
  plain = new Redis({ url: fx.url, token: fx.token, automaticDeserialization: false });
  unpiped = new Redis({ url: fx.url, token: fx.token, automaticDeserialization: false, enableAutoPipelining: false });
});

afterAll(async () => {
  if (used.size > 0) await direct.del(...used);
  direct.disconnect();
  await fx.close();
});

async function post(path: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(fx.url + path, {
    method: "POST",
    headers: { authorization: `Bearer ${fx.token}`, "content-type": "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as unknown };
}

const counters = () => ({ requests: fx.requests, commands: fx.commands });
const delta = (before: { requests: number; commands: number }) => ({
  requests: fx.requests - before.requests,
  commands: fx.commands - before.commands,
});

describe("wire format (raw fetch)", () => {
  it("answers one command with {result}, strings plain without Upstash-Encoding", async () => {
    const k = key("wire-plain");
    expect(await post("/", ["SET", k, "bar"])).toEqual({ status: 200, body: { result: "OK" } });
    expect(await post("/", ["GET", k])).toEqual({ status: 200, body: { result: "bar" } });
    expect(await post("/", ["INCR", key("wire-int")])).toEqual({ status: 200, body: { result: 1 } });
    expect(await post("/", ["GET", key("wire-missing")])).toEqual({ status: 200, body: { result: null } });
    expect(await post("/", ["SETEX", k, 100, "n"])).toEqual({ status: 200, body: { result: "OK" } });
  });

  it("base64-encodes every string under Upstash-Encoding, nested ones and nested OK included", async () => {
    const k = key("wire-b64");
    const b64 = { "upstash-encoding": "base64" };
    // A top-level "OK" stays as is (documented: "except for the OK response").
    expect(await post("/", ["SET", k, "bar"], b64)).toEqual({ status: 200, body: { result: "OK" } });
    expect(await post("/", ["GET", k], b64)).toEqual({ status: 200, body: { result: "YmFy" } });
    const script = "return {redis.call('SET', KEYS[1], 'bar'), redis.call('GET', KEYS[1]), 7, false, {'OK', 'é'}}";
    expect(await post("/", ["EVAL", script, 1, k], b64)).toEqual({
      status: 200,
      body: { result: ["T0s=", "YmFy", 7, null, ["T0s=", "w6k="]] },
    });
    expect(await post("/", ["EVAL", script, 1, k])).toEqual({
      status: 200,
      body: { result: ["OK", "bar", 7, null, ["OK", "é"]] },
    });
    await direct.set(k, Buffer.from([0xff, 0xfe, 0x00, 0x41]));
    expect(await post("/", ["GET", k], b64)).toEqual({ status: 200, body: { result: "//4AQQ==" } });
    // Without the header invalid UTF-8 becomes U+FFFD, as the docs say the service does.
    expect(await post("/", ["GET", k])).toEqual({ status: 200, body: { result: "\uFFFD\uFFFD\u0000A" } });
  });

  it("answers a failing command with 400 {error}", async () => {
    expect(await post("/", ["GET"])).toEqual({
      status: 400,
      body: { error: "ERR wrong number of arguments for 'get' command" },
    });
    expect(await post("/", ["EVALSHA", "0".repeat(40), 0])).toEqual({
      status: 400,
      body: { error: "NOSCRIPT No matching script. Please use EVAL." },
    });
  });

  it("answers /pipeline with one {result}|{error} per command and HTTP 200", async () => {
    const k = key("wire-pipeline");
    expect(
      await post("/pipeline", [
        ["SET", k, "x"],
        ["INCR", k],
        ["GET", k],
        ["SETEX", k, 13, "z"],
      ]),
    ).toEqual({
      status: 200,
      body: [
        { result: "OK" },
        { error: "ERR value is not an integer or out of range" },
        { result: "x" },
        { result: "OK" },
      ],
    });
  });

  it("runs /multi-exec as a transaction; a queue-time error discards it with one 400 {error}", async () => {
    const k = key("wire-multi");
    expect(
      await post(
        "/multi-exec",
        [
          ["SET", k, "x"],
          ["INCR", k],
          ["GET", k],
        ],
        { "upstash-encoding": "base64" },
      ),
    ).toEqual({
      status: 200,
      body: [{ result: "OK" }, { error: "ERR value is not an integer or out of range" }, { result: "eA==" }],
    });
    expect(await post("/multi-exec", [["SET", k, "y"], ["GET"]])).toEqual({
      status: 400,
      body: {
        error:
          "EXECABORT Transaction discarded because of previous errors. ERR wrong number of arguments for 'get' command",
      },
    });
    expect(await direct.get(k)).toBe("x");
  });

  it("requires the bearer token: 401 {error: Unauthorized}; `_token` works as documented", async () => {
    const unauthorized = { status: 401, body: { error: "Unauthorized" } };
    expect(await post("/", ["PING"], { authorization: "Bearer wrong" })).toEqual(unauthorized);
    const missing = await fetch(fx.url, { method: "POST", body: '["PING"]' });
    expect({ status: missing.status, body: await missing.json() }).toEqual(unauthorized);
    const viaQuery = await fetch(`${fx.url}/?_token=${encodeURIComponent(fx.token)}`, {
      method: "POST",
      body: '["PING"]',
    });
    expect({ status: viaQuery.status, body: await viaQuery.json() }).toEqual({ status: 200, body: { result: "PONG" } });
  });

  it("rejects bad requests with a JSON {error}", async () => {
    const get = await fetch(fx.url, { headers: { authorization: `Bearer ${fx.token}` } });
    expect({ status: get.status, body: await get.json() }).toEqual({
      status: 405,
      body: { error: "ERR method not allowed: GET" },
    });
    expect(await post("/", "[not json")).toEqual({
      status: 400,
      body: { error: "ERR request body is not valid JSON" },
    });
    expect(await post("/", [])).toEqual({
      status: 400,
      body: { error: "ERR a command must be a non-empty JSON array" },
    });
    expect(await post("/", ["SET", key("bad"), { a: 1 }])).toEqual({
      status: 400,
      body: { error: 'ERR invalid command argument: {"a":1}' },
    });
    expect(await post("/pipeline", ["GET", "x"])).toEqual({
      status: 400,
      body: { error: "ERR a command must be a non-empty JSON array" },
    });
    expect(await post("/multi-exec", [])).toEqual({
      status: 400,
      body: { error: "ERR body must be a non-empty JSON array of commands" },
    });
    expect(await post("/", ["SUBSCRIBE", "chan"])).toEqual({
      status: 400,
      body: { error: "ERR command is not supported: SUBSCRIBE" },
    });
    expect(await post("/get/x", "")).toEqual({
      status: 404,
      body: { error: "ERR unsupported path (path-style commands are not emulated): /get/x" },
    });
    expect(await post("/", JSON.stringify(["SET", key("huge"), "x".repeat(10_000_000)]))).toEqual({
      status: 400,
      body: { error: "ERR max request size exceeded" },
    });
  });

  it("counts HTTP requests and Redis commands", async () => {
    const before = counters();
    await post("/", ["PING"]);
    await post("/", ["PING"], { authorization: "Bearer wrong" });
    await post("/pipeline", [["PING"], ["PING"], ["PING"]]);
    await post("/multi-exec", [["PING"], ["PING"]]);
    expect(delta(before)).toEqual({ requests: 4, commands: 6 });
  });
});

describe("fault mode", () => {
  const send = (body: unknown) =>
    fetch(fx.url, { method: "POST", headers: { authorization: `Bearer ${fx.token}` }, body: JSON.stringify(body) });

  it("status: answers it with an {error} body and runs nothing; `times` limits it, undefined clears it", async () => {
    const k = key("fault-status");
    const commands = fx.commands;
    fx.fault({ kind: "status", status: 429 }, 1);
    const limited = await send(["SET", k, "1"]);
    expect(limited.status).toBe(429);
    expect(await limited.json()).toEqual({ error: "ERR fixture fault: HTTP 429" });
    expect(fx.commands).toBe(commands);
    expect(await direct.get(k)).toBe(null);
    expect((await send(["SET", k, "2"])).status).toBe(200); // only one request was faulted
    fx.fault({ kind: "status", status: 503 });
    expect((await send(["GET", k])).status).toBe(503);
    expect((await send(["GET", k])).status).toBe(503);
    fx.fault(undefined);
    expect(await (await send(["GET", k])).json()).toEqual({ result: "2" });
  });

  it("slow: the command runs and answers after the delay", async () => {
    const k = key("fault-slow");
    fx.fault({ kind: "slow", delayMs: 300 });
    const started = performance.now();
    const pending = send(["SET", k, "slow"]);
    await new Promise((r) => setTimeout(r, 100));
    expect(await direct.get(k)).toBe(null); // not run yet
    expect(await (await pending).json()).toEqual({ result: "OK" });
    expect(performance.now() - started).toBeGreaterThanOrEqual(295);
    fx.fault(undefined);
  });

  it("drop: the connection closes without an answer, before the command ran or after it", async () => {
    const before = key("fault-drop-before");
    const after = key("fault-drop-after");
    const faulted = fx.faulted;
    fx.fault({ kind: "drop", when: "before" });
    await expect(send(["SET", before, "x"])).rejects.toThrow(/fetch failed/);
    fx.fault({ kind: "drop", when: "after" });
    await expect(send(["SET", after, "x"])).rejects.toThrow(/fetch failed/);
    fx.fault(undefined);
    expect(fx.faulted).toBe(faulted + 2);
    expect(await direct.get(before)).toBe(null); // never ran
    expect(await direct.get(after)).toBe("x"); // ran; only its answer was lost
  });
});

describe("@upstash/redis against the fixture", () => {
  it("SET/GET round-trips unicode and control characters byte-exactly", async () => {
    const k = key("unicode");
    const value = '\u0000\u0001\u001f\u007f é ü ß ✓ 🐄 "quoted" \\ \n\r\t {"json":[1,2]} end';
    for (const client of [plain, unpiped, new Redis({ url: fx.url, token: fx.token, responseEncoding: false })]) {
      expect(await client.set(k, value)).toBe("OK");
      expect(await client.get(k)).toBe(value);
      expect(await direct.getBuffer(k)).toEqual(Buffer.from(value, "utf8"));
    }
  });

  it("SET/GET a 1 MiB value", async () => {
    const k = key("big");
    const value = randomBytes(1 << 20)
      .toString("base64")
      .slice(0, 1 << 20);
    expect(await plain.set(k, value)).toBe("OK");
    expect(await plain.get(k)).toBe(value);
    expect(await direct.strlen(k)).toBe(1 << 20);
  });

  it("INCR, DEL and nil", async () => {
    const k = key("counter");
    expect(await unpiped.incr(k)).toBe(1);
    expect(await unpiped.incrby(k, 41)).toBe(42);
    expect(await unpiped.get(k)).toBe("42");
    expect(await unpiped.del(k, key("never-set"))).toBe(1);
    expect(await unpiped.get(k)).toBeNull();
    expect(await unpiped.exists(k)).toBe(0);
  });

  it("EXPIRE / PTTL, SET PX", async () => {
    const k = key("ttl");
    expect(await unpiped.pttl(k)).toBe(-2);
    await unpiped.set(k, "v");
    expect(await unpiped.pttl(k)).toBe(-1);
    expect(await unpiped.expire(k, 100)).toBe(1);
    const pttl = await unpiped.pttl(k);
    expect(pttl).toBeGreaterThan(95_000);
    expect(pttl).toBeLessThanOrEqual(100_000);
    expect(await unpiped.set(k, "w", { px: 5_000 })).toBe("OK");
    const px = await unpiped.pttl(k);
    expect(px).toBeGreaterThan(4_000);
    expect(px).toBeLessThanOrEqual(5_000);
    expect(await unpiped.set(k, "x", { nx: true, px: 5_000 })).toBeNull();
  });

  it("explicit pipeline: one POST /pipeline, results in order, per-command errors", async () => {
    const k = key("pipeline");
    const before = counters();
    const p = unpiped.pipeline();
    p.set(k, "10").incr(k).get(k).del(k).get(k);
    expect(await p.exec()).toEqual(["OK", 11, "11", 1, null]);
    expect(delta(before)).toEqual({ requests: 1, commands: 5 });

    const failing = unpiped.pipeline().set(k, "x").incr(k);
    await expect(failing.exec()).rejects.toThrow(
      "Command 2 [ incr ] failed: ERR value is not an integer or out of range",
    );
    const kept = await unpiped.pipeline().set(k, "x").incr(k).exec({ keepErrors: true });
    expect(kept).toEqual([
      { result: "OK", error: undefined },
      { result: undefined, error: "ERR value is not an integer or out of range" },
    ]);
  });

  it("automatic pipelining batches concurrent writes into one request", async () => {
    const [a, b] = [key("auto-a"), key("auto-b")];
    let before = counters();
    expect(await Promise.all([plain.incr(a), plain.incr(a), plain.incr(b), plain.incrby(a, 10)])).toEqual([
      1, 2, 1, 12,
    ]);
    expect(delta(before)).toEqual({ requests: 1, commands: 4 });
    // Reads and writes go in two separate, concurrent pipelines: their order is not guaranteed.
    before = counters();
    const [set] = await Promise.all([plain.set(a, "v"), plain.get(b)]);
    expect(set).toBe("OK");
    expect(delta(before)).toEqual({ requests: 2, commands: 2 });
  });

  it("multi-exec", async () => {
    const k = key("multi");
    const before = counters();
    const tx = plain.multi();
    tx.set(k, "1").incr(k).get(k).pexpire(k, 10_000);
    expect(await tx.exec()).toEqual(["OK", 2, "2", 1]);
    expect(delta(before)).toEqual({ requests: 1, commands: 4 });
  });

  it("EVAL: keys, args (numbers sent as JSON numbers), nested status replies", async () => {
    const k = key("eval");
    const script = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1, redis.call('SET', KEYS[1], ARGV[1])}";
    for (const client of [plain, unpiped]) {
      expect(await client.eval(script, [k], ["é✓", 41])).toEqual([k, "é✓", 42, "OK"]);
    }
    expect(await direct.get(k)).toBe("é✓");
  });

  it("SCRIPT LOAD / EXISTS and EVALSHA; NOSCRIPT comes back as an error", async () => {
    const k = key("evalsha");
    const script = `return redis.call('INCRBY', KEYS[1], ARGV[1]) -- ${nonce()}`;
    const sha = createHash("sha1").update(script).digest("hex");
    await expect(plain.evalsha(sha, [k], [5])).rejects.toThrow("Command failed: NOSCRIPT No matching script");
    await expect(unpiped.evalsha(sha, [k], [5])).rejects.toThrow(/^NOSCRIPT No matching script.*command was:/);
    expect(await unpiped.scriptExists(sha)).toEqual([0]);
    expect(await unpiped.scriptLoad(script)).toBe(sha);
    expect(await unpiped.scriptExists(sha)).toEqual([1]);
    expect(await plain.evalsha(sha, [k], [5])).toBe(5);
    expect(await unpiped.evalsha(sha, [k], [5])).toBe(10);
  });

  it.each([
    ["auto-pipelined", () => plain],
    ["not pipelined", () => unpiped],
  ])("createScript().exec falls back from NOSCRIPT to EVAL (%s)", async (_name, client) => {
    const k = key(`script-${_name}`);
    const script = client().createScript<number>(`return redis.call('INCRBY', KEYS[1], ARGV[1]) -- ${nonce()}`);
    let before = counters();
    expect(await script.exec([k], ["2"])).toBe(2);
    expect(delta(before)).toEqual({ requests: 2, commands: 2 }); // EVALSHA -> NOSCRIPT, then EVAL
    before = counters();
    expect(await script.exec([k], ["2"])).toBe(4);
    expect(delta(before)).toEqual({ requests: 1, commands: 1 }); // EVAL cached it: EVALSHA only
  });

  it("default options: automatic deserialization parses JSON (and numeric strings)", async () => {
    const defaults = new Redis({ url: fx.url, token: fx.token });
    const [obj, num] = [key("deser-obj"), key("deser-num")];
    await defaults.set(obj, { a: 1, b: ["x", null] });
    expect(await direct.get(obj)).toBe('{"a":1,"b":["x",null]}');
    expect(await defaults.get(obj)).toEqual({ a: 1, b: ["x", null] });
    await defaults.set(num, "123");
    expect(await defaults.get(num)).toBe(123);
    expect(await defaults.incr(key("deser-counter"))).toBe(1);
  });

  it("binary values do not survive the client's base64 decoding (it decodes as UTF-8)", async () => {
    const k = key("binary");
    await direct.set(k, Buffer.from([0xff, 0xfe, 0x00, 0x41]));
    expect(await plain.get(k)).toBe("\uFFFD\uFFFD\u0000A");
  });

  it.each([
    ["auto-pipelined", true],
    ["not pipelined", false],
  ])("a wrong token rejects with Unauthorized (%s)", async (_name, enableAutoPipelining) => {
    const wrong = new Redis({ url: fx.url, token: "wrong-token", enableAutoPipelining });
    await expect(wrong.get(key("unauthorized"))).rejects.toThrow(/^Unauthorized, command was:/);
  });

  it("signal: the function form rejects with AbortError; a static aborted signal does not", async () => {
    const before = counters();
    const fnSignal = new Redis({ url: fx.url, token: fx.token, signal: () => AbortSignal.abort() });
    await expect(fnSignal.get(key("signal"))).rejects.toMatchObject({ name: "AbortError" });
    const staticSignal = { url: fx.url, token: fx.token, signal: AbortSignal.abort() };
    // The client fakes a 200 {"result": <reason>} answer: null once base64-decoded, or a TypeError in a pipeline.
    expect(await new Redis({ ...staticSignal, enableAutoPipelining: false }).get(key("signal"))).toBeNull();
    await expect(new Redis(staticSignal).get(key("signal"))).rejects.toThrow(TypeError);
    expect(delta(before)).toEqual({ requests: 0, commands: 0 });
  });
});

async function freePort(): Promise<number> {
  const server = createServer().listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function startRedisServer(port: number): Promise<ChildProcess> {
  const child = spawn("redis-server", [
    "--port",
    String(port),
    "--bind",
    "127.0.0.1",
    "--save",
    "",
    "--appendonly",
    "no",
  ]);
  child.stderr.resume();
  await new Promise<void>((resolve, reject) => {
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      if (out.includes("Ready to accept connections")) resolve();
    });
    child.once("exit", (code) => reject(new Error(`redis-server exited with ${code}: ${out}`)));
  });
  return child;
}

async function stopRedisServer(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  await exited;
}

describe("fixture lifecycle with a private redis-server", () => {
  const children: ChildProcess[] = [];
  afterAll(async () => {
    for (const child of children) await stopRedisServer(child);
  });

  it("refuses to start when Redis is unreachable", async () => {
    await expect(startUpstashFixture({ redisUrl: `redis://127.0.0.1:${await freePort()}` })).rejects.toThrow();
  });

  it("answers 503 {error} fast while Redis is down, recovers when it is back, closes its connection", async () => {
    const port = await freePort();
    children.push(await startRedisServer(port));
    const own = await startUpstashFixture({ redisUrl: `redis://127.0.0.1:${port}`, token: "tok" });
    const client = new Redis({ url: own.url, token: "tok", automaticDeserialization: false, retry: false });
    expect(await client.set("k", "v")).toBe("OK");

    await stopRedisServer(children.pop()!);
    const started = Date.now();
    const res = await fetch(own.url, { method: "POST", headers: { authorization: "Bearer tok" }, body: '["GET","k"]' });
    const body = (await res.json()) as { error: string };
    expect(res.status).toBe(503);
    expect(body.error).toMatch(/^ERR redis unavailable: /);
    expect(Date.now() - started).toBeLessThan(3_000);
    await expect(client.get("k")).rejects.toThrow(/^ERR redis unavailable: /);

    children.push(await startRedisServer(port));
    let value: unknown;
    for (let attempt = 0; attempt < 100; attempt++) {
      value = await client.incr("n").catch((error: Error) => error);
      if (value === 1) break;
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    expect(value).toBe(1);

    const probe = new IORedis(`redis://127.0.0.1:${port}`, { protocol: 2 });
    const clients = async () => (await probe.call("CLIENT", "LIST")) as string;
    expect((await clients()).trim().split("\n")).toHaveLength(2);
    await own.close();
    await own.close(); // idempotent
    await expect.poll(async () => (await clients()).trim().split("\n").length).toBe(1);
    await expect(fetch(own.url, { method: "POST", body: "[]" })).rejects.toThrow();
    probe.disconnect();
  });
});
