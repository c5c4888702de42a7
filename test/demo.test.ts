// The ReliAPI guide's examples as tests, against `npm run demo` started as a child process (memory store, and Redis).
import { type ChildProcess, execFile, execFileSync, spawn } from "node:child_process";
import { createHash, randomUUID } from "node:crypto";
import { mkdtempSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage } from "node:http";
import { connect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createLlmProxy } from "../demo/llm.ts";
import { loadTargets, parseYaml } from "../demo/targets.ts";
import { memoryStore } from "../src/index.ts";
import { startUpstashFixture, type UpstashFixture } from "./fixtures/upstash-server.ts";
import { sleep } from "./fixtures/util.ts";

const run = promisify(execFile);
const root = new URL("..", import.meta.url).pathname;
const md5 = (text: string) => createHash("md5").update(text).digest("hex");
const CONFLICT =
  '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_CONFLICT","message":"Request body differs from previous request with same key"}}';

interface DemoProcess {
  url: string;
  output: () => string;
  stop: () => Promise<void>;
}

/** `npm run demo` (tsx demo/main.ts) on a free port; resolves once its banner names the URL. */
async function startDemoProcess(env: Record<string, string> = {}): Promise<DemoProcess> {
  const clean = { ...process.env };
  for (const name of [
    "REDIS_URL",
    "UPSTASH_REDIS_REST_URL",
    "UPSTASH_REDIS_REST_TOKEN",
    "OPENAI_API_KEY",
    "RELIAPI_CONFIG",
  ]) {
    delete clean[name];
  }
  const child: ChildProcess = spawn(process.execPath, ["--import", "tsx", "demo/main.ts"], {
    cwd: root,
    env: { ...clean, PORT: "0", MOCK_LATENCY_MS: "300", ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  child.stdout?.on("data", (d) => {
    output += d;
  });
  child.stderr?.on("data", (d) => {
    output += d;
  });
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`demo did not start:\n${output}`)), 20_000);
    const check = () => {
      const m = /idemfetch demo on (http:\/\/127\.0\.0\.1:\d+)/.exec(output);
      if (m) {
        clearTimeout(timer);
        resolve(m[1] as string);
      }
    };
    child.stdout?.on("data", check);
    child.once("exit", (code) => reject(new Error(`demo exited with ${code}:\n${output}`)));
  });
  return {
    url,
    output: () => output,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once("exit", () => resolve());
        child.kill("SIGTERM");
      }),
  };
}

const chat = (url: string, body: unknown, key?: string, init: RequestInit = {}) =>
  fetch(`${url}/proxy/llm`, {
    method: "POST",
    headers: key === undefined ? {} : { "Idempotency-Key": key },
    body: JSON.stringify(body),
    ...init,
  });
const hello = { target: "openai", messages: [{ role: "user", content: "Hello" }] };
const stats = async (url: string) => (await fetch(`${url}/stats`)).json();

/** A Python with httpx: Debian's (python3-httpx) first, then whatever `python3` is. */
function pythonWithHttpx(): string | undefined {
  for (const python of ["/usr/bin/python3", "python3"]) {
    try {
      execFileSync(python, ["-c", "import httpx"], { stdio: "ignore" });
      return python;
    } catch {}
  }
  return undefined;
}

