#!/bin/sh
# The password goes into a configuration file only Redis reads, never onto its command line.
set -eu
conf=$(mktemp)
chmod 600 "$conf"
{
  echo "port ${REDIS_PORT:-6379}"
  echo "bind ${REDIS_BIND:-0.0.0.0}"
  echo "dir /data"
  echo "appendonly yes"
  echo "appendfsync everysec"
  echo "protected-mode no"
  if [ -n "${REDIS_PASSWORD_FILE:-}" ]; then
    printf 'requirepass "%s"\n' "$(cat "$REDIS_PASSWORD_FILE")"
  fi
} > "$conf"
exec redis-server "$conf"
