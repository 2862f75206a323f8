"""The one place where errors become HTTP answers: RFC 9457 problem documents.

Every error body has the same shape::

    {"type": "urn:payouts:error:<code>", "title": "...", "status": 400,
     "code": "<code>", "message": "...", "errors": [{"field": ..., "code": ..., "message": ...}]}

`code` is stable and machine-readable; `errors` appears on validation failures only. ANSWERS
lists every code with its status, and EXCEPTIONS says which error gets which code: the
exception handler, the Django error views and the OpenAPI document (api/schema.py) all read
these two tables.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

# The notifications' errors know nothing of HTTP either: this table answers them too.
from webhooks import destinations
from webhooks.errors import (
    WebhookDeliveryNotFound,
    WebhookEndpointDisabled,
    WebhookEndpointLimitReached,
    WebhookEndpointNotFound,
)

from ..errors import (
    CancelUnconfirmed,
    ClientReferenceConflict,
    PayoutNotCancelable,
    PayoutNotFound,
)
from .parsers import MAX_BODY_BYTES, LengthRequired, RequestTooLarge

logger = logging.getLogger(__name__)

PROBLEM_CONTENT_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    406: "Not acceptable",
    409: "Conflict",
    411: "Length required",
    413: "Request too large",
    415: "Unsupported media type",
    429: "Too many requests",
    500: "Internal server error",
    503: "Service unavailable",
}


@dataclass(frozen=True)
class ErrorAnswer:
    """What a client gets for one error code."""

    status: int
    code: str
    message: str  # the default; an error may say something more specific (see EXCEPTIONS)
    when: str  # when a client gets it, for people and the OpenAPI document
    retry_after: int | None = None  # seconds, sent as Retry-After


ANSWERS: dict[str, ErrorAnswer] = {
    answer.code: answer
    for answer in (
        ErrorAnswer(
            400,
            "validation_error",
            "The request is invalid.",
            "Invalid input: `errors` lists each failing field.",
        ),
        ErrorAnswer(400, "malformed_json", "JSON parse error.", "The body is not valid JSON."),
        ErrorAnswer(
            400,
            "payout_not_cancelable",
            "Only NEW or PROCESSING payouts can be canceled.",
            "The payout is already PAID, FAILED or CANCELED, or the provider had already "
            "executed it (`payout_status` says what it is now).",
        ),
        ErrorAnswer(400, "bad_request", "The request could not be understood.", "Malformed."),
        ErrorAnswer(
            400,
            destinations.INVALID,
            "The webhook URL is not a valid absolute http(s) URL.",
            "The webhook URL is not an absolute http(s) URL with a host, is longer than 2048 "
            "characters, has spaces or control characters, or carries credentials (user@).",
        ),
        ErrorAnswer(
            400,
            destinations.NOT_HTTPS,
            "Webhooks are sent over https only; give an https:// URL.",
            "The webhook URL is http:// (accepted only where PAYOUTS_WEBHOOKS_ALLOW_HTTP is on).",
        ),
        ErrorAnswer(
            400,
            destinations.UNRESOLVABLE,
            "The webhook URL's host does not resolve to an address.",
            "The webhook URL's host name does not resolve (or not within 3 s).",
        ),
        ErrorAnswer(
            400,
            destinations.PRIVATE,
            "The webhook URL's host is not a public address; webhooks are sent to public "
            "addresses only.",
            "The webhook URL's host is, or resolves to, a private, loopback, link-local, "
            "multicast, reserved or otherwise non-public address (accepted only where "
            "PAYOUTS_WEBHOOKS_ALLOW_PRIVATE is on).",
        ),
        ErrorAnswer(
            401,
            "not_authenticated",
            "Authentication credentials were not provided.",
            "No API key was sent.",
        ),
        ErrorAnswer(
            401, "authentication_failed", "Invalid API key.", "The API key is invalid or revoked."
        ),
        ErrorAnswer(
            403, "permission_denied", "You do not have permission for this.", "Not allowed."
        ),
        ErrorAnswer(
            404,
            "not_found",
            "Not found.",
            "Unknown id, not a UUID, or another client's payout or webhook endpoint.",
        ),
        ErrorAnswer(405, "method_not_allowed", "Method not allowed.", "Method not allowed."),
        ErrorAnswer(
            406, "not_acceptable", "Could not satisfy the Accept header.", "Not acceptable."
        ),
        ErrorAnswer(
            409,
            "client_reference_conflict",
            "A payout with this client_reference already exists with different data.",
            "The client_reference exists with a different amount, currency, destination or "
            "metadata.",
        ),
        ErrorAnswer(
            409,
            "webhook_endpoint_limit_reached",
            "You have as many webhook endpoints as one may; delete one first.",
            "The client already has 20 webhook endpoints.",
        ),
        ErrorAnswer(
            409,
            "webhook_endpoint_disabled",
            "The webhook endpoint is disabled; enable it (PATCH enabled=true) first.",
            "A retry of a delivery to a disabled endpoint.",
        ),
        ErrorAnswer(
            411,
            "length_required",
            "Send the body with a Content-Length header (chunked bodies are not read).",
            "A chunked body: send it with a Content-Length header.",
        ),
        ErrorAnswer(
            413,
            "request_too_large",
            f"The request body exceeds {MAX_BODY_BYTES} bytes.",
            "The body is larger than 64 KiB.",
        ),
        ErrorAnswer(
            415,
            "unsupported_media_type",
            "The API takes application/json only.",
            "The body is not JSON.",
        ),
        ErrorAnswer(
            429,
            "rate_limited",
            "Too many requests for this API client; retry after Retry-After seconds.",
            "The client's read (GET, HEAD, OPTIONS) or write (every other method) budget of "
            "requests per second is spent (RateLimit-* headers say which limit and when it "
            "resets); nothing was done. Retry after `Retry-After` seconds.",
        ),
        ErrorAnswer(
            500, "internal_error", "Something went wrong on our side.", "A bug on our side."
        ),
        ErrorAnswer(
            503,
            "service_unavailable",
            "The service is briefly unavailable; retry shortly.",
            "The database is briefly unavailable; nothing was stored. Retry (creation is "
            "idempotent).",
            retry_after=1,
        ),
        ErrorAnswer(
            503,
            "provider_unavailable",
            "The provider must confirm this cancellation and did not answer; nothing changed. "
            "Retry shortly.",
            "Cancel of a payout whose provider call had started, and the provider could not be "
            "reached: the payout is unchanged (still PROCESSING).",
            retry_after=5,
        ),
    )
}


def _drf_message(exc: Any) -> str:
    # DRF's own text is specific ('Method "DELETE" not allowed.'); keep it.
    return str(exc.detail)


@dataclass(frozen=True)
class ErrorMapping:
    """Which code an error gets, and what its answer says beyond the code's defaults."""

    error: type[BaseException]
    code: str | Callable[[Any], str]  # or the code the error itself names
    message: Callable[[Any], str] | None = None
    details: Callable[[Any], dict[str, Any]] = lambda exc: {}

    def code_of(self, exc: BaseException) -> str:
        return self.code(exc) if callable(self.code) else self.code


