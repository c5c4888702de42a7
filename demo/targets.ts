// The demo proxy's targets: read from a ReliAPI-style config file (YAML subset or JSON) and checked once at startup.
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export interface Target {
  name: string;
  /** "mock", or an OpenAI-compatible provider ("openai", ...). */
  provider: string;
  baseUrl: string | undefined;
  /** Environment variable holding the API key (auth.env_var). */
  apiKeyEnv: string | undefined;
  model: string;
  ttlSeconds: number;
  timeoutMs: number;
  /** Mock answers: ms until the answer (the first chunk when streaming), then ms between chunks. */
  latencyMs: number;
  chunkMs: number;
}

export const DEFAULT_CONFIG = fileURLToPath(new URL("./targets.yaml", import.meta.url));

/** Loads `path` (default demo/targets.yaml, else demo/targets.json); throws with the file and field on nonsense. */
export function loadTargets(path?: string, env: Record<string, string | undefined> = {}): Map<string, Target> {
  let file = path ?? DEFAULT_CONFIG;
  if (path === undefined && !existsSync(file)) file = file.replace(/\.yaml$/, ".json");
  const text = readFileSync(file, "utf8");
  const config = (file.endsWith(".json") ? JSON.parse(text) : parseYaml(text, file)) as Record<string, unknown>;
  const entries = Object.entries(obj(config.targets, `${file}: targets`));
  if (entries.length === 0) throw new Error(`${file}: no targets`);
  const mockLatency = env.MOCK_LATENCY_MS === undefined ? undefined : Number(env.MOCK_LATENCY_MS);
  return new Map(
    entries.map(([name, raw]) => {
      const where = `${file}: targets.${name}`;
      const t = obj(raw, where);
      const llm = obj(t.llm ?? {}, `${where}.llm`);
      const target: Target = {
        name,
        provider: str(llm.provider ?? name, `${where}.llm.provider`),
        baseUrl: t.base_url === undefined ? undefined : str(t.base_url, `${where}.base_url`).replace(/\/+$/, ""),
        apiKeyEnv:
          t.auth === undefined ? undefined : str(obj(t.auth, `${where}.auth`).env_var, `${where}.auth.env_var`),
        model: str(llm.default_model ?? "gpt-4o-mini", `${where}.llm.default_model`),
        ttlSeconds: num(obj(t.cache ?? {}, `${where}.cache`).ttl_s ?? 3600, `${where}.cache.ttl_s`),
        timeoutMs: num(t.timeout_ms ?? 20_000, `${where}.timeout_ms`),
        latencyMs: mockLatency ?? num(llm.latency_ms ?? 600, `${where}.llm.latency_ms`, true),
        chunkMs: num(llm.chunk_ms ?? 40, `${where}.llm.chunk_ms`, true),
      };
      if (target.provider !== "mock" && target.baseUrl === undefined) throw new Error(`${where}: base_url is required`);
      return [name, target];
    }),
  );
}

const obj = (v: unknown, where: string): Record<string, unknown> => {
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error(`${where} must be a mapping`);
  return v as Record<string, unknown>;
};
const str = (v: unknown, where: string): string => {
  if (typeof v !== "string" || v === "") throw new Error(`${where} must be a non-empty string`);
  return v;
};
const num = (v: unknown, where: string, zero = false): number => {
  if (typeof v !== "number" || !Number.isFinite(v) || v < 0 || (v === 0 && !zero)) {
    throw new Error(`${where} must be a ${zero ? "non-negative" : "positive"} number`);
  }
  return v;
};

/**
 * The YAML the config style needs, and no more: nested mappings by indentation, scalars, comments.
 * Anything else (lists, anchors, multi-line strings) is an error naming the line, never a silent misread.
 */
export function parseYaml(text: string, file = "yaml"): Record<string, unknown> {
  const root: Record<string, unknown> = {};
  const stack: { indent: number; map: Record<string, unknown> }[] = [{ indent: -1, map: root }];
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = withoutComment(raw).trimEnd();
    if (line.trim() === "") return;
    if (/^\s*\t/.test(line)) throw new Error(`${file}:${i + 1}: tabs are not allowed for indentation`);
    const indent = line.length - line.trimStart().length;
    const m = /^([\w.-]+|"[^"]*"|'[^']*'):(?:\s+(.*))?$/.exec(line.trim());
    if (!m) throw new Error(`${file}:${i + 1}: expected "key: value" (lists and other YAML are not supported)`);
    while (indent <= (stack.at(-1) as { indent: number }).indent) stack.pop();
    const parent = (stack.at(-1) as { map: Record<string, unknown> }).map;
    const key = unquote(m[1] as string);
    if (m[2] === undefined) {
      const child: Record<string, unknown> = {};
      parent[key] = child;
      stack.push({ indent, map: child });
    } else {
      parent[key] = scalar(m[2]);
    }
  });
  return root;
}

function withoutComment(line: string): string {
  let quote = "";
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (quote) {
      if (c === quote) quote = "";
    } else if (c === '"' || c === "'") {
      quote = c;
    } else if (c === "#" && (i === 0 || /\s/.test(line[i - 1] as string))) {
      return line.slice(0, i);
    }
  }
  return line;
}

const unquote = (s: string): string => (/^(".*"|'.*')$/.test(s) ? s.slice(1, -1) : s);

function scalar(s: string): unknown {
  if (/^(".*"|'.*')$/.test(s)) return s.slice(1, -1);
  if (s === "true" || s === "false") return s === "true";
  if (s === "null" || s === "~") return null;
  if (/^-?\d+(\.\d+)?$/.test(s)) return Number(s);
  if (/^[[{&*|>!%@`]/.test(s)) throw new Error(`unsupported YAML value: ${s}`);
  return s;
}
