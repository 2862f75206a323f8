#!/usr/bin/env bash
# Quick throughput check of a production-shaped stack (gunicorn + thread-pool worker) on
# PostgreSQL and Redis:
#
#   scripts/test_services.sh bench/measure.sh
#
# Measures the framework floor (/healthz), creates/s, reads/s and list pages/s over HTTP
# (bench/http_load.py, closed loop, keep-alive) and how fast the worker drains payouts against a
# 1 s provider latency. The load generator shares the machine's cores with the server: compare
# runs on the same machine only.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
PORT=${BENCH_PORT:-8400}
SECONDS_PER_OP=${BENCH_SECONDS:-10}
export PAYOUTS_SANDBOX_LATENCY_MS=${PAYOUTS_SANDBOX_LATENCY_MS:-1000}
export GUNICORN_LOG_LEVEL=warning
# Production settings (the default) need a secret key: a throwaway one for this run.
export DJANGO_SECRET_KEY=${DJANGO_SECRET_KEY:-$($PY -c 'import secrets; print(secrets.token_urlsafe(50))')}
pids=()
cleanup() { for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done; wait || true; }
trap cleanup EXIT

$PY src/manage.py migrate -v0
KEY=$($PY src/manage.py create_api_client "bench-$$" 2>/dev/null | tail -1)
(cd src && exec ../.venv/bin/gunicorn config.wsgi --bind 127.0.0.1:$PORT --access-logfile /dev/null) &
pids+=($!)
sleep 3

for op in healthz read list create; do
    [[ $op == read ]] && $PY bench/http_load.py --url http://127.0.0.1:$PORT --key "$KEY" --op create --seconds 1 >/dev/null
    $PY bench/http_load.py --url http://127.0.0.1:$PORT --key "$KEY" --op $op --seconds "$SECONDS_PER_OP"
done

# Drain: the creates above are queued; start the worker and time how long it takes to pay them.
queued=$($PY - <<'PY'
import os, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import sys; sys.path.insert(0, "src"); django.setup()
from payouts.models import PayoutRequest
print(PayoutRequest.objects.exclude(status="PAID").count())
PY
)
started=$(date +%s.%N)
(cd src && exec ../.venv/bin/celery -A config worker --loglevel WARNING) &
pids+=($!)
$PY - "$queued" "$started" <<'PY'
import os, sys, time, django
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
sys.path.insert(0, "src"); django.setup()
from payouts.models import PayoutRequest
queued, started = int(sys.argv[1]), float(sys.argv[2])
while PayoutRequest.objects.exclude(status="PAID").exists():
    time.sleep(0.5)
elapsed = time.time() - started
print(f"worker: {queued} payouts paid in {elapsed:.1f} s = {queued / elapsed:.1f} payouts/s "
      f"with {os.environ['PAYOUTS_SANDBOX_LATENCY_MS']} ms provider latency (includes worker start)")
PY
