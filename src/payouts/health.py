"""Liveness and readiness probes for load balancers and orchestrators."""

import logging
from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from config.celery import app as celery_app

from .api.errors import method_not_allowed

logger = logging.getLogger(__name__)


def probe(view: Callable[[HttpRequest], JsonResponse]) -> Callable[[HttpRequest], HttpResponse]:
    """GET and HEAD only, answered in the API's error shape otherwise.

    csrf_exempt: probes never post, and without it a POST would get Django's CSRF page first.
    """

    @csrf_exempt
    def wrapper(request: HttpRequest) -> HttpResponse:
        if request.method not in ("GET", "HEAD"):
            return method_not_allowed(request.method or "", allowed=("GET", "HEAD"))
        return view(request)

    return wrapper


@probe
def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving; checks nothing else."""
    return JsonResponse({"status": "ok"})


@probe
def readyz(request: HttpRequest) -> JsonResponse:
    """200 {"status": "ok"} when the database and the broker answer, else 503 "unavailable".

    Which dependency failed, and why, goes to the log: the probe is anonymous, and exception
    names and messages would tell any caller about the infrastructure.
    """
    failures: list[str] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as exc:  # any failure means "not ready"; the log says which
        failures.append(f"database: {type(exc).__name__}: {exc}")
    try:
        with celery_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        failures.append(f"broker: {type(exc).__name__}: {exc}")
    if failures:
        logger.warning("readyz: not ready: %s", "; ".join(failures))
        return JsonResponse({"status": "unavailable"}, status=503)
    return JsonResponse({"status": "ok"})
