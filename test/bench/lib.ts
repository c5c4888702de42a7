// Shared helpers of the benchmark: statistics, a keep-alive HTTP load client, child processes over IPC.
import { type ChildProcess, fork } from "node:child_process";
import { Agent, request } from "node:http";

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** Sorted copy; every statistic below reads from it. */
const sorted = (samples: number[]): number[] => [...samples].sort((a, b) => a - b);

export function quantile(samples: number[], q: number): number {
  if (samples.length === 0) return Number.NaN;
  const s = sorted(samples);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
}

export const median = (samples: number[]): number => quantile(samples, 0.5);
export const p99 = (samples: number[]): number => quantile(samples, 0.99);

export interface Reply {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

/**
 * A minimal HTTP/1.1 client on keep-alive sockets: much cheaper per request than fetch, so the load
 * generator's own cost stays small and identical for every contender.
 */
export class LoadClient {
  private readonly agent: Agent;
  private readonly host: string;
  private readonly port: number;

  constructor(base: string, maxSockets = Number.POSITIVE_INFINITY) {
    const url = new URL(base);
    this.host = url.hostname;
    this.port = Number(url.port);
    // Idle sockets are kept (up to maxSockets), so a burst after a warm-up opens no new connections.
    this.agent = new Agent({ keepAlive: true, maxSockets, maxFreeSockets: 4096, keepAliveMsecs: 10_000 });
  }

  send(path: string, key: string | null, body: string): Promise<Reply> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { "content-type": "application/json" };
      if (key !== null) headers["idempotency-key"] = key;
      const req = request(
        { agent: this.agent, host: this.host, port: this.port, method: "POST", path, headers },
        (res) => {
          const chunks: Buffer[] = [];
          res.on("data", (c: Buffer) => chunks.push(c));
          res.on("end", () =>
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }),
          );
          res.on("error", reject);
        },
      );
      req.on("error", reject);
      req.end(body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

/** A child process (run through tsx) that answers `call(command)` over IPC. */
export interface Host<Ready = Record<string, unknown>> {
  readonly ready: Ready;
  readonly child: ChildProcess;
  call<T = unknown>(command: string, args?: unknown): Promise<T>;
  close(): Promise<void>;
}

interface HostMessage {
  id?: number;
  type?: string;
  result?: unknown;
  error?: string;
}

let nextCall = 0;

export async function startHost<Ready = Record<string, unknown>>(
  file: string,
  env: Record<string, string> = {},
  execArgv: string[] = [],
): Promise<Host<Ready>> {
  const child = fork(new URL(file, import.meta.url).pathname, [], {
    env: { ...process.env, ...env },
    execArgv: [...execArgv, "--import", "tsx"],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  let onReady: (ready: Ready) => void = () => {};
  const readyPromise = new Promise<Ready>((resolve) => (onReady = resolve));
  child.on("message", (message: HostMessage) => {
    if (message.type === "ready") return onReady(message.result as Ready);
    const waiter = message.id === undefined ? undefined : pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id as number);
    if (message.error !== undefined) waiter.reject(new Error(message.error));
    else waiter.resolve(message.result);
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const ready = await Promise.race([
    readyPromise,
    exited.then(() => {
      throw new Error(`bench host ${file} (${JSON.stringify(env)}) exited before it was ready`);
    }),
  ]);
  return {
    ready,
    child,
    call<T>(command: string, args?: unknown): Promise<T> {
      const id = ++nextCall;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        child.send({ id, command, args });
      });
    },
    async close() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.send({ id: ++nextCall, command: "exit" });
      await Promise.race([exited, sleep(3000)]);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      await exited;
    },
  };
}

/** The child side of `startHost`: serve commands until "exit". */
export function serveHost(ready: unknown, commands: Record<string, (args: unknown) => unknown>): void {
  process.on("message", async (message: { id: number; command: string; args?: unknown }) => {
    if (message.command === "exit") {
      try {
        await commands.exit?.(undefined);
      } finally {
        process.exit(0);
      }
    }
    const run = commands[message.command];
    try {
      if (!run) throw new Error(`unknown command ${message.command}`);
      process.send?.({ id: message.id, result: await run(message.args) });
    } catch (error) {
      process.send?.({ id: message.id, error: String((error as Error)?.stack ?? error) });
    }
  });
  process.send?.({ type: "ready", result: ready });
}

/** "1.23 ms", "456 µs": a duration given in ms. */
export function ms(value: number): string {
  if (!Number.isFinite(value)) return "–";
  if (value >= 100) return `${value.toFixed(0)} ms`;
  if (value >= 1) return `${value.toFixed(2)} ms`;
  return `${(value * 1000).toFixed(0)} µs`;
}

/** "1.04×". */
export function times(value: number): string {
  if (!Number.isFinite(value)) return "–";
  if (value >= 100) return `${value.toFixed(0)}×`;
  if (value >= 10) return `${value.toFixed(1)}×`;
  return `${value.toFixed(2)}×`;
}

export function kb(bytes: number): string {
  return `${(bytes / 1024).toFixed(2)} KB`;
}

/** A markdown table, columns padded as the project's formatter (Biome) lays them out; cells are already formatted. */
export function table(head: string[], rows: string[][]): string {
  const all = [head, ...rows].map((cells) => cells.map((c) => c.replaceAll("|", "\\|")));
  const widths = head.map((_, i) => Math.max(3, ...all.map((cells) => [...(cells[i] ?? "")].length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => c + " ".repeat((widths[i] as number) - [...c].length)).join(" | ")} |`;
  const [first, ...rest] = all;
  return [line(first as string[]), line(widths.map((w) => "-".repeat(w))), ...rest.map(line)].join("\n");
}

/**
 * Runs `n` rounds; each round calls `fn` once per item, starting at a rotating offset, so machine noise
 * (other processes, GC, timers) falls on every contender alike. Returns the samples per item.
 */
export async function interleave<T>(
  items: T[],
  n: number,
  fn: (item: T, i: number) => Promise<number>,
): Promise<number[][]> {
  const samples = items.map((): number[] => []);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < items.length; j++) {
      const k = (i + j) % items.length;
      (samples[k] as number[]).push(await fn(items[k] as T, i));
    }
  }
  return samples;
}

/** How many of each outcome: "1×200, 999×409". */
export function tally(labels: string[]): string {
  const counts = new Map<string, number>();
  for (const label of labels) counts.set(label, (counts.get(label) ?? 0) + 1);
  return [...counts]
    .sort((a, b) => b[1] - a[1])
    .map(([label, count]) => `${count}×${label}`)
    .join(", ");
}
