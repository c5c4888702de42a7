// Build: one ESM + CJS + .d.ts entry per export of deno.json (the one list of entry points), the
// runtime-specific install() entries behind package.json's conditions, and a one-file browser bundle.
import { readFileSync, writeFileSync } from "node:fs";
import { basename } from "node:path";
import { pathToFileURL } from "node:url";
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

/**
 * Entries that import an optional peer, by entry name, with that peer. Node and Deno (package.json's "node" and
 * "deno" conditions) load a wrapper of each instead, `<entry>.peer.js` / `.peer.cjs`, which loads the entry and,
 * when the peer is missing, throws an error that names it and its install command. Bundlers for browsers and
 * workers get the entry itself: their build fails naming the import.
 */
export const PEER_ENTRIES: Record<string, string> = {
  install: "@mswjs/interceptors",
  "install-node": "@mswjs/interceptors",
  hono: "hono",
  otel: "@opentelemetry/api",
  "adapters/upstash": "@upstash/redis",
  "adapters/indexeddb": "idb-keyval",
};

/** The message a wrapper throws: the entry, the peer, and the command that installs it at package.json's range. */
export function missingPeerMessage(entry: string, peer: string): string {
  const range = (JSON.parse(readFileSync("package.json", "utf8")) as { peerDependencies: Record<string, string> })
    .peerDependencies[peer];
  return `${entry} needs the package '${peer}', which is not installed: npm install ${peer}@${range}`;
}

/** Writes dist/<entry>.peer.js (ESM: a top-level await import) and .peer.cjs (a require) for each peer entry. */
async function writePeerWrappers(): Promise<void> {
  for (const [name, peer] of Object.entries(PEER_ENTRIES)) {
    const file = `./${basename(name)}`;
    const subpath = `idemfetch/${name.replace(/-node$/, "")}`;
    // The peer named in the runtime's message (first line): "Cannot find package 'hono'", "... module 'hono/x'".
    const pattern = `/^[^\\n]*['"]${peer.replace(/[/.]/g, "\\$&")}(?:\\/[^'"]*)?['"]/`;
    const named = `(error) => (${pattern}.test(String(error?.message)) ? new Error(${JSON.stringify(missingPeerMessage(subpath, peer))}, { cause: error }) : error)`;
    const header = `// ${subpath} for Node and Deno: loads ${file}, and names the optional peer '${peer}' and its install command when it is missing.\n`;
    const names = Object.keys(await import(pathToFileURL(`dist/${name}.js`).href)).filter((k) => k !== "default");
    writeFileSync(
      `dist/${name}.peer.js`,
      `${header}const named = ${named};\nlet entry;\ntry {\n  entry = await import("${file}.js");\n} catch (error) {\n  throw named(error);\n}\nexport const { ${names.join(", ")} } = entry;\n`,
    );
    writeFileSync(
      `dist/${name}.peer.cjs`,
      `${header}"use strict";\nconst named = ${named};\ntry {\n  module.exports = require("${file}.cjs");\n} catch (error) {\n  throw named(error);\n}\n`,
    );
  }
}

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
    onSuccess: writePeerWrappers,
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
