"""Liveness and readiness probes for load balancers and orchestrators."""

from collections.abc import Callable

from django.db import connection
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from config.celery import app as celery_app

from .api.errors import method_not_allowed


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
    """The database and the broker answer; 503 with the failing check otherwise."""
    checks: dict[str, str] = {}
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {type(exc).__name__}"
    try:
        with celery_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"error: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if ready else "unavailable", "checks": checks},
        status=200 if ready else 503,
    )
