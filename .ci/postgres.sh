#!/usr/bin/env bash
# A throwaway PostgreSQL for the database tests, on loopback, in a temp dir.
#
#   pg_env="$(.ci/postgres.sh)"     # start; prints nothing when no PostgreSQL server binaries are installed
#   eval "$pg_env"                  # sets VM_BOT_TEST_POSTGRES_URL (tests skip PostgreSQL without it)
#   trap '.ci/postgres.sh stop' EXIT   # stops the cluster in $VM_BOT_TEST_POSTGRES_DIR and deletes it
#   .ci/postgres.sh restart [DIR]      # restarts it as after a crash (the chaos check)
#
# Binaries come from $PG_BIN, else the newest /usr/lib/postgresql/*/bin. initdb refuses to run as root, so
# as root every server command runs as the `postgres` system user. Everything is bounded: a failed start
# exits non-zero with the server log on stderr; stdout carries only the export lines.
set -euo pipefail

readonly DB_NAME=vmbot_test
readonly START_TIMEOUT=30 STOP_TIMEOUT=10 ATTEMPTS=5

find_bin() {
    if [[ -n "${PG_BIN:-}" ]]; then
        echo "$PG_BIN"
        return
    fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    echo "$dir"
}

# Run a PostgreSQL command as the cluster's owner: `postgres` when we are root, else ourselves.
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

stop() {
    local dir="${1:-${VM_BOT_TEST_POSTGRES_DIR:-}}" bin
    [[ -n "$dir" ]] || exit 0
    # Only ever delete a directory this script made.
    [[ -f "$dir/.vm-bot-postgres" ]] || { echo "postgres.sh: $dir is not a vm-bot test cluster" >&2; exit 1; }
    bin=$(<"$dir/.vm-bot-postgres")
    if [[ -f "$dir/data/postmaster.pid" ]]; then
        # Throwaway data: an immediate shutdown is safe and takes milliseconds.
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 || true
    fi
    rm -rf -- "$dir"
}

# Restart a cluster this script made, as a crash would (immediate shutdown, then recovery); the server keeps its
# options, so the URL stays valid. For the chaos check: every connection breaks at once.
restart() {
    local dir="${1:-${VM_BOT_TEST_POSTGRES_DIR:-}}" bin
    [[ -n "$dir" && -f "$dir/.vm-bot-postgres" ]] || { echo "postgres.sh: ${dir:-(no dir)} is not a vm-bot test cluster" >&2; exit 1; }
    bin=$(<"$dir/.vm-bot-postgres")
    as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t "$START_TIMEOUT" -s restart >"$dir/pg_ctl.log" 2>&1 \
        || { cat "$dir/pg_ctl.log" >&2; exit 1; }
}

start() {
    local bin dir port attempt
    bin=$(find_bin)
    if [[ -z "$bin" || ! -x "$bin/initdb" || ! -x "$bin/pg_ctl" || ! -x "$bin/postgres" ]]; then
        exit 0
    fi
    if [[ $(id -u) -eq 0 ]] && ! id -u postgres >/dev/null 2>&1; then
        echo "postgres.sh: running as root needs a 'postgres' system user to own the cluster" >&2
        exit 1
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/vm-bot-pg.XXXXXX")
    echo "$bin" >"$dir/.vm-bot-postgres"
    trap 'stop "$dir"' ERR
    trap 'stop "$dir"; exit 130' INT TERM
    chmod 700 "$dir"
    [[ $(id -u) -ne 0 ]] || chown postgres: "$dir"

    as_owner "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --locale=C --no-sync \
        >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; false; }

    # fsync=off and full_page_writes=off lose nothing when the server process crashes (the chaos check's restart),
    # only when the machine does. synchronous_commit=off would lose acknowledged commits in that crash: it stays
    # the server's default here because vm-bot's writers turn it back on (tests/test_db_durability.py).
    # The port is free when picked but could be taken before the server binds it, so retry a few times.
    for ((attempt = 1; attempt <= ATTEMPTS; attempt++)); do
        port=$(free_port)
        if as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$START_TIMEOUT" -s \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=off -c synchronous_commit=off \
                -c full_page_writes=off -c max_connections=200" start >"$dir/pg_ctl.log" 2>&1; then
            break
        fi
        if ((attempt == ATTEMPTS)); then
            echo "postgres.sh: the server did not start after $ATTEMPTS attempts:" >&2
            cat "$dir/pg_ctl.log" "$dir/server.log" >&2 2>/dev/null || true
            false
        fi
        as_owner "$bin/pg_ctl" -D "$dir/data" -m immediate -w -t "$STOP_TIMEOUT" stop >/dev/null 2>&1 || true
    done

    as_owner "$bin/createdb" -h "$dir" -p "$port" -U postgres "$DB_NAME"
    trap - ERR INT TERM
    echo "export VM_BOT_TEST_POSTGRES_URL='postgresql+psycopg://postgres@127.0.0.1:$port/$DB_NAME'"
    echo "export VM_BOT_TEST_POSTGRES_DIR='$dir'"
}

case "${1:-start}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    restart) restart "${2:-}" ;;
    *)
        echo "usage: $0 [start|stop [DIR]|restart [DIR]]" >&2
        exit 2
        ;;
esac