describe("npm run demo (memory store)", () => {
  let demo: DemoProcess;
  beforeAll(async () => {
    demo = await startDemoProcess();
  });
  afterAll(() => demo?.stop());

  it("prints a banner with the store and example curl lines, and says openai is mocked", () => {
    expect(demo.output()).toContain("(store: memory)");
    expect(demo.output()).toContain(`curl -X POST ${demo.url}/proxy/llm -H "Idempotency-Key: chat-123"`);
    expect(demo.output()).toContain("openai: -> mock (OPENAI_API_KEY is not set)");
  });

  it("the guide's curl call answers; the same call again is replayed byte for byte", async () => {
    const args = [
      "-s",
      "-i",
      "-X",
      "POST",
      `${demo.url}/proxy/llm`,
      "-H",
      "Idempotency-Key: curl-chat-123",
      "-d",
      '{\n    "target": "openai",\n    "messages": [{"role": "user", "content": "Hello"}]\n  }',
    ];
    const split = (out: string) => {
      const at = out.indexOf("\r\n\r\n");
      return { head: out.slice(0, at).toLowerCase(), body: out.slice(at + 4) };
    };
    const first = split((await run("curl", args)).stdout);
    const second = split((await run("curl", args)).stdout);
    expect(first.head).toMatch(/^http\/1\.1 200/);
    expect(first.head).not.toContain("idempotent-replayed");
    expect(second.head).toContain("idempotent-replayed: true");
    expect(second.body).toBe(first.body);
    const body = JSON.parse(first.body);
    expect(body.success).toBe(true);
    expect(body.data.object).toBe("chat.completion");
    expect(body.data.choices[0].message.role).toBe("assistant");
    expect(body.data.usage.total_tokens).toBeGreaterThan(0);
    expect(body.meta).toMatchObject({ target: "openai", provider: "mock", mocked: true });
    expect(body.meta.note).toContain("OPENAI_API_KEY is not set");
    expect(demo.output()).toContain("OPENAI_API_KEY is not set: answered by the built-in mock");
  });

  it("the guide's Python httpx asyncio.gather of 3 calls with one key: 1 upstream call, 3 identical results", async () => {
    const python = pythonWithHttpx();
    // Never skipped: CI installs it (.ci/ensure-services.sh); a machine without it fails here and says why.
    if (!python) throw new Error("python3 with httpx is not installed: run `bash .ci/ensure-services.sh`");
    const before = await stats(demo.url);
    const key = `gather-${randomUUID()}`;
    const { stdout } = await run(python, [join(root, "test/fixtures/httpx_gather.py"), demo.url, key]);
    const results = JSON.parse(stdout) as { success: boolean; data: { choices: { message: { content: string } }[] } }[];
    expect(results).toHaveLength(3);
    expect(results[0]?.success).toBe(true);
    expect(results[1]).toEqual(results[0]);
    expect(results[2]).toEqual(results[0]);
    const after = await stats(demo.url);
    expect(after.upstream_calls - before.upstream_calls).toBe(1);
    expect(after.saved_calls - before.saved_calls).toBe(2);
  });

  it("answers differ between executions: another key gets another answer", async () => {
    const a = await (await chat(demo.url, hello, `diff-a-${randomUUID()}`)).json();
    const b = await (await chat(demo.url, hello, `diff-b-${randomUUID()}`)).json();
    expect(a.data.choices[0].message.content).not.toBe(b.data.choices[0].message.content);
    expect(a.meta.execution).not.toBe(b.meta.execution);
  });

  it("the guide's conflict: same key, other body is 409 with the exact JSON", async () => {
    const key = `conflict-${randomUUID()}`;
    await chat(demo.url, hello, key);
    const res = await chat(demo.url, { ...hello, messages: [{ role: "user", content: "Bye" }] }, key);
    expect(res.status).toBe(409);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.text()).toBe(CONFLICT);
  });

  it("the idempotency_key body field works like the header", async () => {
    const body = { ...hello, idempotency_key: `field-${randomUUID()}` };
    const [a, b] = await Promise.all([chat(demo.url, body), chat(demo.url, body)]);
    expect(await b.text()).toBe(await a.text());
  });

  it("the guide's batch example: run twice, the second run executes nothing and returns the same results", async () => {
    const items = ["apples", "pears", "plums"].map((i) => `${i}-${randomUUID()}`);
    const processBatch = async () => {
      const results = [];
      for (const item of items) {
        const key = `batch:${md5(item)}`;
        const response = await chat(
          demo.url,
          { target: "openai", messages: [{ role: "user", content: `Process: ${item}` }] },
          key,
        );
        results.push(await response.json());
      }
      return results;
    };
    const before = await stats(demo.url);
    const first = await processBatch();
    const middle = await stats(demo.url);
    const second = await processBatch();
    const after = await stats(demo.url);
    expect(middle.upstream_calls - before.upstream_calls).toBe(3);
    expect(after.upstream_calls).toBe(middle.upstream_calls);
    expect(second).toEqual(first);
  });

  it("the guide's retry example: a retry after a client timeout joins the first execution instead of paying again", async () => {
    const prompt = `Summarise ${randomUUID()}`;
    const makeRequestWithRetry = async (maxRetries = 3) => {
      const key = `retry:${md5(prompt)}`;
      for (let attempt = 0; attempt < maxRetries; attempt++) {
        try {
          // The first attempt gives up before the 300 ms mock answers, as a flaky network would.
          const signal = AbortSignal.timeout(attempt === 0 ? 100 : 10_000);
          const response = await chat(
            demo.url,
            { target: "openai", messages: [{ role: "user", content: prompt }] },
            key,
            {
              signal,
            },
          );
          return { attempt, replayed: response.headers.get("idempotent-replayed"), body: await response.json() };
        } catch (error) {
          if (attempt === maxRetries - 1) throw error;
          await sleep(2 ** attempt * 50);
        }
      }
      throw new Error("unreachable");
    };
    const before = await stats(demo.url);
    const result = await makeRequestWithRetry();
    expect(result.attempt).toBe(1);
    expect(result.replayed).toBe("true");
    expect(result.body.success).toBe(true);
    const after = await stats(demo.url);
    expect(after.upstream_calls - before.upstream_calls).toBe(1);
  });

  it("a streaming duplicate gets the leader's chunks live; a later replay returns the same bytes", async () => {
    const key = `stream-${randomUUID()}`;
    const body = { target: "mock", stream: true, messages: [{ role: "user", content: "Count to 5" }] };
    const before = await stats(demo.url);
    const { a } = await streamedTwice(demo.url, demo.url, body, key);

    const replay = await chat(demo.url, body, key);
    expect(replay.headers.get("idempotent-replayed")).toBe("true");
    expect(await replay.text()).toBe(a.text);
    const after = await stats(demo.url);
    expect(after.upstream_calls - before.upstream_calls).toBe(1);
  });

  it("GET /stats has requests, upstream_calls, saved_calls, saved_usd", async () => {
    const s = await stats(demo.url);
    for (const field of ["requests", "upstream_calls", "saved_calls", "saved_usd"])
      expect(typeof s[field]).toBe("number");
    expect(s.saved_calls).toBeGreaterThan(0);
    expect(s.saved_usd).toBeGreaterThan(0);
    expect(s.requests).toBeGreaterThan(s.upstream_calls);
    expect(s.store).toBe("memory");
  });

  it("bad requests are JSON errors in the same shape", async () => {
    const missing = await chat(demo.url, { target: "openai" }, "bad-1");
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({
      success: false,
      error: { type: "client_error", code: "INVALID_REQUEST" },
    });
    const unknown = await chat(demo.url, { ...hello, target: "nope" }, "bad-2");
    expect(unknown.status).toBe(404);
    expect((await unknown.json()).error.code).toBe("TARGET_NOT_FOUND");
    const invalidKey = await chat(demo.url, hello, "k".repeat(300));
    expect(invalidKey.status).toBe(400);
    expect((await invalidKey.json()).error.code).toBe("IDEMPOTENCY_KEY_INVALID");
  });

  it("serves a page at /", async () => {
    const res = await fetch(`${demo.url}/`);
    expect(res.status).toBe(200);
  });
});

