#!/bin/sh
# The image's entrypoint: prepares the environment, then replaces itself with the command.
#
# - No DJANGO_SECRET_KEY given: use the key in DJANGO_SECRET_KEY_FILE (a volume), creating it
#   with a random value on first start. Settings read that file (so `docker compose exec`, which
#   skips this script, finds the same key); the key is never in the image and never printed.
# - No PAYOUTS_METRICS_TOKEN given: likewise the metrics token in PAYOUTS_METRICS_TOKEN_FILE
#   (compose sets it), so /metrics is served to whoever holds the token in that volume (the
#   monitoring profile copies it for Prometheus). No file variable: no token, /metrics is off.
# - PROMETHEUS_MULTIPROC_DIR (default /tmp/prometheus-metrics) is emptied of samples: every process of the
#   container (gunicorn's workers, Celery's) writes its metric samples there and /metrics sums
#   them, so it must start empty; each container has its own.
# - An empty WEB_CONCURRENCY is dropped: gunicorn parses it with int() when it is imported,
#   before gunicorn.conf.py runs, and would exit 1 on "".
set -eu

if [ -z "${WEB_CONCURRENCY:-}" ]; then
    unset WEB_CONCURRENCY
fi

export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-/tmp/prometheus-metrics}"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
find "$PROMETHEUS_MULTIPROC_DIR" -maxdepth 1 -name '*.db' -type f -delete

# create_once FILE WHAT: FILE gets a random value (0600) unless it has one already.
create_once() {
    file="$1"
    [ -s "$file" ] && return 0
    umask 077
    tmp_file="$(mktemp "$file.XXXXXX")"
    python -c 'import secrets; print(secrets.token_urlsafe(50))' >"$tmp_file"
    # ln fails if another service created the file first: every service then uses that one.
    ln "$tmp_file" "$file" 2>/dev/null || true
    rm -f "$tmp_file"
    [ -s "$file" ] || { echo "entrypoint: could not create $file" >&2; exit 1; }
    echo "entrypoint: generated $2 in $file (kept in its volume)" >&2
}

if [ -z "${DJANGO_SECRET_KEY:-}" ] && [ -n "${DJANGO_SECRET_KEY_FILE:-}" ]; then
    create_once "$DJANGO_SECRET_KEY_FILE" "a secret key"
fi
if [ -z "${PAYOUTS_METRICS_TOKEN:-}" ] && [ -n "${PAYOUTS_METRICS_TOKEN_FILE:-}" ]; then
    create_once "$PAYOUTS_METRICS_TOKEN_FILE" "a metrics token"
fi

exec "$@"
