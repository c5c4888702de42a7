// The package's entry points agree everywhere: deno.json (sources), package.json (built files), tsup (entries).
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { packageFields } from "../.ci/package-exports.ts";
import { conditionalEntries, entryName, PEER_ENTRIES } from "../tsup.config.ts";

const pkg = JSON.parse(readFileSync("package.json", "utf8"));
const deno = JSON.parse(readFileSync("deno.json", "utf8"));
// "./browser" is the one-file bundle for <script type="module">; Deno imports the modules themselves.
const PACKAGE_ONLY = new Set(["./package.json", "./browser"]);
const subpaths = (exports: Record<string, unknown>) => Object.keys(exports).filter((k) => !PACKAGE_ONLY.has(k));

/**
 * The runtime names each subpath exports: the documented API and nothing else (engine internals such as
 * createEngine, normalizeOptions and DEFAULTS stay internal). A new entry adds its line here.
 */
const CORE = [
  "IdempotencyError",
  "IdempotencyKeyError",
  "StoreUnavailableError",
  "canonicalJson",
  "createIdempotentFetch",
  "decodeRecord",
  "defaultShouldStore",
  "encodeRecord",
  "errorResponse",
  "isIdempotencyError",
  "isIdempotencyKeyError",
  "isStoreUnavailableError",
  "memoryStore",
  "newKey",
  "newToken",
  "sha256",
  "stableKey",
  "withWebLocks",
];
const EXPORTS: Record<string, string[]> = {
  ".": CORE,
  "./server": ["DEFAULT_METHODS", "idempotency", "idempotencyLayer"],
  "./hono": ["idempotency"],
  "./express": ["idempotency", "keepRawBody"],
  "./fastify": ["idempotency"],
  "./node": ["idempotency"],
  "./store": [
    "LiveStreamLostError",
    "base64ToBytes",
    "bytesToBase64",
    "compactBytes",
    "decide",
    "decodeRecord",
    "encodeRecord",
    "followLive",
    "hasLive",
    "isLiveStreamLostError",
    "isStoredRecord",
    "keyedListeners",
    "liveMemoryStore",
    "liveWriter",
    "newToken",
    "parseEntry",
  ],
  "./adapters/deno-kv": ["denoKvStore"],
  "./adapters/durable-object": ["IdempotencyObject", "durableObjectStore"],
  "./adapters/postgres": ["migrate", "pgListen", "postgresStore", "schemaSql", "sweep"],
  "./adapters/sqlite": ["schemaSql", "sqliteStore", "sweep"],
  "./adapters/d1": ["d1Store", "migrate", "schemaSql", "sweep"],
  "./testing": ["StoreContractError", "denoTestApi", "nodeTestApi", "testStore"],
  "./otel": ["openTelemetry"],
  "./adapters/ioredis": ["ioredisStore"],
  "./adapters/upstash": ["upstashStore"],
  "./adapters/indexeddb": ["indexedDBStore"],
  "./install": ["install", "withWebLocks"],
  "./browser": [...CORE, "indexedDBStore", "install"].sort(),
};

describe("public surface", () => {
  const sources: Record<string, string> = { ...deno.exports, "./browser": "./src/browser.ts" };
  it("every subpath is pinned", () => {
    expect(Object.keys(sources).sort()).toEqual(Object.keys(EXPORTS).sort());
  });
  it.each(Object.keys(sources))("%s exports exactly its pinned runtime names", async (subpath) => {
    const module = await import(/* @vite-ignore */ new URL(`../${sources[subpath]}`, import.meta.url).href);
    expect(Object.keys(module).sort()).toEqual(EXPORTS[subpath]);
  });
});

