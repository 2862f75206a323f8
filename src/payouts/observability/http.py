"""HTTP metrics: django-prometheus's series, recorded by one middleware around the whole stack.

django-prometheus's own pair of middlewares records about a dozen series per request (by
transport, charset, template, body sizes, twice the latency...), about 4% of a `get`'s CPU in a
profile here. This keeps the three the dashboards and alerts read, under django-prometheus's
names and from its registered Metrics, and measures the whole stack (ours included) once:

- django_http_requests_total_by_method_total{method}
- django_http_responses_total_by_status_view_method_total{status, view, method}
- django_http_requests_latency_seconds_by_view_method{view, method}

Its methods are bounded: any method outside HTTP's own is "<invalid method>", so made-up
methods cannot grow a series each (django-prometheus labels its latency with the raw method).
A malformed Content-Length is never read here (django-prometheus's int() of it was a 500).
"""

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase
from django_prometheus.middleware import Metrics

METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "OPTIONS", "CONNECT", "PATCH"}
)
INVALID_METHOD = "<invalid method>"  # django-prometheus's label for any other
UNNAMED_VIEW = "<unnamed view>"


def http_metrics_middleware(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    metrics = Metrics.get_instance()
    requests = metrics.requests_by_method
    responses = metrics.responses_by_status_view_method
    latency = metrics.requests_latency_by_view_method

    def middleware(request: HttpRequest) -> HttpResponseBase:
        started = time.perf_counter()
        response = get_response(request)
        method = request.method if request.method in METHODS else INVALID_METHOD
        match = request.resolver_match
        view = (match.view_name if match is not None else None) or UNNAMED_VIEW
        requests.labels(method=method).inc()
        responses.labels(status=str(response.status_code), view=view, method=method).inc()
        latency.labels(view=view, method=method).observe(time.perf_counter() - started)
        return response

    return middleware
