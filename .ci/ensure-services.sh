#!/usr/bin/env bash
# Makes sure what the tests talk to exists on this machine: redis-server (and a Redis on 6379),
# Debian's Chromium for Playwright, Python's httpx for the guide's examples, curl for the faces' tests. Idempotent.
set -euo pipefail

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
[ -x /usr/bin/chromium ] || missing+=(chromium)
dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
/usr/bin/python3 -c "import httpx" >/dev/null 2>&1 || missing+=(python3-httpx)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ensure-services: missing ${missing[*]}; install them (apt-get install -y ${missing[*]})" >&2
    exit 1
  fi
  echo "ensure-services: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The tests use the Redis on 127.0.0.1:6379 (REDIS_URL overrides); start one when none answers.
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "ensure-services: starting redis-server on 127.0.0.1:6379"
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --logfile /tmp/idemfetch-redis-6379.log
  for _ in $(seq 1 50); do redis-cli -p 6379 ping >/dev/null 2>&1 && break; sleep 0.1; done
fi
bash "$(dirname "$0")/postgres.sh"