describe("entry points", () => {
  it("package.json's entry fields are the ones derived from deno.json (npm run sync:exports)", () => {
    const fields = packageFields(deno.exports);
    for (const [key, value] of Object.entries(fields)) expect(pkg[key], key).toEqual(value);
  });

  it("deno.json exports exactly the subpaths package.json exports", () => {
    expect(subpaths(deno.exports).sort()).toEqual(subpaths(pkg.exports).sort());
  });

  it("every deno.json export is an existing source file", () => {
    for (const source of Object.values<string>(deno.exports)) expect(existsSync(source), source).toBe(true);
  });

  it("every package.json export points at the built files of its tsup entry", () => {
    for (const subpath of subpaths(pkg.exports)) {
      const name = entryName(subpath);
      // A conditional export ("./install") names Deno's build under "deno"; the others are checked below.
      const deno = pkg.exports[subpath].deno;
      const file = deno && name in PEER_ENTRIES ? `${name}.peer` : name;
      expect(deno ?? pkg.exports[subpath].import, subpath).toEqual({
        types: `./dist/${name}.d.ts`,
        default: `./dist/${file}.js`,
      });
    }
  });

  it("an entry that imports a peer is its wrapper for Node's loader, Deno and require, and itself for bundlers' import", () => {
    for (const [name, peer] of Object.entries(PEER_ENTRIES)) {
      const subpath = `./${name.replace(/-node$/, "")}`;
      expect(pkg.peerDependencies[peer], peer).toBeDefined();
      if (name === "install") continue; // Deno's build, checked above
      const exports = name === "install-node" ? pkg.exports[subpath].node : pkg.exports[subpath];
      expect(exports, subpath).toMatchObject({
        "node-addons": { import: { types: `./dist/${name}.d.ts`, default: `./dist/${name}.peer.js` } },
        import: { types: `./dist/${name}.d.ts`, default: `./dist/${name}.js` },
        require: { types: `./dist/${name}.d.cts`, default: `./dist/${name}.peer.cjs` },
      });
      // The top-level await of the ES wrapper only where it can run: before "import", which bundlers read.
      const keys = Object.keys(exports);
      expect(keys.indexOf("node-addons"), subpath).toBeLessThan(keys.indexOf("import"));
      if (name !== "install-node") expect(exports.deno.default, subpath).toBe(`./dist/${name}.peer.js`);
    }
  });

  it("the install() conditions point at the runtime-specific tsup entries", () => {
    const install = pkg.exports["./install"];
    for (const [condition, entry] of [
      ["node", "install-node"],
      ["browser", "install-browser"],
      ["default", "install-browser"],
    ] as const) {
      const target = install[condition].import ?? install[condition];
      expect(target, condition).toEqual({ types: `./dist/${entry}.d.ts`, default: `./dist/${entry}.js` });
      expect(conditionalEntries[entry], condition).toBeDefined();
    }
  });

  it("versions agree", () => {
    expect(deno.version).toBe(pkg.version);
  });
});

describe("peer ranges", () => {
  // .ci/peers.sh tests each peer's lowest and highest version; the range in package.json starts at the lowest.
  const rows = [...readFileSync(".ci/peers.sh", "utf8").matchAll(/^ {2}"([^|"]+)\|([^|]+)\|([^|]+)\|/gm)];
  it("every peer is tested at the floor of its declared range", () => {
    expect(rows.map((r) => r[1]).sort()).toEqual(Object.keys(pkg.peerDependencies).sort());
    for (const [, name, lowest] of rows)
      expect(pkg.peerDependencies[name!], name).toMatch(new RegExp(`^\\^${lowest}( |$)`));
  });
});

describe("edge runtimes", () => {
  it.each([
    "src/index.ts",
    "src/server.ts",
    "adapters/upstash.ts",
    "adapters/deno-kv.ts",
    "adapters/d1.ts",
    "src/testing.ts",
  ])("%s bundles for a neutral platform without any Node built-in", async (entry) => {
    const { build } = await import("esbuild");
    const result = await build({
      entryPoints: [entry],
      bundle: true,
      write: false,
      platform: "neutral",
      format: "esm",
      metafile: true,
      logLevel: "silent",
      // Peer libraries are the user's; their own edge support is theirs to keep.
      external: ["@upstash/redis"],
    });
    const imports = Object.values(result.metafile.outputs).flatMap((o) => o.imports.map((i) => i.path));
    expect(imports.filter((path) => path.startsWith("node:") || !path.startsWith("@upstash/"))).toEqual([]);
  });
});
