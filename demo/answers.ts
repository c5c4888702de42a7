// OpenAI-style answers: token and cost arithmetic, the built-in mock, and the JSON and SSE wire forms.
import type { Target } from "./targets.ts";

export interface Message {
  role: string;
  content: string;
}
export interface Chat {
  target: string;
  messages: Message[];
  model?: string;
  max_tokens?: number;
  temperature?: number;
  top_p?: number;
  stop?: string[];
  stream: boolean;
}
export interface Usage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens: number;
}

/** USD per million tokens (input, output); unknown models are priced as gpt-4o-mini. */
const PRICES: Record<string, [number, number]> = {
  "gpt-4o-mini": [0.15, 0.6],
  "gpt-4o": [2.5, 10],
  "gpt-4.1-mini": [0.4, 1.6],
  "gpt-4.1": [2, 8],
};
export const COST_HEADER = "x-llm-cost-usd";
const encoder = new TextEncoder();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export const round = (usd: number) => Math.round(usd * 1e8) / 1e8;

export function costOf(model: string, usage: Usage): number {
  const [input, output] = PRICES[model] ?? (PRICES["gpt-4o-mini"] as [number, number]);
  return round((usage.prompt_tokens * input + usage.completion_tokens * output) / 1e6);
}

/** The demo's own errors, in the same ReliAPI shape as the library's (src/errors.ts). */
export const fail = (status: number, code: string, message: string): Response =>
  Response.json(
    { success: false, error: { type: status >= 500 ? "upstream_error" : "client_error", code, message } },
    { status },
  );

/** The built-in mock: sleeps, then answers (or streams) a text that differs on every execution. */
export async function mockAnswer(
  chat: Chat,
  t: Target,
  model: string,
  meta: Record<string, unknown> & { execution: number },
  spend: (usd: number) => void,
): Promise<Response> {
  const started = Date.now();
  const text = mockText(chat.messages, meta.execution);
  const usage = { ...promptUsage(chat.messages), completion_tokens: tokens(text) };
  usage.total_tokens = usage.prompt_tokens + usage.completion_tokens;
  const cost = costOf(model, usage);
  // Spent once, when the execution starts: a replay or a joined duplicate costs nothing.
  spend(cost);
  const id = `chatcmpl-${crypto.randomUUID().replaceAll("-", "").slice(0, 24)}`;
  const created = Math.floor(Date.now() / 1000);
  if (!chat.stream) {
    await sleep(t.latencyMs);
    const data = {
      id,
      object: "chat.completion",
      created,
      model,
      choices: [{ index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" }],
      usage,
    };
    return success(data, { ...meta, duration_ms: Date.now() - started, cost_usd: cost });
  }
  return sse(
    (async function* () {
      yield event("meta", { ...meta, id, cost_estimate_usd: cost });
      await sleep(t.latencyMs);
      for (const piece of text.match(/\S+\s*/g) ?? []) {
        yield event("chunk", { text: piece, finish_reason: null });
        await sleep(t.chunkMs);
      }
      yield event("done", { finish_reason: "stop", usage, cost_usd: cost });
    })(),
    cost,
  );
}

/** A rough token count (about 4 characters each), enough for cost arithmetic. */
export const tokens = (text: string): number => Math.max(1, Math.ceil(text.length / 4));

export function promptUsage(messages: Message[]): Usage {
  const prompt = messages.reduce((sum, m) => sum + tokens(m.content) + 4, 0);
  return { prompt_tokens: prompt, completion_tokens: 0, total_tokens: prompt };
}

const OPENERS = ["Sure!", "Happy to help.", "Good question.", "Here is a thought.", "Let me see."];
const FACTS = [
  "An idempotency key makes a retry safe.",
  "A replay returns the very same bytes.",
  "Concurrent duplicates share one execution.",
  "Another body under the same key is a conflict.",
  "A stream reaches every duplicate live.",
];
const pick = (list: string[]): string => list[Math.floor(Math.random() * list.length)] as string;

/** Differs on every execution, so a replay (same text) is easy to tell from a re-execution. */
function mockText(messages: Message[], n: number): string {
  const last = [...messages].reverse().find((m) => m.role === "user") ?? messages.at(-1);
  const said = (last?.content ?? "").replace(/\s+/g, " ").slice(0, 80);
  const tag = crypto.randomUUID().slice(0, 8);
  return `${pick(OPENERS)} You said "${said}". ${pick(FACTS)} (mock execution #${n}, ${tag})`;
}

export function success(data: unknown, meta: Record<string, unknown>): Response {
  return Response.json(
    { success: true, data, meta },
    { headers: { [COST_HEADER]: String(meta.cost_usd ?? 0), "x-request-id": String(meta.request_id) } },
  );
}

export const event = (name: string, data: unknown): Uint8Array =>
  encoder.encode(`event: ${name}\ndata: ${JSON.stringify(data)}\n\n`);

/** An SSE response pulled from `events`; its cost header lets replays count what they saved. */
export function sse(events: AsyncGenerator<Uint8Array>, costUsd: number): Response {
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await events.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel() {
      await events.return(undefined);
    },
  });
  return new Response(body, {
    headers: { "content-type": "text/event-stream", "cache-control": "no-cache", [COST_HEADER]: String(costUsd) },
  });
}

/** The `data:` payloads of an event stream. */
export async function* sseData(body: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    buffer += decoder.decode(value, { stream: !done });
    const lines = buffer.split(/\r?\n/);
    buffer = done ? "" : (lines.pop() as string);
    for (const line of lines) if (line.startsWith("data:")) yield line.slice(5).trim();
    if (done) return;
  }
}
