# Payout Requests Service image: one image for the API (gunicorn, the default command), the Celery
# worker and beat, and one-shot management commands (see docker-compose.yml).

# --- builder: a virtualenv with exactly the pinned runtime dependencies ----------------------------
FROM python:3.11-slim-bookworm AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1

# Every pinned dependency ships a manylinux wheel (psycopg-binary bundles libpq), so no compiler
# or libpq-dev is needed here.
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir --require-virtualenv -r /tmp/requirements.txt

# --- runtime: the virtualenv and the source, nothing else -----------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    DJANGO_STATIC_ROOT=/app/staticfiles \
    PAYOUTS_LOCAL_DATA_DIR=/app/.local \
    DJANGO_SECRET_KEY_FILE=/app/secrets/secret_key

# A fixed uid/gid so volumes and Kubernetes securityContext can refer to it.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --create-home --home-dir /home/app \
       --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv
COPY src /app/src
WORKDIR /app/src

# Static assets (admin, Swagger UI) are collected once, root-owned, and served by whitenoise.
# Settings need no database or broker for this. Production settings need a secret key: a random
# one lives only in this command's environment, never in a layer.
# /app/.local is the embedded-mode data directory (unused when DATABASE_URL is set) and must be
# writable by the app user. /app/secrets holds the generated secret key (docker-entrypoint.sh);
# a named volume mounted there takes this owner and mode on first use.
RUN DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
        python manage.py collectstatic --noinput --verbosity 0 \
    && mkdir -p /app/.local /app/secrets \
    && chown app:app /app/.local /app/secrets \
    && chmod 700 /app/secrets

USER app:app

EXPOSE 8000

# Liveness only (/healthz): the compose file checks readiness (/readyz) for the web service and
# replaces this check for the worker and beat, which serve no HTTP.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4).status == 200 else 1)"]

ENTRYPOINT ["/app/src/docker-entrypoint.sh"]

# gunicorn reads ./gunicorn.conf.py (HOST, PORT, WEB_CONCURRENCY, ...). The heartbeat files go to
# /dev/shm: a container's /tmp may be disk-backed and stall worker heartbeats.
CMD ["gunicorn", "--worker-tmp-dir", "/dev/shm", "config.wsgi:application"]
