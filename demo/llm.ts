// The demo's ReliAPI-compatible `POST /proxy/llm`: targets, the built-in mock, OpenAI forwarding, SSE, cost counting.
import type { IdempotencyEvent, IdempotencyStore, Stats } from "../src/index.ts";
import { idempotencyLayer } from "../src/server.ts";
import {
  type Chat,
  COST_HEADER,
  costOf,
  event,
  fail,
  mockAnswer,
  promptUsage,
  round,
  sse,
  sseData,
  success,
  type Usage,
} from "./answers.ts";
import type { Target } from "./targets.ts";

export interface LlmProxyOptions {
  targets: Map<string, Target>;
  store: IdempotencyStore;
  env?: Record<string, string | undefined>;
  log?: (line: string) => void;
  /** For forwarding; default globalThis.fetch. */
  fetch?: typeof fetch;
}

export interface ProxyStats {
  /** Calls to /proxy/llm. */
  requests: number;
  /** Executions against a target (the mock counts as one). */
  upstream_calls: number;
  /** Calls answered without an execution: joined live or replayed. */
  saved_calls: number;
  /** What those would have cost. */
  saved_usd: number;
  /** What the executions cost. */
  spent_usd: number;
  upstream_calls_by_target: Record<string, number>;
  idempotency: Stats;
}

