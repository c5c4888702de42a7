#!/usr/bin/env bash
# Each optional peer at both ends of its declared range: installs the lowest and highest versions under npm aliases
# in a folder outside the repository and runs that peer's tests with imports redirected to each (peers.vitest.config.ts).
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${IDEMFETCH_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/idemfetch-peers}

# peer | lowest | highest | test files | vitest filter. Keep the ends in step with package.json's peerDependencies.
MATRIX=(
  "ioredis|5.6.0|6.0.0|test/adapters/ioredis.test.ts test/adapters/ioredis-cluster.test.ts|"
  "@upstash/redis|1.17.0|1.39.0|test/adapters/upstash.test.ts|"
  "hono|4.10.0|4.13.19|test/server.test.ts|idemfetch/hono"
  "fastify|5.0.0|5.12.8|test/fastify.test.ts|"
  "@opentelemetry/api|1.3.0|1.10.0|test/otel.test.ts|"
  "idb-keyval|6.2.0|6.3.0|test/adapters/indexeddb.test.ts|"
  "@mswjs/interceptors|0.45.10|0.45.12|test/install.test.ts|"
)
alias_of() { echo "$(echo "$1" | tr -d '@' | tr '/' '-')-$2"; } # @upstash/redis lowest -> upstash-redis-lowest

specs=()
for row in "${MATRIX[@]}"; do
  IFS='|' read -r peer low high _ _ <<<"$row"
  specs+=("$(alias_of "$peer" lowest)@npm:$peer@$low" "$(alias_of "$peer" highest)@npm:$peer@$high")
done
mkdir -p "$dir"
[ -f "$dir/package.json" ] || echo '{"private": true}' >"$dir/package.json"
(cd "$dir" && npm install --no-audit --no-fund --loglevel=error "${specs[@]}" >/dev/null)

for row in "${MATRIX[@]}"; do
  IFS='|' read -r peer _ _ files filter <<<"$row"
  for end in lowest highest; do
    copy=$dir/node_modules/$(alias_of "$peer" "$end")
    version=$(node -p "require('$copy/package.json').version")
    echo "peers: $peer $version ($end) on $files${filter:+ ($filter)}"
    start=$SECONDS
    # shellcheck disable=SC2086 # $files: one or more paths
    IDEMFETCH_PEER="$peer=$copy" npx vitest run --config .ci/peers.vitest.config.ts $files ${filter:+-t "$filter"} \
      --reporter=dot
    echo "peers: $peer $version passed in $((SECONDS - start)) s"
  done
done
