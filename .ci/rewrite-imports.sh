#!/usr/bin/env bash
# One-time rewrite for Deno and JSR without --sloppy-imports: every relative import of a TypeScript source spelled
# `./x.js` becomes `./x.ts` (tsc: allowImportingTsExtensions + rewriteRelativeImportExtensions; tsup, vitest and
# tsx read both), and deno.json drops "sloppy-imports". A specifier is changed only when x.ts exists and x.js does not.
# Run once on main after every branch is merged, then: npx tsc -p . && npm run check:deno && npm test.
set -euo pipefail
cd "$(dirname "$0")/.."
node --input-type=module - <<'JS'
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const files = (dir) =>
  readdirSync(dir).flatMap((name) => {
    const path = join(dir, name);
    if (name === "node_modules" || name === "dist") return [];
    return statSync(path).isDirectory() ? files(path) : /\.(ts|mts|cts)$/.test(name) ? [path] : [];
  });
const roots = ["src", "adapters", "test", "demo", ".ci"].filter(existsSync);
const top = readdirSync(".").filter((name) => /\.ts$/.test(name));
let changed = 0;
for (const file of [...roots.flatMap(files), ...top]) {
  const text = readFileSync(file, "utf8");
  // A quoted relative specifier ending in .js: import/export from, import(), typeof import(), vi.mock().
  const next = text.replace(/(["'])(\.\.?\/[^"'\n]*?)\.js\1/g, (whole, quote, stem) => {
    const target = resolve(dirname(file), stem);
    return existsSync(`${target}.ts`) && !existsSync(`${target}.js`) ? `${quote}${stem}.ts${quote}` : whole;
  });
  if (next !== text) {
    writeFileSync(file, next);
    changed++;
  }
}
const deno = JSON.parse(readFileSync("deno.json", "utf8"));
if (deno.unstable) {
  deno.unstable = deno.unstable.filter((flag) => flag !== "sloppy-imports");
  if (deno.unstable.length === 0) delete deno.unstable;
  writeFileSync("deno.json", `${JSON.stringify(deno, null, 2)}\n`);
}
console.log(`rewrite-imports: ${changed} files now import .ts sources; deno.json without sloppy-imports`);
JS