export function createLlmProxy(options: LlmProxyOptions) {
  const { targets, env = {}, log = () => {} } = options;
  const upstreamFetch = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
  const counts = { requests: 0, upstream_calls: 0, saved_usd: 0, spent_usd: 0 };
  const byTarget: Record<string, number> = {};
  const layer = idempotencyLayer({
    store: options.store,
    onEvent: (e: IdempotencyEvent) => {
      if (!("keyHash" in e)) log(`${e.type} store=${e.store}`);
      else if (e.type !== "execute" && e.type !== "wait")
        log(`${e.type} key=${e.keyHash.slice(0, 8)} ${Math.round(e.durationMs)} ms`);
    },
  });

  /** Who answers for a target: the mock, or the real API when its key is set. */
  const route = (t: Target): { apiKey: string | undefined; note: string | undefined; mock: boolean } => {
    if (t.provider === "mock") return { apiKey: undefined, note: undefined, mock: true };
    const apiKey = t.apiKeyEnv ? env[t.apiKeyEnv] : undefined;
    if (t.apiKeyEnv && !apiKey) {
      return { apiKey, note: `${t.apiKeyEnv} is not set: answered by the built-in mock`, mock: true };
    }
    return { apiKey, note: undefined, mock: false };
  };

  async function execute(chat: Chat, t: Target): Promise<Response> {
    const n = ++counts.upstream_calls;
    byTarget[t.name] = (byTarget[t.name] ?? 0) + 1;
    const { apiKey, note, mock } = route(t);
    const model = chat.model ?? t.model;
    const meta = {
      target: t.name,
      provider: mock ? "mock" : t.provider,
      model,
      cache_hit: false,
      retries: 0,
      request_id: `req_${crypto.randomUUID().replaceAll("-", "").slice(0, 16)}`,
      execution: n,
      ...(note ? { mocked: true, note } : {}),
    };
    log(
      `execute #${n} target=${t.name} provider=${meta.provider}${note ? ` (${note})` : ""}${chat.stream ? " stream" : ""}`,
    );
    const spend = (usd: number) => {
      counts.spent_usd = round(counts.spent_usd + usd);
    };
    if (mock) return mockAnswer(chat, t, model, meta, spend);
    return forward(chat, t, model, apiKey, meta, spend);
  }

  async function forward(
    chat: Chat,
    t: Target,
    model: string,
    apiKey: string | undefined,
    meta: Record<string, unknown>,
    spend: (usd: number) => void,
  ): Promise<Response> {
    const started = Date.now();
    const { target: _t, stream, ...params } = chat;
    let upstream: Response;
    try {
      upstream = await upstreamFetch(`${t.baseUrl}/chat/completions`, {
        method: "POST",
        headers: { "content-type": "application/json", ...(apiKey ? { authorization: `Bearer ${apiKey}` } : {}) },
        body: JSON.stringify({
          ...params,
          model,
          stream,
          ...(stream ? { stream_options: { include_usage: true } } : {}),
        }),
        // Not the caller's signal: a client that goes away must not cancel what its retry will want.
        signal: AbortSignal.timeout(t.timeoutMs),
      });
    } catch (error) {
      return fail(502, "UPSTREAM_UNAVAILABLE", `${t.name}: ${(error as Error).message}`);
    }
    if (!upstream.ok) {
      const detail = (await upstream.text()).slice(0, 300);
      // 429 stays 429 (never stored, worth a retry); anything else is the proxy's upstream failing.
      return fail(
        upstream.status === 429 ? 429 : 502,
        "UPSTREAM_ERROR",
        `${t.name} answered ${upstream.status}: ${detail}`,
      );
    }
    if (!stream) {
      const data = (await upstream.json()) as { usage?: Usage };
      const cost = data.usage ? costOf(model, data.usage) : 0;
      spend(cost);
      return success(data, { ...meta, duration_ms: Date.now() - started, cost_usd: cost });
    }
    const estimate = costOf(model, { ...promptUsage(chat.messages), completion_tokens: chat.max_tokens ?? 256 });
    return sse(
      (async function* () {
        yield event("meta", { ...meta, cost_estimate_usd: estimate });
        let usage: Usage | undefined;
        let finish: string | null = null;
        for await (const data of sseData(upstream.body as ReadableStream<Uint8Array>)) {
          if (data === "[DONE]") break;
          const chunk = JSON.parse(data) as {
            choices?: { delta?: { content?: string }; finish_reason?: string | null }[];
            usage?: Usage;
          };
          if (chunk.usage) usage = chunk.usage;
          const choice = chunk.choices?.[0];
          if (choice?.finish_reason) finish = choice.finish_reason;
          if (choice?.delta?.content) yield event("chunk", { text: choice.delta.content, finish_reason: null });
        }
        const cost = usage ? costOf(model, usage) : estimate;
        spend(cost);
        yield event("done", { finish_reason: finish ?? "stop", usage: usage ?? null, cost_usd: cost });
      })(),
      estimate,
    );
  }

  return {
    /** The /proxy/llm route: validates, picks the target (and its TTL), then runs the call through idemfetch. */
    async handle(request: Request): Promise<Response> {
      counts.requests++;
      const bytes = new Uint8Array(await request.arrayBuffer());
      let json: unknown;
      try {
        json = JSON.parse(new TextDecoder().decode(bytes));
      } catch {
        return fail(400, "INVALID_REQUEST", 'The body must be JSON: {"target": ..., "messages": [...]}');
      }
      const chat = parseChat(json);
      if (typeof chat === "string") return fail(400, "INVALID_REQUEST", chat);
      const target = targets.get(chat.target);
      if (!target) {
        return fail(
          404,
          "TARGET_NOT_FOUND",
          `Unknown target "${chat.target}"; known: ${[...targets.keys()].join(", ")}`,
        );
      }
      const response = await layer.handle(new Request(request, { body: bytes }), () => execute(chat, target), {
        ttlSeconds: target.ttlSeconds,
      });
      if (response.headers.get("idempotent-replayed") === "true") {
        counts.saved_usd = round(counts.saved_usd + Number(response.headers.get(COST_HEADER) ?? 0));
      }
      return response;
    },
    stats(): ProxyStats {
      const idempotency = layer.stats();
      return { ...counts, saved_calls: idempotency.saved, upstream_calls_by_target: { ...byTarget }, idempotency };
    },
    /** One line per target, for the banner. */
    describe(): string[] {
      return [...targets.values()].map((t) => {
        const r = route(t);
        if (t.provider === "mock") return `${t.name}: built-in mock (${t.latencyMs} ms)`;
        if (r.mock) return `${t.name}: -> mock (${t.apiKeyEnv} is not set)`;
        return `${t.name}: ${t.baseUrl}${t.apiKeyEnv ? ` (key from ${t.apiKeyEnv})` : ""}`;
      });
    },
  };
}

export type LlmProxy = ReturnType<typeof createLlmProxy>;

function parseChat(json: unknown): Chat | string {
  if (typeof json !== "object" || json === null || Array.isArray(json)) return "The body must be a JSON object";
  const b = json as Record<string, unknown>;
  const messages = b.messages;
  if (
    !Array.isArray(messages) ||
    messages.length === 0 ||
    !messages.every((m) => typeof m?.role === "string" && typeof m?.content === "string")
  ) {
    return '"messages" must be a non-empty list of {"role", "content"} strings';
  }
  if (b.target !== undefined && typeof b.target !== "string") return '"target" must be a string';
  if (b.stream !== undefined && typeof b.stream !== "boolean") return '"stream" must be a boolean';
  const chat: Chat = { target: (b.target as string | undefined) ?? "mock", messages, stream: b.stream === true };
  if (typeof b.model === "string") chat.model = b.model;
  if (typeof b.max_tokens === "number") chat.max_tokens = b.max_tokens;
  if (typeof b.temperature === "number") chat.temperature = b.temperature;
  if (typeof b.top_p === "number") chat.top_p = b.top_p;
  if (Array.isArray(b.stop)) chat.stop = b.stop.filter((s): s is string => typeof s === "string");
  return chat;
}
