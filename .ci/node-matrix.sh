#!/usr/bin/env bash
# Runs the vitest Node suite (unit and integration tests; not Deno, not the browser) on each Node version of the
# matrix (20, 22, 24) besides the machine's own. Each version comes from the npm package `node` installed in a folder of its
# own outside the repository (an npm alias would not bring its binary). Usage: .ci/node-matrix.sh [major...] [-- vitest args]
set -euo pipefail
cd "$(dirname "$0")/.."

majors=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do majors+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
# Default: every major of package.json's engines but the machine's own, which `npm test` already ran on.
own=$(node -p 'process.versions.node.split(".")[0]')
if [ "${#majors[@]}" -eq 0 ]; then
  for major in 20 22 24; do [ "$major" = "$own" ] || majors+=("$major"); done
fi
cache=${IDEMFETCH_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/idemfetch-node}
# The property suite already ran its 25 random examples per property on the machine's own Node (`npm test`): here
# it runs 10, with smaller time budgets, so that a failing matrix still ends well inside CI's 90 minutes.
export PROPERTY_RUNS_FLOOR=${PROPERTY_RUNS_FLOOR:-10}
export PROPERTY_BUDGET_S=${PROPERTY_BUDGET_S:-60}
export PROPERTY_SHRINK_S=${PROPERTY_SHRINK_S:-30}

for major in "${majors[@]}"; do
  dir=$cache/$major
  if [ ! -x "$dir/node_modules/node/bin/node" ]; then
    mkdir -p "$dir"
    # A package.json of its own, or npm would install into the nearest parent that has one.
    [ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
    # The binary comes as an optional dependency of the package: npm 11's skipped install scripts do not matter.
    (cd "$dir" && npm install --no-audit --no-fund --loglevel=error "node@$major" >/dev/null)
  fi
  bin=$dir/node_modules/node/bin
  echo "node-matrix: $("$bin/node" --version)"
  start=$SECONDS
  # PATH first, so that child processes the tests spawn (workers, servers) run on the same version.
  PATH="$bin:$PATH" "$bin/node" node_modules/vitest/vitest.mjs run "$@"
  echo "node-matrix: node $major passed in $((SECONDS - start)) s"
done