/**
 * Streams `body` under `key` from `leaderUrl`, and once its first chunk arrived sends the duplicate to `dupUrl`:
 * asserts the duplicate's first chunk came while the leader's stream was still running (live, not after the end),
 * with the same bytes. Resolves both texts.
 */
async function streamedTwice(leaderUrl: string, dupUrl: string, body: object, key: string) {
  const decoder = new TextDecoder();
  const read = async (response: Response, firstChunk: () => void) => {
    let text = "";
    const reader = response.body!.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) return { text, endedAt: Date.now() };
      const had = text.includes("event: chunk");
      text += decoder.decode(value, { stream: true });
      if (!had && text.includes("event: chunk")) firstChunk();
    }
  };
  const leader = await chat(leaderUrl, body, key);
  expect(leader.headers.get("content-type")).toBe("text/event-stream");
  let leaderChunk!: () => void;
  const leaderChunked = new Promise<void>((r) => {
    leaderChunk = r;
  });
  const leaderDone = read(leader, leaderChunk);
  await leaderChunked;
  const dup = await chat(dupUrl, body, key);
  expect(dup.headers.get("idempotent-replayed")).toBe("true");
  let dupChunkAt = 0;
  const dupDone = read(dup, () => {
    dupChunkAt = Date.now();
  });
  const [a, b] = await Promise.all([leaderDone, dupDone]);
  expect(dupChunkAt).toBeGreaterThan(0);
  expect(dupChunkAt).toBeLessThan(a.endedAt);
  expect(b.text).toBe(a.text);
  expect(a.text).toMatch(/^event: meta\n/);
  expect(a.text).toContain("event: done");
  return { a, b };
}