# First match wins: subclasses before their bases.
EXCEPTIONS: tuple[ErrorMapping, ...] = (
    ErrorMapping(PayoutNotFound, "not_found", lambda exc: "No such payout request."),
    ErrorMapping(WebhookEndpointNotFound, "not_found", lambda exc: "No such webhook endpoint."),
    ErrorMapping(WebhookDeliveryNotFound, "not_found", lambda exc: "No such delivery."),
    # One of destinations.CODES, with the check's own message (what exactly was refused).
    ErrorMapping(destinations.UnsafeDestination, lambda exc: exc.code, lambda exc: exc.message),
    ErrorMapping(
        WebhookEndpointLimitReached,
        "webhook_endpoint_limit_reached",
        lambda exc: f"You have {exc.limit} webhook endpoints, the most one may; delete one first.",
    ),
    ErrorMapping(WebhookEndpointDisabled, "webhook_endpoint_disabled"),
    ErrorMapping(
        PayoutNotCancelable,
        "payout_not_cancelable",
        lambda exc: (
            f"The payout is {exc.payout.status}; only NEW or PROCESSING payouts can be canceled."
        ),
        lambda exc: {"payout_status": exc.payout.status},
    ),
    ErrorMapping(
        CancelUnconfirmed,
        "provider_unavailable",
        details=lambda exc: {"payout_status": exc.payout.status},
    ),
    ErrorMapping(
        ClientReferenceConflict,
        "client_reference_conflict",
        details=lambda exc: {
            "payout_id": str(exc.existing.pk),
            "conflicting_fields": exc.fields,
        },
    ),
    ErrorMapping(LengthRequired, "length_required"),
    ErrorMapping(RequestTooLarge, "request_too_large"),
    # Django refuses to buffer bodies over DATA_UPLOAD_MAX_MEMORY_SIZE before our parser's own
    # (smaller) cap can see them; the client's mistake is the same.
    ErrorMapping(RequestDataTooBig, "request_too_large"),
    # The database is unreachable or restarting: nothing was stored, the client may retry.
    ErrorMapping(OperationalError, "service_unavailable"),
    ErrorMapping(InterfaceError, "service_unavailable"),
    ErrorMapping(Http404, "not_found"),
    ErrorMapping(exceptions.NotFound, "not_found"),
    ErrorMapping(PermissionDenied, "permission_denied"),
    ErrorMapping(exceptions.PermissionDenied, "permission_denied", _drf_message),
    ErrorMapping(
        exceptions.ValidationError,
        "validation_error",
        details=lambda exc: {"errors": _field_errors(exc.detail)},
    ),
    ErrorMapping(exceptions.ParseError, "malformed_json", _drf_message),
    ErrorMapping(exceptions.NotAuthenticated, "not_authenticated", _drf_message),
    ErrorMapping(exceptions.AuthenticationFailed, "authentication_failed", _drf_message),
    ErrorMapping(exceptions.MethodNotAllowed, "method_not_allowed", _drf_message),
    ErrorMapping(exceptions.NotAcceptable, "not_acceptable", _drf_message),
    ErrorMapping(exceptions.UnsupportedMediaType, "unsupported_media_type", _drf_message),
    # Raised by DRF for api/ratelimit.py's throttle; its wait becomes Retry-After.
    ErrorMapping(exceptions.Throttled, "rate_limited"),
)


