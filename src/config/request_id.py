"""A request id on every request: the client's X-Request-ID when it is a valid one, else ours.

The id is set in the log context (config.logs.request_id) while the request is served, so every
line logged meanwhile carries it, and the tasks the request queues take it along (config.
task_logs); it is echoed in the response's X-Request-ID header. A valid id is 1 to 128 of
[A-Za-z0-9._:-]: enough for a UUID, a W3C trace id or an upstream proxy's id, and nothing that
could forge a log line or a header. Anything else is replaced (never echoed) by a uuid4 hex.
First in MIDDLEWARE, so that the other middleware's lines carry it too. (A streamed body, the
CSV export's, is produced after the middleware returned: it logs nothing, and would log no id.)
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING

from config import logs

if TYPE_CHECKING:  # config.task_logs imports this module where Django may not be set up yet
    from django.http import HttpRequest, HttpResponseBase

HEADER = "X-Request-ID"
META_KEY = "HTTP_X_REQUEST_ID"
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id_or_new(candidate: str | None) -> str:
    """`candidate` if it is a valid request id, else a new one."""
    if candidate and VALID_REQUEST_ID.fullmatch(candidate):
        return candidate
    return uuid.uuid4().hex


def request_id_middleware(
    get_response: Callable[[HttpRequest], HttpResponseBase],
) -> Callable[[HttpRequest], HttpResponseBase]:
    def middleware(request: HttpRequest) -> HttpResponseBase:
        request_id = request_id_or_new(request.META.get(META_KEY))
        # On the request too: django.request logs 4xx/5xx after the middleware has returned
        # (logs.ContextFilter looks there).
        request.request_id = request_id  # type: ignore[attr-defined]
        token = logs.request_id.set(request_id)
        try:
            response = get_response(request)
        finally:
            logs.request_id.reset(token)
        response[HEADER] = request_id
        return response

    return middleware
