"""Serving the metrics: `/metrics` on the web, a small server of its own in each worker.

Both need `Authorization: Bearer <PAYOUTS_METRICS_TOKEN>`; with no token configured neither is
served (the web answers 404, the worker starts no server). Under gunicorn and in the worker the
samples of every process are summed from PROMETHEUS_MULTIPROC_DIR (prometheus_client's
multiprocess mode); a process without it serves its own registry.

The gauges that need the database or the broker are computed on each scrape of the web's
/metrics only (the worker's would report the same numbers twice), with indexed queries under a
statement timeout, so a slow database cannot hold a scrape.
"""

import contextlib
import hmac
import logging
import os
import threading
from collections.abc import Iterator
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Min
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from webhooks.models import WebhookEndpoint

from ..api.errors import PROBLEM_CONTENT_TYPE, answer_problem, handler404, method_not_allowed
from ..models import UNFINISHED_STATUSES, PayoutRequest, PayoutStatus

logger = logging.getLogger(__name__)

# Each database query of a scrape gives up after this long (PostgreSQL's statement_timeout).
SCRAPE_STATEMENT_TIMEOUT_MS = 2000
# kombu's Redis transport keeps a queue's messages in one list per priority step: the queue's
# own name for priority 0, "<name>\x06\x16<step>" for the others (kombu.transport.redis).
KOMBU_PRIORITY_SEPARATOR = "\x06\x16"
KOMBU_PRIORITY_STEPS = (3, 6, 9)


def metrics_token() -> str:
    return settings.PAYOUTS_METRICS_TOKEN


def authorized(header: str) -> bool:
    """A `Bearer <token>` header naming the configured token (compared in constant time)."""
    token = metrics_token()
    scheme, _, given = header.partition(" ")
    # Bytes: compare_digest refuses non-ASCII str, and a header is whatever a client sent
    # (WSGI hands it over as latin-1).
    return (
        bool(token)
        and scheme.lower() == "bearer"
        and hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), token.encode())
    )


def process_metrics() -> bytes:
    """This process's metrics, or every process's from the multiprocess directory."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


def state_metrics() -> bytes:
    """The gauges read from the database and the broker, computed now."""
    registry = CollectorRegistry()
    registry.register(ServiceStateCollector())
    return generate_latest(registry)


class ServiceStateCollector(Collector):
    """Gauges read from the database and the broker at scrape time."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "payouts_scrape_source_up",
            "Whether this scrape could read a source (database, broker); 0 leaves its gauges out.",
            labels=["source"],
        )
        try:
            yield from self._database()
            up.add_metric(["database"], 1)
        except Exception as exc:  # a scrape must answer even with the database down
            logger.warning("metrics: database gauges unavailable: %s: %s", type(exc).__name__, exc)
            up.add_metric(["database"], 0)
        try:
            yield self._queue_depth()
            up.add_metric(["broker"], 1)
        except redis.RedisError as exc:
            logger.warning("metrics: queue depth unavailable: %s: %s", type(exc).__name__, exc)
            up.add_metric(["broker"], 0)
        yield up

    def _database(self) -> Iterator[Metric]:
        unfinished = PayoutRequest.objects.filter(status__in=UNFINISHED_STATUSES)
        # On SQLite (make run) a transaction would take the write lock (IMMEDIATE mode) for
        # nothing: the reads run as they come, each with SQLite's busy timeout.
        postgresql = connection.vendor == "postgresql"
        with transaction.atomic() if postgresql else contextlib.nullcontext():
            if postgresql:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SET LOCAL statement_timeout = %s", [SCRAPE_STATEMENT_TIMEOUT_MS]
                    )
            # One pass over the unfinished payouts (partial indexes cover them alone).
            counts = {
                row["status"]: row
                for row in unfinished.values("status")
                .annotate(n=Count("pk"), oldest=Min("created_at"))
                .order_by()
            }
            # Only PROCESSING payouts are ever flagged: the partial index payout_under_review.
            under_review = PayoutRequest.objects.filter(
                review_flagged_at__isnull=False, status=PayoutStatus.PROCESSING
            ).count()
            # A handful of rows per client: no index needed.
            failing = WebhookEndpoint.objects.filter(
                enabled=True, failing_since__isnull=False
            ).count()
        gauge = GaugeMetricFamily(
            "payouts_unfinished", "Payouts not finished yet, by status.", labels=["status"]
        )
        for status in UNFINISHED_STATUSES:
            gauge.add_metric([status], counts[status]["n"] if status in counts else 0)
        yield gauge
        oldest = min((row["oldest"] for row in counts.values()), default=None)
        age = (timezone.now() - oldest).total_seconds() if oldest else 0.0
        yield GaugeMetricFamily(
            "payouts_oldest_unprocessed_age_seconds",
            "Age of the oldest NEW or PROCESSING payout (0 when there is none).",
            value=max(age, 0.0),
        )
        yield GaugeMetricFamily(
            "payouts_under_review",
            "Unfinished payouts flagged for review (outcome unknown too long).",
            value=under_review,
        )
        yield GaugeMetricFamily(
            "payouts_webhook_endpoints_failing",
            "Enabled webhook endpoints whose recent deliveries are failing.",
            value=failing,
        )

    def _queue_depth(self) -> Metric:
        gauge = GaugeMetricFamily(
            "payouts_queue_depth", "Messages waiting in each Celery queue.", labels=["queue"]
        )
        layout = settings.CELERY_QUEUE_LAYOUT
        names = (layout.payouts, layout.sweep, layout.webhooks)
        pipe = _broker().pipeline(transaction=False)
        for name in names:
            pipe.llen(name)
            for step in KOMBU_PRIORITY_STEPS:
                pipe.llen(f"{name}{KOMBU_PRIORITY_SEPARATOR}{step}")
        lengths = pipe.execute()
        per_queue = len(KOMBU_PRIORITY_STEPS) + 1
        for i, name in enumerate(names):
            gauge.add_metric([name], sum(lengths[i * per_queue : (i + 1) * per_queue]))
        return gauge


