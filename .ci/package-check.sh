#!/usr/bin/env bash
# The package as a user gets it: packs the built dist with npm pack, runs attw and publint on that tarball,
# compares the ESM and CJS runtime exports of every subpath, checks what each entry says without its optional peer
# (.ci/missing-peers.ts), and type-checks a consumer importing every subpath under nodenext (ESM and CJS), node16 and
# bundler with lib es2022 and no DOM. Needs `npm run build` first.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

tarball=$(npm pack --silent --pack-destination "$tmp" | tail -1)
echo "package-check: $tarball ($(du -k "$tmp/$tarball" | cut -f1) KiB), $(tar tzf "$tmp/$tarball" | wc -l) files"
if tar tzf "$tmp/$tarball" | grep -vE '^package/(dist/|README\.md$|LICENSE$|package\.json$)'; then
  echo "package-check: the tarball ships files consumers do not need (above)" >&2
  exit 1
fi

# The one-file browser bundle is ESM on purpose (a <script type="module">): checked under the esm-only profile.
npx attw "$tmp/$tarball" --exclude-entrypoints ./browser
npx attw "$tmp/$tarball" --entrypoints ./browser --profile esm-only
npx publint --strict "$tmp/$tarball"

# A consumer project: the tarball unpacked into node_modules, peers and tools linked from this repo's.
consumer=$tmp/consumer
mkdir -p "$consumer/node_modules/"{@types,@mswjs,@upstash,@opentelemetry}
tar xzf "$tmp/$tarball" -C "$tmp" && mv "$tmp/package" "$consumer/node_modules/idemfetch"
for dep in typescript @types/node hono ioredis @upstash/redis idb-keyval @mswjs/interceptors fastify @opentelemetry/api; do
  ln -s "$repo/node_modules/$dep" "$consumer/node_modules/$dep"
done
subpaths=$(node -p 'Object.keys(require("./package.json").exports).filter((s) => s !== "./package.json").join(" ")')

# Runtime: every subpath but the browser-only ones loads under import and require with the same names.
cat >"$consumer/exports.mjs" <<'JS'
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
for (const subpath of process.argv.slice(2)) {
  const name = subpath === "." ? "idemfetch" : `idemfetch/${subpath.slice(2)}`;
  const esm = Object.keys(await import(name)).filter((k) => k !== "default").sort();
  if (["./browser"].includes(subpath)) continue;
  const cjs = Object.keys(require(name)).filter((k) => k !== "default" && k !== "__esModule").sort();
  if (esm.join() !== cjs.join()) throw new Error(`${name}: ESM exports ${esm} but CJS exports ${cjs}`);
  console.log(`package-check: ${name}: ${esm.length} exports, ESM and CJS agree`);
}
JS
(cd "$consumer" && node exports.mjs $subpaths)

# A project without any optional peer: each entry fails with the message docs/install.md documents, or loads.
bare=$tmp/bare
mkdir -p "$bare/node_modules/@remix-run"
tar xzf "$tmp/$tarball" -C "$tmp" && mv "$tmp/package" "$bare/node_modules/idemfetch"
ln -s "$repo/node_modules/@remix-run/node-fetch-server" "$bare/node_modules/@remix-run/node-fetch-server"
echo '{ "nodeModulesDir": "manual" }' >"$bare/deno.json"
npx tsx .ci/missing-peers.ts "$bare"

# Types: one file importing every subpath, compiled per module setting; errors in idemfetch's files fail.
imports() { # [cjs]: a CommonJS file cannot require the ESM-only browser bundle under node16
  local i=0
  for subpath in $subpaths; do
    [ "${1:-}" = cjs ] && [ "$subpath" = ./browser ] && continue
    local name=idemfetch
    [ "$subpath" = "." ] || name="idemfetch/${subpath#./}"
    echo "import * as m$i from \"$name\";"
    i=$((i + 1))
  done
  echo "export const all = [$(seq -s, -f 'm%g' 0 $((i - 1)))];"
  echo 'import { createIdempotentFetch, memoryStore } from "idemfetch";'
  echo 'export const call: Promise<Response> = createIdempotentFetch({ store: memoryStore() })("https://example.test", { method: "POST" });'
}
imports >"$consumer/esm.mts"
imports cjs >"$consumer/cjs.cts"
imports >"$consumer/bundler.ts"
check() { # name module moduleResolution files...
  local name=$1 module=$2 resolution=$3
  shift 3
  cat >"$consumer/tsconfig.$name.json" <<JSON
{ "compilerOptions": { "module": "$module", "moduleResolution": "$resolution", "target": "es2022", "lib": ["es2022"],
  "types": ["node"], "strict": true, "noEmit": true, "skipLibCheck": false }, "files": $(printf '%s\n' "$@" | node -p 'JSON.stringify(require("fs").readFileSync(0, "utf8").trim().split("\n"))') }
JSON
  local out
  out=$(cd "$consumer" && node node_modules/typescript/bin/tsc -p "tsconfig.$name.json" || true)
  # Other packages' own declarations (a browser library without DOM) are theirs; ours and the consumer's must be clean.
  local ours
  ours=$(grep -E '^(node_modules/idemfetch/|[a-z]+\.[cm]?ts\()' <<<"$out" || true)
  if [ -n "$ours" ]; then
    echo "package-check: consumer type-check $name failed:" >&2
    echo "$ours" >&2
    return 1
  fi
  echo "package-check: consumer type-check $name: clean"
}
check nodenext-esm nodenext nodenext esm.mts
check nodenext-cjs nodenext nodenext cjs.cts
check node16 node16 node16 esm.mts cjs.cts
check bundler esnext bundler bundler.ts
echo "package-check: ok"
