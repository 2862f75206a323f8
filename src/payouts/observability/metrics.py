"""The service's own Prometheus metrics, defined once; HTTP metrics come from django-prometheus.

Counters and histograms are updated where the thing happens, after the database agreed (a
compare-and-set that lost counts nothing). Under gunicorn and in the worker they live in
prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by gunicorn.conf.py and
the worker's metrics server), so every process's samples are summed on scrape. Gauges that
need the database or the broker are not kept here: payouts.observability.exposition computes
them on each scrape.
"""

import threading

from prometheus_client import Counter, Histogram, disable_created_metrics

# No `<name>_created` series beside every counter and histogram: Prometheus does not use them.
disable_created_metrics()

PAYOUTS_CREATED = Counter(
    "payouts_created", "Payout requests created (an idempotent repeat is not counted)."
)
PAYOUTS_FINISHED = Counter(
    "payouts_finished",
    "Payouts that reached a final status, by status and failure code ('' unless FAILED).",
    ["status", "failure_code"],
)
# A failure code is the provider's (a decline) or ours: a closed set for a real provider, but
# the sandbox takes any code a client writes (sandbox:decline:<code>). Each label value is a
# series in every process's files for good, so past this many distinct codes the rest are
# counted as "other".
FAILURE_CODE_LABELS_MAX = 50
_failure_codes_seen: set[str] = set()
_failure_codes_lock = threading.Lock()


def failure_code_label(code: str) -> str:
    if code in _failure_codes_seen:
        return code
    with _failure_codes_lock:
        if len(_failure_codes_seen) >= FAILURE_CODE_LABELS_MAX:
            return "other"
        _failure_codes_seen.add(code)
        return code


PROVIDER_CALL_SECONDS = Histogram(
    "payouts_provider_call_duration_seconds",
    "Provider call latency by kind (execute, lookup, cancel) and outcome.",
    ["kind", "outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
)
PAYOUT_RETRIES = Counter(
    "payouts_retries", "Processing attempts that ended without an answer and will be retried."
)
UNKNOWN_OUTCOMES = Counter(
    "payouts_unknown_outcomes",
    "Provider calls whose outcome was unknown (a timeout, an adapter error), by call kind.",
    ["kind"],
)
REVIEW_FLAGGED = Counter(
    "payouts_review_flagged", "Payouts flagged for review (their outcome stayed unknown)."
)
SWEEP_RUNS = Counter("payouts_sweep_runs", "Recovery sweep runs, by sweep.", ["sweep"])
SWEEP_REQUEUED = Counter(
    "payouts_sweep_requeued",
    "Items the sweeps queued again (stale payouts; due or missed webhook deliveries).",
    ["sweep"],
)
WEBHOOK_DELIVERIES = Counter(
    "payouts_webhook_deliveries",
    "Webhook delivery attempts, by outcome (succeeded, retrying, failed).",
    ["outcome"],
)
WEBHOOK_DELIVERY_SECONDS = Histogram(
    "payouts_webhook_delivery_duration_seconds",
    "Webhook delivery attempt latency, answered or not.",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0, 30.0),
)
RATE_LIMITED = Counter(
    "payouts_rate_limited", "API requests refused with 429, by budget (read, write).", ["budget"]
)
RATE_LIMIT_BACKEND_ERRORS = Counter(
    "payouts_rate_limit_backend_errors",
    "Rate-limit checks that could not reach Redis; the request was let through (fail open).",
)
