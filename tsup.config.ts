// Build: one ESM + CJS + .d.ts entry per export of deno.json (the one list of entry points).
import { readFileSync } from "node:fs";
import { defineConfig } from "tsup";

const { exports } = JSON.parse(readFileSync("deno.json", "utf8")) as { exports: Record<string, string> };

/** "./adapters/ioredis" -> "adapters/ioredis", "." -> "index" */
export const entryName = (subpath: string): string => (subpath === "." ? "index" : subpath.slice(2));

export default defineConfig({
  entry: Object.fromEntries(Object.entries(exports).map(([subpath, source]) => [entryName(subpath), source])),
  format: ["esm", "cjs"],
  dts: true,
  clean: true,
  sourcemap: true,
  target: "es2022",
  platform: "neutral",
  // Deno and edge runtimes need the node: prefix kept.
  removeNodeProtocol: false,
  splitting: true,
  treeshake: true,
});
