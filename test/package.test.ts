// The package's entry points agree everywhere: deno.json (sources), package.json (built files), tsup (entries).
import { existsSync, readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { conditionalEntries, entryName } from "../tsup.config.js";

const pkg = JSON.parse(readFileSync("package.json", "utf8"));
const deno = JSON.parse(readFileSync("deno.json", "utf8"));
// "./browser" is the one-file bundle for <script type="module">; Deno imports the modules themselves.
const PACKAGE_ONLY = new Set(["./package.json", "./browser"]);
const subpaths = (exports: Record<string, unknown>) => Object.keys(exports).filter((k) => !PACKAGE_ONLY.has(k));

describe("entry points", () => {
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
      const target = pkg.exports[subpath].deno ?? pkg.exports[subpath];
      expect(target.types, subpath).toBe(`./dist/${name}.d.ts`);
      expect(target.import ?? target.default, subpath).toBe(`./dist/${name}.js`);
      if (target.require !== undefined) expect(target.require, subpath).toBe(`./dist/${name}.cjs`);
    }
  });

  it("the install() conditions point at the runtime-specific tsup entries", () => {
    const install = pkg.exports["./install"];
    for (const [condition, entry] of [
      ["node", "install-node"],
      ["browser", "install-browser"],
      ["default", "install-browser"],
    ] as const) {
      expect(install[condition].types, condition).toBe(`./dist/${entry}.d.ts`);
      expect(install[condition].import ?? install[condition].default, condition).toBe(`./dist/${entry}.js`);
      expect(conditionalEntries[entry], condition).toBeDefined();
    }
  });

  it("versions agree", () => {
    expect(deno.version).toBe(pkg.version);
  });
});

describe("edge runtimes", () => {
  it.each(["src/index.ts", "src/server.ts", "adapters/upstash.ts", "adapters/deno-kv.ts", "src/testing.ts"])(
    "%s bundles for a neutral platform without any Node built-in",
    async (entry) => {
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
    },
  );
});
