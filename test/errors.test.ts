// The two error body formats, pinned byte for byte: ReliAPI JSON (default) and RFC 9457 problem+json (ietf or errorFormat).
import { describe, expect, it } from "vitest";
import { createIdempotentFetch, errorResponse } from "../src/index.ts";
import { idempotency } from "../src/server.ts";

const request = (key: string, body: string) =>
  new Request("http://app.test/pay", {
    method: "POST",
    headers: { "content-type": "application/json", "idempotency-key": key },
    body,
  });

describe("error formats", () => {
  it("ReliAPI JSON by default: the exact bytes", async () => {
    const h = idempotency(async () => new Response("ok"));
    await (await h(request("k", '{"a":1}'))).text();
    const r = await h(request("k", '{"a":2}'));
    expect(r.status).toBe(409);
    expect(r.headers.get("content-type")).toBe("application/json");
    expect(await r.text()).toBe(
      '{"success":false,"error":{"type":"client_error","code":"IDEMPOTENCY_CONFLICT","message":"Request body differs from previous request with same key"}}',
    );
  });

  it("ietf: problem+json with type, title, status, detail and code; 422 on a mismatch", async () => {
    const h = idempotency(async () => new Response("ok"), { ietf: true });
    await (await h(request("k", '{"a":1}'))).text();
    const r = await h(request("k", '{"a":2}'));
    expect(r.status).toBe(422);
    expect(r.headers.get("content-type")).toBe("application/problem+json");
    expect(await r.text()).toBe(
      '{"type":"https://github.com/idemfetch/idemfetch/blob/main/docs/protocol.md#idempotency_conflict","title":"Idempotency-Key is already used with another request","status":422,"detail":"Request body differs from previous request with same key","code":"IDEMPOTENCY_CONFLICT"}',
    );
  });

  it("ietf with errorFormat: 'reliapi' keeps the ReliAPI shape", async () => {
    const h = idempotency(async () => new Response("ok"), { ietf: true, errorFormat: "reliapi" });
    const r = await h(request("", "{}"));
    expect(r.status).toBe(400);
    expect(JSON.parse(await r.text())).toMatchObject({ success: false, error: { code: "IDEMPOTENCY_KEY_INVALID" } });
  });

  it("a bad key on the server in problem form: 400 with the validation message as detail", async () => {
    const h = idempotency(async () => new Response("ok"), { errorFormat: "problem" });
    const r = await h(request("x".repeat(256), "{}"));
    expect(r.status).toBe(400);
    expect(await r.json()).toEqual({
      type: "https://github.com/idemfetch/idemfetch/blob/main/docs/protocol.md#idempotency_key_invalid",
      title: "Idempotency-Key is invalid",
      status: 400,
      detail: "Idempotency key is 256 characters long; at most 255 allowed",
      code: "IDEMPOTENCY_KEY_INVALID",
    });
  });

  it("the client wrapper answers in the chosen format too, with Retry-After on IN_PROGRESS", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const f = createIdempotentFetch({
      errorFormat: "problem",
      waitTimeoutMs: 0,
      fetch: async () => {
        await gate;
        return new Response("done");
      },
    });
    const first = f("http://up.test/x", { method: "POST", headers: { "idempotency-key": "wip" }, body: "{}" });
    const second = await f("http://up.test/x", { method: "POST", headers: { "idempotency-key": "wip" }, body: "{}" });
    expect(second.status).toBe(409);
    expect(second.headers.get("retry-after")).toBe("1");
    expect((await second.json()).code).toBe("IDEMPOTENCY_IN_PROGRESS");
    release();
    expect(await (await first).text()).toBe("done");
  });

  it("errorResponse() builds both shapes; a bad errorFormat is a TypeError at construction", async () => {
    expect((await errorResponse("IDEMPOTENCY_STORE_UNAVAILABLE", 503).json()).error.type).toBe("server_error");
    expect((await errorResponse("IDEMPOTENCY_STORE_UNAVAILABLE", 503, undefined, {}, "problem").json()).status).toBe(
      503,
    );
    expect(() => createIdempotentFetch({ errorFormat: "xml" as never })).toThrow(TypeError);
  });
});
