"""The Celery worker's side of the metrics: its own /metrics server, and its pool's samples."""

import logging
import os
from typing import Any

from celery.signals import worker_process_shutdown, worker_ready
from django.conf import settings

from .exposition import serve_worker_metrics

logger = logging.getLogger(__name__)


def start_metrics_server(sender: Any = None, **kwargs: Any) -> None:
    """Serve /metrics on PAYOUTS_WORKER_METRICS_PORT (0: not at all) once the worker is ready."""
    if not settings.PAYOUTS_WORKER_METRICS_PORT:
        return
    pool = settings.CELERY_WORKER_POOL
    if pool == "prefork" and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        # The tasks run in child processes whose samples the main one cannot see.
        logger.warning(
            "metrics: the prefork pool needs PROMETHEUS_MULTIPROC_DIR; the task metrics of its "
            "child processes are missing from this worker's /metrics"
        )
    serve_worker_metrics(settings.PAYOUTS_WORKER_METRICS_PORT)


def forget_pool_process(sender: Any = None, pid: int | None = None, **kwargs: Any) -> None:
    """A prefork child stopped: its live gauges no longer count (prometheus_client's advice)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid or os.getpid())


def connect() -> None:
    worker_ready.connect(start_metrics_server, weak=False)
    worker_process_shutdown.connect(forget_pool_process, weak=False)
