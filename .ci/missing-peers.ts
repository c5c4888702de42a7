// A project with the tarball and none of its optional peers (package-check.sh builds it): each entry that loads a
// peer fails with exactly the message docs/install.md's table documents for it, under Node's import and require,
// Deno and a browser bundle (esbuild), and names the install command the README gives; every other entry loads.
// Usage: tsx .ci/missing-peers.ts <project folder> (the tarball unpacked in its node_modules, a deno.json beside).
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { build } from "esbuild";

const project = process.argv[2];
if (!project) throw new Error("usage: tsx .ci/missing-peers.ts <project folder>");
const deno = join(process.cwd(), "node_modules/.bin/deno");
const pkg = JSON.parse(readFileSync("package.json", "utf8"));
const readme = readFileSync("README.md", "utf8");

/** docs/install.md's rows under "When a peer is missing": entry, its message (Node ESM, Node CJS, Deno), install command. */
const section = readFileSync("docs/install.md", "utf8").split("## When a peer is missing")[1]?.split("\n## ")[0] ?? "";
interface Row {
  message: string;
  install: string;
}
const rows = new Map<string, Row>(
  [...section.matchAll(/^\| `(idemfetch[^`]*)` \| `([^`]+)` \| `([^`]+)` \|$/gm)].map((m) => [
    m[1] as string,
    { message: m[2] as string, install: m[3] as string },
  ]),
);
if (rows.size === 0) throw new Error("docs/install.md: no rows found under “When a peer is missing”");

/** What loading `entry` gives: "loaded", or the error's first line. */
function load(runtime: "esm" | "cjs" | "deno", entry: string): string {
  const [command, args] = {
    esm: [process.execPath, ["--input-type=module", "-e", `await import(${JSON.stringify(entry)})`]],
    cjs: [process.execPath, ["-e", `require(${JSON.stringify(entry)})`]],
    deno: [deno, ["eval", `await import(${JSON.stringify(entry)})`]],
  }[runtime] as [string, string[]];
  const wrapped = [
    ...args.slice(0, -1),
    `try { ${args.at(-1)}; console.log("loaded") } catch (e) { console.log(String(e?.message).split("\\n")[0]) }`,
  ];
  const run = spawnSync(command, wrapped, { cwd: project, encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
  if (run.status !== 0) throw new Error(`${runtime} ${entry}: exited ${run.status}: ${run.stderr}`);
  return run.stdout.trim().split("\n").at(-1) ?? "";
}

const problems: string[] = [];
const entries = Object.keys(pkg.exports)
  .filter((subpath) => !["./package.json", "./browser"].includes(subpath))
  .map((subpath) => (subpath === "." ? "idemfetch" : `idemfetch/${subpath.slice(2)}`));
for (const entry of entries) {
  const row = rows.get(entry);
  for (const runtime of ["esm", "cjs", "deno"] as const) {
    const got = load(runtime, entry);
    if (!row) {
      if (got !== "loaded") problems.push(`${entry} (${runtime}) needs no peer by the docs, but: ${got}`);
      continue;
    }
    if (got !== row.message) problems.push(`${entry} (${runtime}): documented \`${row.message}\`, got \`${got}\``);
  }
  if (row) {
    // The install command is the peer's own range, and the README's table gives the same command.
    const [, name, range] = /^npm install (@?[^@\s]+)@(\S+)$/.exec(row.install) ?? [];
    if (!name || pkg.peerDependencies[name] !== range) {
      problems.push(
        `${entry}: \`${row.install}\` is not package.json's peer range ${name} ${pkg.peerDependencies[name ?? ""]}`,
      );
    }
    if (row.message !== `${entry} needs the package '${name}', which is not installed: ${row.install}`) {
      problems.push(`${entry}: the message does not name ${name} and \`${row.install}\``);
    }
    if (!readme.includes(row.install)) problems.push(`${entry}: the README's install table lacks \`${row.install}\``);
  }
  console.log(`missing-peers: ${entry}: ${row ? "fails as documented" : "loads"} (ESM, CJS, Deno)`);
}
for (const entry of rows.keys()) {
  if (!entries.includes(entry)) problems.push(`docs/install.md documents ${entry}, which package.json does not export`);
}

// A browser bundle stops at build time, naming the import it cannot resolve.
for (const [entry, peer] of [
  ["idemfetch/install", "@mswjs/interceptors/fetch/web"],
  ["idemfetch/adapters/indexeddb", "idb-keyval"],
]) {
  const documented = `Could not resolve "${peer}"`;
  const message = await build({
    stdin: { contents: `import ${JSON.stringify(entry)};`, resolveDir: project },
    bundle: true,
    write: false,
    platform: "browser",
    logLevel: "silent",
  }).then(
    () => "bundled",
    (error: { errors?: { text: string }[] }) => error.errors?.[0]?.text ?? String(error),
  );
  if (message !== documented) problems.push(`esbuild ${entry}: expected \`${documented}\`, got \`${message}\``);
  if (!section.includes(documented)) problems.push(`docs/install.md does not show esbuild's \`${documented}\``);
  console.log(`missing-peers: esbuild ${entry}: ${message}`);
}

// A server bundle (esbuild, platform node) gets the entry itself, never the wrapper's top-level await, which the
// CommonJS format refuses: it too stops at build time naming the peer, in either format.
for (const [entry, row] of rows) {
  const peer = /^npm install (@?[^@\s]+)@/.exec(row.install)?.[1] as string;
  for (const format of ["esm", "cjs"] as const) {
    const message = await build({
      stdin: { contents: `import ${JSON.stringify(entry)};`, resolveDir: project },
      bundle: true,
      write: false,
      platform: "node",
      format,
      logLevel: "silent",
    }).then(
      () => "bundled",
      (error: { errors?: { text: string }[] }) => error.errors?.[0]?.text ?? String(error),
    );
    if (!message.startsWith(`Could not resolve "${peer}`)) {
      problems.push(`esbuild ${entry} (node, ${format}): expected \`Could not resolve "${peer}..."\`, got \`${message}\``);
    }
  }
  console.log(`missing-peers: esbuild ${entry} (node, esm and cjs): names ${peer}`);
}

if (problems.length > 0) {
  console.error(`missing-peers:\n  ${problems.join("\n  ")}`);
  process.exit(1);
}
console.log(`missing-peers: ok (${rows.size} entries need a peer, ${entries.length - rows.size} load without any)`);