const redisUrl = process.env.REDIS_URL ?? "redis://127.0.0.1:6379";
/** Fails (never skips) when the Redis these blocks need does not answer: CI starts it (.ci/ensure-services.sh). */
async function requireRedis(): Promise<void> {
  const { hostname, port } = new URL(redisUrl);
  await new Promise<void>((resolve, reject) => {
    const socket = connect(Number(port || 6379), hostname);
    const fail = (why: string) => {
      socket.destroy();
      reject(new Error(`these tests need Redis at ${redisUrl} (${why}): run \`bash .ci/ensure-services.sh\``));
    };
    socket.setTimeout(2_000);
    socket.once("connect", () => {
      socket.destroy();
      resolve();
    });
    socket.once("error", (error) => fail(error.message));
    socket.once("timeout", () => fail("no answer in 2 s"));
  });
}

describe("npm run demo with REDIS_URL: two processes share one store", () => {
  let a: DemoProcess;
  let b: DemoProcess;
  beforeAll(async () => {
    await requireRedis();
    [a, b] = await Promise.all([startDemoProcess({ REDIS_URL: redisUrl }), startDemoProcess({ REDIS_URL: redisUrl })]);
  });
  afterAll(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
  });

  it("6 concurrent calls with one key over two processes make 1 upstream call and get identical bytes", async () => {
    expect(a.output()).toContain("(store: redis (");
    const key = `two-procs-${randomUUID()}`;
    const responses = await Promise.all([a, b, a, b, a, b].map((d) => chat(d.url, hello, key)));
    const bodies = await Promise.all(responses.map((r) => r.text()));
    expect(new Set(bodies).size).toBe(1);
    const [sa, sb] = [await stats(a.url), await stats(b.url)];
    expect(sa.upstream_calls + sb.upstream_calls).toBe(1);
  });

  it("a streaming duplicate sent to the second process gets the tokens live while the first generates them", async () => {
    const key = `two-procs-stream-${randomUUID()}`;
    const body = { target: "mock", stream: true, messages: [{ role: "user", content: "Count to 5" }] };
    const [ba, bb] = [await stats(a.url), await stats(b.url)];
    await streamedTwice(a.url, b.url, body, key);
    const [sa, sb] = [await stats(a.url), await stats(b.url)];
    expect(sa.upstream_calls - ba.upstream_calls).toBe(1);
    expect(sb.upstream_calls - bb.upstream_calls).toBe(0);
    expect(sb.saved_calls - bb.saved_calls).toBe(1);
  });

  it("a client that lost its connection mid-stream and retries with its key gets the stream from byte 0, then live", async () => {
    const key = `resume-${randomUUID()}`;
    const body = { target: "mock", stream: true, messages: [{ role: "user", content: "Count to 5" }] };
    const [ba, bb] = [await stats(a.url), await stats(b.url)];
    // The first connection reads the head and a chunk, then drops (a page reload).
    const lost = new AbortController();
    const first = await chat(a.url, body, key, { signal: lost.signal });
    const reader = first.body!.getReader();
    let seen = "";
    while (!seen.includes("event: chunk")) seen += new TextDecoder().decode((await reader.read()).value);
    lost.abort();
    // The retry lands on the other process (a load balancer), while the first execution still streams.
    const retry = await chat(b.url, body, key);
    expect(retry.headers.get("idempotent-replayed")).toBe("true");
    let text = "";
    let firstAt = 0;
    const decoder = new TextDecoder();
    const retryReader = retry.body!.getReader();
    for (let r = await retryReader.read(); !r.done; r = await retryReader.read()) {
      firstAt ||= Date.now();
      text += decoder.decode(r.value, { stream: true });
    }
    const endedAt = Date.now();
    expect(text.startsWith(seen)).toBe(true);
    expect(text).toContain("event: done");
    // The past chunks at once, then live: its first bytes came long before the stream ended (the mock streams
    // for over a second after its first chunk), not with the record after the end.
    expect(endedAt - firstAt).toBeGreaterThan(300);
    const replay = await chat(a.url, body, key);
    expect(await replay.text()).toBe(text);
    const [sa, sb] = [await stats(a.url), await stats(b.url)];
    expect(sa.upstream_calls - ba.upstream_calls + (sb.upstream_calls - bb.upstream_calls)).toBe(1);
  });
});

