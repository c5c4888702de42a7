// package.json's entry fields (exports, typesVersions, main/module/types), derived from deno.json's exports
// and tsup.config.ts: `npm run sync:exports` rewrites them; test/package.test.ts fails when they drift.
import { readFileSync, writeFileSync } from "node:fs";
import { BROWSER_BUNDLE, entryName, PEER_ENTRIES } from "../tsup.config.ts";

/** One dual (ESM + CJS) tsup entry: each format with its own declaration file (.d.ts is ESM, .d.cts CommonJS). */
const dual = (name: string) => ({
  import: { types: `./dist/${name}.d.ts`, default: `./dist/${name}.js` },
  require: { types: `./dist/${name}.d.cts`, default: `./dist/${name}.cjs` },
});
/** An ESM-only file (the browser builds: their dependencies are ESM-only). */
const esm = (name: string) => ({ types: `./dist/${name}.d.ts`, default: `./dist/${name}.js` });
/** The wrapper of an entry that imports an optional peer (tsup.config.ts), with the entry's own types. */
const peerEsm = (name: string) => ({ types: `./dist/${name}.d.ts`, default: `./dist/${name}.peer.js` });
/**
 * An entry that imports a peer, for Node and Deno as its wrapper, which names a missing peer and its install
 * command. The ES wrapper has a top-level await, which a bundler cannot build into CommonJS: it goes only to
 * Node's own loader (`node-addons`, a condition Node sets and bundlers do not) and to Deno. `require` gets the
 * CommonJS wrapper everywhere: a `require()` in a `try`, which bundles as it runs.
 */
const peerDual = (name: string, esmFile = dual(name).import) => ({
  "node-addons": { import: peerEsm(name) },
  import: esmFile,
  require: { types: `./dist/${name}.d.cts`, default: `./dist/${name}.peer.cjs` },
});
const withPeer = (name: string) => (name in PEER_ENTRIES ? { deno: peerEsm(name), ...peerDual(name) } : dual(name));

/** Subpaths whose file depends on the runtime, by condition (first match wins, as Node and bundlers read them). */
const CONDITIONAL: Record<string, Record<string, unknown>> = {
  "./install": {
    deno: peerEsm("install"),
    browser: esm("install-browser"),
    node: peerDual("install-node"),
    default: esm("install-browser"),
  },
};
/** The CommonJS declaration file a node10 resolver (no exports support) gets for a conditional subpath. */
const NODE10: Record<string, string> = { "./install": "./dist/install-node.d.cts" };

/** The fields of package.json that name built files. */
export function packageFields(denoExports: Record<string, string>) {
  const exports: Record<string, unknown> = {};
  const typesVersions: Record<string, string[]> = {};
  for (const subpath of Object.keys(denoExports)) {
    const name = entryName(subpath);
    exports[subpath] = CONDITIONAL[subpath] ?? withPeer(name);
    if (subpath !== ".") typesVersions[subpath.slice(2)] = [NODE10[subpath] ?? `./dist/${name}.d.cts`];
  }
  exports["./browser"] = esm(BROWSER_BUNDLE);
  typesVersions.browser = [`./dist/${BROWSER_BUNDLE}.d.ts`];
  exports["./package.json"] = "./package.json";
  return {
    main: "./dist/index.cjs",
    module: "./dist/index.js",
    types: "./dist/index.d.cts",
    exports,
    typesVersions: { "*": typesVersions },
  };
}

if (process.argv[1]?.endsWith("package-exports.ts")) {
  const pkg = JSON.parse(readFileSync("package.json", "utf8"));
  const fields = packageFields(JSON.parse(readFileSync("deno.json", "utf8")).exports);
  const next: Record<string, unknown> = {};
  // Keep package.json's key order; the entry fields take the place of "main".
  for (const [key, value] of Object.entries(pkg)) {
    if (key in fields) continue;
    if (key === "sideEffects") Object.assign(next, { [key]: value }, fields);
    else next[key] = value;
  }
  writeFileSync("package.json", `${JSON.stringify(next, null, 2)}\n`);
}
