#!/usr/bin/env bash
# A throwaway PostgreSQL 15 server configured like a production database
# host (docs/operations.md, "PostgreSQL settings"), for benchmarks whose data
# outgrows the distribution's defaults (128 MB of shared buffers, 1 GB of
# WAL between checkpoints): the 1,000,000-order clearing run writes about
# 3 million journal entries and 3 million documents.
#
#   bash bench/pg_server.sh start   # prints the URL to pass as --pg-url
#   bash bench/pg_server.sh stop    # stops it and deletes its files
#
# It runs beside the machine's own server (port 5433 unless PGTUNED_PORT is
# set), as the `postgres` user, with its data under /tmp; nothing of the
# machine's server is changed. Durability is left as in production
# (fsync and synchronous_commit on).
set -euo pipefail

PORT=${PGTUNED_PORT:-5433}
DATA=${PGTUNED_DIR:-/tmp/cl-pgtuned-$PORT}
BIN=${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)}
RUN_AS=()
if [ "$(id -u)" = 0 ]; then RUN_AS=(runuser -u postgres --); fi

case "${1:-}" in
  start)
    if [ ! -d "$DATA" ]; then
      mkdir -p "$DATA"
      if [ "$(id -u)" = 0 ]; then chown postgres: "$DATA"; fi
      "${RUN_AS[@]}" "$BIN/initdb" -D "$DATA" -A trust -U postgres >/dev/null
      # A quarter of memory for shared buffers, checkpoints spaced for a
      # write-heavy batch, locks for workers x batch advisory locks.
      mem_kb=$(awk '/MemTotal/ {print $2}' /proc/meminfo)
      cat >>"$DATA/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DATA'
shared_buffers = $((mem_kb / 4 / 1024))MB
effective_cache_size = $((mem_kb / 2 / 1024))MB
work_mem = 32MB
maintenance_work_mem = 1GB
max_wal_size = 16GB
checkpoint_timeout = 30min
checkpoint_completion_target = 0.9
wal_buffers = 64MB
max_locks_per_transaction = 256
random_page_cost = 1.1
EOF
    fi
    "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" -l "$DATA/server.log" -w start >/dev/null
    echo "postgresql+psycopg2://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    if [ -d "$DATA" ]; then
      "${RUN_AS[@]}" "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
      rm -rf "$DATA"
    fi
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
