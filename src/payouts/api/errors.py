"""The one place where exceptions become HTTP answers: RFC 9457 problem documents.

Every error body has the same shape::

    {"type": "urn:payouts:error:<code>", "title": "...", "status": 400,
     "code": "<code>", "message": "...", "errors": [{"field": ..., "code": ..., "message": ...}]}

`code` is stable and machine-readable; `errors` appears on validation failures only.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views import defaults
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import set_rollback

from ..selectors import PayoutNotFound
from ..services import ClientReferenceConflict, PayoutNotCancelable
from .parsers import RequestTooLarge

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
    503: "Service unavailable",
    429: "Too many requests",
    500: "Internal server error",
}

# DRF's default codes, renamed where the default says less than it could.
CODE_OVERRIDES = {"parse_error": "malformed_json"}


def problem(http_status: int, code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {
        "type": f"urn:payouts:error:{code}",
        "title": TITLES.get(http_status, "Error"),
        "status": http_status,
        "code": code,
        "message": message,
        **extra,
    }


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


def _problem_for(exc: Exception) -> tuple[int, dict[str, Any]] | None:
    if isinstance(exc, PayoutNotFound):
        return 404, problem(404, "not_found", "No such payout request.")
    if isinstance(exc, PayoutNotCancelable):
        return 400, problem(
            400,
            "payout_not_cancelable",
            f"The payout is {exc.payout.status}; only NEW or PROCESSING payouts can be canceled.",
            payout_status=exc.payout.status,
        )
    if isinstance(exc, ClientReferenceConflict):
        return 409, problem(
            409,
            "client_reference_conflict",
            "A payout with this client_reference already exists with different data.",
            payout_id=str(exc.existing.pk),
            conflicting_fields=exc.fields,
        )
    if isinstance(exc, RequestDataTooBig):
        # Django refuses to buffer bodies over DATA_UPLOAD_MAX_MEMORY_SIZE before our parser's
        # own (smaller) cap can see them; the client's mistake is the same.
        exc = RequestTooLarge()
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable or restarting: nothing was stored, the client may retry
        # (creation is idempotent by client_reference).
        logger.error("database unavailable: %s", exc)
        return 503, problem(
            503, "service_unavailable", "The service is briefly unavailable; retry shortly."
        )
    if isinstance(exc, Http404):
        return 404, problem(404, "not_found", "Not found.")
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    if isinstance(exc, exceptions.ValidationError):
        errors = _field_errors(exc.detail)
        return 400, problem(400, "validation_error", "The request is invalid.", errors=errors)
    if isinstance(exc, exceptions.APIException):
        code = exc.get_codes() if isinstance(exc.get_codes(), str) else exc.default_code
        code = CODE_OVERRIDES.get(str(code), str(code))
        return exc.status_code, problem(exc.status_code, code, str(exc.detail))
    return None


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF's EXCEPTION_HANDLER: known errors become problem documents; others propagate (500)."""
    mapped = _problem_for(exc)
    if mapped is None:
        return None
    http_status, body = mapped
    headers: dict[str, str] = {}
    if isinstance(exc, exceptions.APIException):
        if auth_header := getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = auth_header
        if wait := getattr(exc, "wait", None):
            headers["Retry-After"] = str(int(wait))
    if http_status == 503:
        headers["Retry-After"] = "1"
    set_rollback()
    return Response(body, status=http_status, headers=headers, content_type=PROBLEM_CONTENT_TYPE)


def _django_problem(http_status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(
        problem(http_status, code, message), status=http_status, content_type=PROBLEM_CONTENT_TYPE
    )


# Django-level handlers (config/urls.py) for errors raised outside DRF views: unknown URLs,
# disallowed hosts, crashes. They answer in the same shape.
def method_not_allowed(method: str, *, allowed: tuple[str, ...]) -> JsonResponse:
    response = _django_problem(405, "method_not_allowed", f'Method "{method}" not allowed.')
    response["Allow"] = ", ".join(allowed)
    return response


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _django_problem(400, "bad_request", "The request could not be understood.")


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _django_problem(403, "permission_denied", "You do not have permission for this.")


def handler404(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if request.path.startswith("/admin/"):
        # People read the admin in a browser: keep Django's HTML page there.
        return defaults.page_not_found(request, exception or Http404())
    return _django_problem(404, "not_found", "Not found.")


def handler500(request: HttpRequest) -> JsonResponse:
    return _django_problem(500, "internal_error", "Something went wrong on our side.")
