#!/bin/sh
set -eu
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
data=/var/lib/postgresql/data/cluster
if [ ! -s "$data/PG_VERSION" ]; then
  password=$(mktemp)
  cat "${POSTGRES_PASSWORD_FILE:?the password file (a Docker secret)}" > "$password"
  "$bin/initdb" -D "$data" -U walkoff -E UTF8 --auth-local=peer --auth-host=scram-sha-256 --pwfile="$password" >/dev/null
  rm -f "$password"
  echo "host all all 0.0.0.0/0 scram-sha-256" >> "$data/pg_hba.conf"
  echo "CREATE DATABASE walkoff;" | "$bin/postgres" --single -D "$data" -c listen_addresses='' postgres >/dev/null
fi
exec "$bin/postgres" -D "$data" -p "${POSTGRES_PORT:-5432}" -c listen_addresses="${POSTGRES_LISTEN:-*}" \
  -c unix_socket_directories=/var/run/postgresql
