// Bundle budgets: what a page pays, min+gzip, for each import set, with what each part weighs (esbuild's metafile).
// `npm run size` fails when a set grows past its budget; `npm run size -- --write` refreshes the tables in the docs.
import { readFileSync, writeFileSync } from "node:fs";
import { relative } from "node:path";
import { gzipSync } from "node:zlib";
import { build } from "esbuild";

interface Budget {
  name: string;
  /** The import a page writes; resolved from the sources, peers from node_modules, with the "browser" condition. */
  code: string;
  /** Fails above this many bytes, min+gzip. */
  limit: number;
  /** Where issue 18 wants it; shown beside the budget until the engine is small enough to meet it. */
  target: number;
}

// Budgets sit just above today's sizes (main after the round's merges: the store guard, strict options, the key
// header encodings and retry took them from 14.4 / 29.6 KB to 16.8 / 32.0 KB on 2026-12-03; engine v3, with its call
// plan, Leader and input cache, to 18.1 / 33.2 KB the same day; issue 17's live streams wired into the engine, with
// src/live.ts's writer and reader in the core, to 19.5 / 34.6 KB; indexedDBStore's live-stream capability, and
// withWebLocks passing it through, took the browser set to 35.5 KB), so growth fails; lower them when a change shrinks
// a set, raise one only on purpose.
const BUDGETS: Budget[] = [
  {
    name: "`createIdempotentFetch` + `memoryStore`",
    code: 'export { createIdempotentFetch, memoryStore } from "./src/index.ts";',
    limit: 19.6 * 1024,
    target: 6 * 1024,
  },
  {
    name: "`install()` + `indexedDBStore` + `withWebLocks`",
    code: [
      'export { install, withWebLocks } from "./src/install-browser.ts";',
      'export { indexedDBStore } from "./adapters/indexeddb.ts";',
    ].join("\n"),
    limit: 35.6 * 1024,
    target: 20 * 1024,
  },
];

const kb = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KB`;

/** "node_modules/@mswjs/interceptors/lib/..." -> "@mswjs/interceptors"; sources stay file by file. */
function partOf(input: string): string {
  const at = input.lastIndexOf("node_modules/");
  if (at < 0) return input.replace(/^\.\//, "");
  const [scope, name] = input.slice(at + "node_modules/".length).split("/");
  return scope!.startsWith("@") ? `${scope}/${name}` : scope!;
}

async function measure(budget: Budget): Promise<{ min: number; gzip: number; parts: [string, number][] }> {
  const result = await build({
    stdin: { contents: budget.code, resolveDir: process.cwd(), sourcefile: "page.ts", loader: "ts" },
    bundle: true,
    minify: true,
    format: "esm",
    platform: "browser",
    target: "es2022",
    write: false,
    metafile: true,
    outfile: "page.js",
    logLevel: "error",
  });
  const output = result.outputFiles[0]!.contents;
  const parts = new Map<string, number>();
  for (const [input, { bytesInOutput }] of Object.entries(Object.values(result.metafile.outputs)[0]!.inputs)) {
    const part = partOf(relative(process.cwd(), input));
    parts.set(part, (parts.get(part) ?? 0) + bytesInOutput);
  }
  const sorted = [...parts].filter(([, bytes]) => bytes > 0).sort((a, b) => b[1] - a[1]);
  return { min: output.length, gzip: gzipSync(output, { level: 9 }).length, parts: sorted };
}

/** The tables between `<!-- size:NAME -->` and `<!-- /size:NAME -->` in the docs. */
const TABLES = { summary: "README.md", parts: "docs/package.md" } as const;

let over = 0;
const rows: string[] = [];
const partTables: string[] = [];
for (const budget of BUDGETS) {
  const { min, gzip, parts } = await measure(budget);
  const ok = gzip <= budget.limit;
  if (!ok) over++;
  rows.push(`| ${budget.name} | ${kb(min)} | **${kb(gzip)}** | ${kb(budget.limit)} | ${kb(budget.target)} |`);
  partTables.push(
    `${budget.name}: ${kb(min)} minified, ${kb(gzip)} min+gzip\n\n| part | minified | share |\n|---|---|---|\n${parts
      .map(([part, bytes]) => `| \`${part}\` | ${kb(bytes)} | ${Math.round((bytes / min) * 100)}% |`)
      .join("\n")}`,
  );
  console.log(`size: ${ok ? "ok  " : "OVER"} ${kb(gzip)} min+gzip (budget ${kb(budget.limit)}) ${budget.name}`);
  for (const [part, bytes] of parts.slice(0, 6)) console.log(`        ${kb(bytes).padStart(8)} min  ${part}`);
}
const tables: Record<keyof typeof TABLES, string> = {
  summary: `| page imports | minified | min+gzip | CI budget | target |\n|---|---|---|---|---|\n${rows.join("\n")}`,
  parts: partTables.join("\n\n"),
};
// A stale table is reported, not failed: every engine change moves the numbers, and `--write` refreshes them.
for (const [name, file] of Object.entries(TABLES) as [keyof typeof TABLES, string][]) {
  const text = readFileSync(file, "utf8");
  const marked = new RegExp(`(<!-- size:${name} -->\n)[\\s\\S]*?(\n<!-- /size:${name} -->)`);
  if (!marked.test(text)) throw new Error(`${file}: no <!-- size:${name} --> ... <!-- /size:${name} --> block`);
  const fresh = text.replace(marked, (_, open: string, close: string) => `${open}\n${tables[name]}\n${close}`);
  if (fresh === text) continue;
  if (process.argv.includes("--write")) {
    writeFileSync(file, fresh);
    console.log(`size: wrote the ${name} table in ${file}`);
  } else console.log(`size: the ${name} table in ${file} is stale: npm run size -- --write`);
}
if (over > 0) {
  console.error(`size: ${over} import set(s) over budget; shrink them or raise the budget in .ci/size.ts on purpose`);
  process.exit(1);
}