_broker_client: redis.Redis | None = None


def _broker() -> redis.Redis:
    global _broker_client
    if _broker_client is None:
        timeout = settings.CELERY_BROKER_SOCKET_TIMEOUT_SECONDS
        _broker_client = redis.Redis.from_url(
            settings.CELERY_BROKER_URL, socket_timeout=timeout, socket_connect_timeout=timeout
        )
    return _broker_client


@csrf_exempt
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics: the Prometheus text format, for a scraper holding the metrics token."""
    if not metrics_token():
        return handler404(request)
    if request.method not in ("GET", "HEAD"):
        return method_not_allowed(request.method or "", allowed=("GET", "HEAD"))
    if not authorized(request.headers.get("Authorization", "")):
        body = answer_problem("authentication_failed", "A valid metrics token is required.")
        response = JsonResponse(body, status=401, content_type=PROBLEM_CONTENT_TYPE)
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(process_metrics() + state_metrics(), content_type=CONTENT_TYPE_LATEST)


# --- The worker's own server ---------------------------------------------------------------------


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass  # a scrape every 15 s is not worth a log line


def _worker_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    if not authorized(environ.get("HTTP_AUTHORIZATION", "")):
        start_response(
            "401 Unauthorized",
            [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="metrics"')],
        )
        return [b"a valid metrics token is required\n"]
    body = process_metrics()
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [body]


def serve_worker_metrics(port: int, host: str = "0.0.0.0") -> WSGIServer | None:
    """Serve this worker's /metrics on `port` from a daemon thread; None without a token.

    Our own few lines instead of prometheus_client.start_http_server: that one has no way to
    require the bearer token.
    """
    if not metrics_token():
        logger.info("metrics: no PAYOUTS_METRICS_TOKEN, the worker serves no /metrics")
        return None
    try:
        server = make_server(
            host, port, _worker_app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler
        )
    except OSError as exc:  # the port is taken: the worker still works, only unobserved
        logger.error("metrics: cannot serve the worker's /metrics on port %d: %s", port, exc)
        return None
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    logger.info("metrics: serving the worker's /metrics on %s:%d", host, port)
    return server