describe("npm run demo with UPSTASH_REDIS_REST_URL/_TOKEN (the Upstash REST fixture)", () => {
  let fixture: UpstashFixture;
  let demo: DemoProcess;
  beforeAll(async () => {
    await requireRedis();
    fixture = await startUpstashFixture({ redisUrl });
    demo = await startDemoProcess({ UPSTASH_REDIS_REST_URL: fixture.url, UPSTASH_REDIS_REST_TOKEN: fixture.token });
  });
  afterAll(async () => {
    await demo?.stop();
    await fixture?.close();
  });

  it("uses the Upstash store: concurrent duplicates make 1 upstream call, a later call is replayed", async () => {
    expect(demo.output()).toContain(`(store: upstash (${fixture.url}))`);
    const key = `upstash-${randomUUID()}`;
    const bodies = await Promise.all([1, 2, 3].map(async () => (await chat(demo.url, hello, key)).text()));
    const later = await chat(demo.url, hello, key);
    expect(later.headers.get("idempotent-replayed")).toBe("true");
    expect(new Set([...bodies, await later.text()]).size).toBe(1);
    expect((await stats(demo.url)).upstream_calls).toBe(1);
    expect(fixture.commands).toBeGreaterThan(0);
  });
});

describe("demo/llm.ts forwarding to an OpenAI-compatible API", () => {
  it("with a key, forwards to base_url (non-stream and stream) and prices the reported usage", async () => {
    const seen: { auth: string | undefined; body: Record<string, unknown> }[] = [];
    const upstream = createServer(async (req: IncomingMessage, res) => {
      let raw = "";
      for await (const chunk of req) raw += chunk;
      const body = JSON.parse(raw) as Record<string, unknown>;
      seen.push({ auth: req.headers.authorization, body });
      const usage = { prompt_tokens: 1000, completion_tokens: 2000, total_tokens: 3000 };
      if (!body.stream) {
        res.setHeader("content-type", "application/json");
        res.end(
          JSON.stringify({
            id: "chatcmpl-x",
            object: "chat.completion",
            choices: [{ message: { content: "hi" } }],
            usage,
          }),
        );
        return;
      }
      res.setHeader("content-type", "text/event-stream");
      for (const content of ["Hel", "lo"])
        res.write(`data: ${JSON.stringify({ choices: [{ delta: { content } }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ choices: [{ delta: {}, finish_reason: "stop" }] })}\n\n`);
      res.write(`data: ${JSON.stringify({ choices: [], usage })}\n\ndata: [DONE]\n\n`);
      res.end();
    });
    await new Promise<void>((r) => upstream.listen(0, "127.0.0.1", r));
    const port = (upstream.address() as { port: number }).port;
    const dir = mkdtempSync(join(tmpdir(), "idemfetch-targets-"));
    const file = join(dir, "targets.yaml");
    writeFileSync(
      file,
      `targets:\n  local:\n    base_url: "http://127.0.0.1:${port}/v1/"  # trailing slash is fine\n    llm:\n      provider: openai\n      default_model: gpt-4o\n    cache:\n      ttl_s: 60\n    auth:\n      type: bearer_env\n      env_var: LOCAL_KEY\n`,
    );
    try {
      const proxy = createLlmProxy({ targets: loadTargets(file), store: memoryStore(), env: { LOCAL_KEY: "sk-test" } });
      const post = (body: unknown) =>
        proxy.handle(
          new Request("http://demo/proxy/llm", {
            method: "POST",
            headers: { "Idempotency-Key": randomUUID() },
            body: JSON.stringify(body),
          }),
        );
      const json = await (await post({ target: "local", messages: [{ role: "user", content: "x" }] })).json();
      expect(json.data).toMatchObject({ id: "chatcmpl-x", object: "chat.completion" });
      // gpt-4o: 1000 × $2.5/M + 2000 × $10/M
      expect(json.meta).toMatchObject({ target: "local", provider: "openai", model: "gpt-4o", cost_usd: 0.0225 });
      expect(seen[0]).toMatchObject({ auth: "Bearer sk-test", body: { model: "gpt-4o", stream: false } });

      const text = await (
        await post({ target: "local", stream: true, messages: [{ role: "user", content: "x" }] })
      ).text();
      const chunks = [...text.matchAll(/event: chunk\ndata: (.*)\n/g)].map((m) => JSON.parse(m[1] as string).text);
      expect(chunks).toEqual(["Hel", "lo"]);
      expect(text).toContain('event: done\ndata: {"finish_reason":"stop","usage":{"prompt_tokens":1000');
      expect(seen[1]?.body).toMatchObject({ stream: true, stream_options: { include_usage: true } });
      expect(proxy.stats()).toMatchObject({ upstream_calls: 2, spent_usd: 0.045 });
    } finally {
      upstream.close();
    }
  });
});

describe("demo/targets.ts", () => {
  it("reads the YAML the config style uses and refuses the rest by line", () => {
    expect(parseYaml('a:\n  b: 1 # note\n  c: "x # y"\n  d:\n    e: true\nf: hello world\n')).toEqual({
      a: { b: 1, c: "x # y", d: { e: true } },
      f: "hello world",
    });
    expect(() => parseYaml("targets:\n  - mock\n", "t.yaml")).toThrow(/t\.yaml:2/);
  });

  it("the shipped demo/targets.yaml has the mock and openai targets", () => {
    const targets = loadTargets(undefined, { MOCK_LATENCY_MS: "5" });
    expect(targets.get("mock")).toMatchObject({ provider: "mock", latencyMs: 5, ttlSeconds: 3600 });
    expect(targets.get("openai")).toMatchObject({ provider: "openai", apiKeyEnv: "OPENAI_API_KEY" });
  });
});
