// Build: one ESM + CJS + .d.ts entry per export of deno.json (the one list of entry points), the
// runtime-specific install() entries behind package.json's conditions, and a one-file browser bundle.
import { readFileSync } from "node:fs";
import { defineConfig } from "tsup";

const { exports } = JSON.parse(readFileSync("deno.json", "utf8")) as { exports: Record<string, string> };

/** "./adapters/ioredis" -> "adapters/ioredis", "." -> "index" */
export const entryName = (subpath: string): string => (subpath === "." ? "index" : subpath.slice(2));

/** The one-file browser bundle (package.json's "./browser"). */
export const BROWSER_BUNDLE = "browser/idemfetch";

/** package.json's "./install" also points at these, chosen by the "node" and "browser" conditions. */
export const conditionalEntries = {
  "install-node": "src/install-node.ts",
  "install-browser": "src/install-browser.ts",
};

export default defineConfig([
  {
    entry: {
      ...Object.fromEntries(Object.entries(exports).map(([subpath, source]) => [entryName(subpath), source])),
      ...conditionalEntries,
    },
    format: ["esm", "cjs"],
    dts: true,
    sourcemap: true,
    target: "es2022",
    platform: "neutral",
    // Deno and edge runtimes need the node: prefix kept; only the Node install entry uses one.
    removeNodeProtocol: false,
    external: [/^node:/],
    splitting: true,
    treeshake: true,
  },
  {
    // <script type="module"> with no bundler: everything, dependencies included, in one file.
    entry: { [BROWSER_BUNDLE]: "src/browser.ts" },
    format: ["esm"],
    dts: true,
    platform: "browser",
    target: "es2022",
    noExternal: [/.*/],
    minify: true,
    sourcemap: true,
    removeNodeProtocol: false,
  },
]);
