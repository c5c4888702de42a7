// Bundle sizes: one entry, esbuild --bundle --minify --format=esm --platform=neutral, then gzip -9.
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

export interface BundleSize {
  name: string;
  /** What the entry exports. */
  entry: string;
  minBytes: number;
  gzipBytes: number;
  /** Packages left out of the bundle (the caller has them anyway). */
  external: string[];
}

const root = fileURLToPath(new URL("../..", import.meta.url));

export async function bundleSize(
  name: string,
  contents: string,
  options: { external?: string[]; platform?: "neutral" | "browser" } = {},
): Promise<BundleSize> {
  const { external = [], platform = "neutral" } = options;
  const result = await build({
    stdin: { contents, resolveDir: root, loader: "ts" },
    bundle: true,
    minify: true,
    format: "esm",
    platform,
    // platform "neutral" reads no package.json main fields by default; peers need them to resolve at all.
    ...(platform === "neutral" ? { mainFields: ["module", "main"] } : {}),
    external,
    write: false,
    logLevel: "silent",
  });
  const code = result.outputFiles[0]?.contents ?? new Uint8Array(0);
  return { name, entry: contents, minBytes: code.length, gzipBytes: gzipSync(code, { level: 9 }).length, external };
}

/** idemfetch's core (issue 2's definition) and the client-side peers that do the same job. */
export async function bundleSizes(): Promise<BundleSize[]> {
  return Promise.all([
    bundleSize(
      "idemfetch",
      'export { createIdempotentFetch } from "./src/fetch.ts"; export { memoryStore } from "./src/memory-store.ts";',
    ),
    bundleSize("fetch-dedupe", 'export { fetchDedupe } from "fetch-dedupe";'),
    // axios has Node-only adapters: its browser build is the one a page ships.
    bundleSize("axios-cache-interceptor", 'export { setupCache } from "axios-cache-interceptor";', {
      external: ["axios"],
      platform: "browser",
    }),
    bundleSize(
      "axios-cache-interceptor + axios",
      'export { setupCache } from "axios-cache-interceptor"; export { default } from "axios";',
      { platform: "browser" },
    ),
  ]);
}
