#!/bin/sh
# The image's entrypoint: prepares the environment, then replaces itself with the command.
#
# - No DJANGO_SECRET_KEY given: use the key in DJANGO_SECRET_KEY_FILE (a volume), creating it
#   with a random value on first start. Settings read that file (so `docker compose exec`, which
#   skips this script, finds the same key); the key is never in the image and never printed.
# - An empty WEB_CONCURRENCY is dropped: gunicorn parses it with int() when it is imported,
#   before gunicorn.conf.py runs, and would exit 1 on "".
set -eu

if [ -z "${WEB_CONCURRENCY:-}" ]; then
    unset WEB_CONCURRENCY
fi

if [ -z "${DJANGO_SECRET_KEY:-}" ] && [ -n "${DJANGO_SECRET_KEY_FILE:-}" ]; then
    key_file="$DJANGO_SECRET_KEY_FILE"
    if [ ! -s "$key_file" ]; then
        umask 077
        tmp_file="$(mktemp "$key_file.XXXXXX")"
        python -c 'import secrets; print(secrets.token_urlsafe(50))' >"$tmp_file"
        # ln fails if another service created the key first: every service then uses that one.
        ln "$tmp_file" "$key_file" 2>/dev/null || true
        rm -f "$tmp_file"
        [ -s "$key_file" ] || { echo "entrypoint: could not create $key_file" >&2; exit 1; }
        echo "entrypoint: generated a secret key in $key_file (kept in its volume)" >&2
    fi
fi

exec "$@"
