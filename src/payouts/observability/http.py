"""django-prometheus's HTTP metrics, with two of its edges closed for a hostile internet.

- A malformed Content-Length made its process_request raise (int("abc")): a 500 before our
  own handling could answer 400.
- Its latency histogram is labelled with the raw request method, so every made-up method a
  client sends would be a new series (unbounded memory, and a file per series and process in
  multiprocess mode). Every metric here uses its bounded method name ("<invalid method>").
"""

from typing import Any

from django.http import HttpRequest, HttpResponse
from django_prometheus.middleware import PrometheusAfterMiddleware as Base
from django_prometheus.utils import Time


class PrometheusAfterMiddleware(Base):
    def process_request(self, request: HttpRequest) -> None:
        method = self._method(request)
        self.metrics.requests_by_method.labels(method=method).inc()
        self.metrics.requests_by_transport.labels(transport=self._transport(request)).inc()
        try:
            length = max(int(request.headers.get("content-length") or 0), 0)
        except ValueError:
            length = 0  # answered 400 further on; counted as no body here
        self.metrics.requests_body_bytes.observe(length)
        request.prometheus_after_middleware_event = Time()  # type: ignore[attr-defined]

    def label_metric(
        self, metric: Any, request: HttpRequest, response: HttpResponse | None = None, **labels: Any
    ) -> Any:
        if "method" in labels:
            labels["method"] = self._method(request)
        return metric.labels(**labels) if labels else metric