def problem(http_status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"urn:payouts:error:{code}",
        "title": TITLES.get(http_status, "Error"),
        "status": http_status,
        "code": code,
        "message": message,
        **extra,
    }


def answer_problem(code: str, message: str | None = None, **extra: Any) -> dict[str, Any]:
    """The problem document of a code from ANSWERS, with its default message unless given."""
    answer = ANSWERS[code]
    return problem(answer.status, code, message or answer.message, **extra)


def _field_errors(detail: Any, path: str = "") -> list[dict[str, str]]:
    """Flatten DRF's nested ValidationError detail into [{field, code, message}]."""
    if isinstance(detail, dict):
        return [
            error
            for key, value in detail.items()
            for error in _field_errors(value, f"{path}.{key}" if path else str(key))
        ]
    if isinstance(detail, list):
        if all(isinstance(item, exceptions.ErrorDetail) for item in detail):
            return [error for item in detail for error in _field_errors(item, path)]
        return [
            error
            for index, item in enumerate(detail)
            for error in _field_errors(item, f"{path}[{index}]")
        ]
    field = path if path and path != "non_field_errors" else None
    return [{"field": field, "code": getattr(detail, "code", "invalid"), "message": str(detail)}]  # type: ignore[dict-item]


def mapping_for(exc: BaseException) -> ErrorMapping | None:
    return next((mapping for mapping in EXCEPTIONS if isinstance(exc, mapping.error)), None)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: known errors become problem documents; others propagate (500)."""
    mapping = mapping_for(exc)
    if mapping is None:
        return None
    answer = ANSWERS[mapping.code_of(exc)]
    if answer.code == "service_unavailable":
        logger.error("database unavailable: %s", exc)
    message = mapping.message(exc) if mapping.message else answer.message
    body = problem(answer.status, answer.code, message, **mapping.details(exc))
    headers: dict[str, str] = {}
    if auth_header := getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = auth_header  # set by DRF's view for 401s
    retry_after = getattr(exc, "wait", None) or answer.retry_after
    if retry_after:
        headers["Retry-After"] = str(int(retry_after))
    set_rollback()
    return Response(body, status=answer.status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def _django_problem(code: str, message: str | None = None) -> JsonResponse:
    body = answer_problem(code, message)
    return JsonResponse(body, status=body["status"], content_type=PROBLEM_CONTENT_TYPE)


# Django-level handlers (config/urls.py) for errors raised outside DRF views: unknown URLs,
# disallowed hosts, crashes. They answer in the same shape.
def method_not_allowed(method: str, *, allowed: tuple[str, ...]) -> JsonResponse:
    response = _django_problem("method_not_allowed", f'Method "{method}" not allowed.')
    response["Allow"] = ", ".join(allowed)
    return response


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _django_problem("bad_request")


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _django_problem("permission_denied")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/admin/"):
        # People read the admin in a browser: keep Django's HTML page there.
        return defaults.page_not_found(request, exception or Http404())
    return _django_problem("not_found")


def handler500(request: HttpRequest) -> JsonResponse:
    return _django_problem("internal_error")
