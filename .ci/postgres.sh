#!/usr/bin/env bash
# Makes sure the PostgreSQL the tests use answers on 127.0.0.1:5432 with trust auth for 127.0.0.1 and a
# database `test`: installs Debian's postgresql when missing, starts its cluster when stopped. Idempotent.
set -euo pipefail

answers() { pg_isready -q -h 127.0.0.1 -p 5432 >/dev/null 2>&1; }

if ! command -v pg_ctlcluster >/dev/null 2>&1 || [ -z "$(ls /etc/postgresql 2>/dev/null)" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "postgres.sh: PostgreSQL is missing; install it (apt-get install -y postgresql)" >&2
    exit 1
  fi
  echo "postgres.sh: installing postgresql"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

version="$(ls /etc/postgresql | sort -V | tail -n 1)"
hba="/etc/postgresql/${version}/main/pg_hba.conf"
# Trust for 127.0.0.1, ahead of any other rule (the first matching line wins). Tests only: never in production.
if [ -f "$hba" ] && ! grep -Eq '^host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1/32[[:space:]]+trust' "$hba"; then
  sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
  answers && pg_ctlcluster --skip-systemctl-redirect "$version" main reload
fi

if ! answers; then
  echo "postgres.sh: starting PostgreSQL ${version} on 127.0.0.1:5432"
  pg_ctlcluster --skip-systemctl-redirect "$version" main start
  for _ in $(seq 1 100); do answers && break; sleep 0.1; done
fi
answers || { echo "postgres.sh: PostgreSQL does not answer on 127.0.0.1:5432" >&2; exit 1; }

if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != "1" ]; then
  echo "postgres.sh: creating database test"
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
fi
