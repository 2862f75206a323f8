"""The exception handler: one problem-document shape, field errors flattened."""

from typing import Any

from django.db import OperationalError
from django.http import Http404
from django.test import SimpleTestCase
from rest_framework import exceptions
from rest_framework.exceptions import ErrorDetail
from rest_framework.response import Response

from payouts.api.errors import PROBLEM_CONTENT_TYPE, _field_errors, exception_handler
from payouts.api.parsers import RequestTooLarge
from payouts.errors import PayoutNotFound


class FieldErrorFlatteningTests(SimpleTestCase):
    def test_field_errors_become_field_code_message_entries(self) -> None:
        detail = {"amount": [ErrorDetail("Must be greater than zero.", code="not_positive")]}
        self.assertEqual(
            _field_errors(detail),
            [{"field": "amount", "code": "not_positive", "message": "Must be greater than zero."}],
        )

    def test_every_error_of_every_field_is_listed(self) -> None:
        detail = {
            "amount": [ErrorDetail("a", code="invalid"), ErrorDetail("b", code="too_large")],
            "currency": [ErrorDetail("c", code="invalid_currency")],
        }
        self.assertEqual(
            [(e["field"], e["code"]) for e in _field_errors(detail)],
            [("amount", "invalid"), ("amount", "too_large"), ("currency", "invalid_currency")],
        )

    def test_nested_errors_get_a_dotted_path(self) -> None:
        detail = {"metadata": {"order_id": [ErrorDetail("Must be a string.", code="invalid")]}}
        self.assertEqual(
            _field_errors(detail),
            [{"field": "metadata.order_id", "code": "invalid", "message": "Must be a string."}],
        )

    def test_list_items_get_an_index(self) -> None:
        detail = {"items": [{}, {"name": [ErrorDetail("x", code="required")]}]}
        self.assertEqual(
            _field_errors(detail), [{"field": "items[1].name", "code": "required", "message": "x"}]
        )

    def test_non_field_errors_have_a_null_field(self) -> None:
        detail = {"non_field_errors": [ErrorDetail("Expected a dictionary.", code="invalid")]}
        self.assertEqual(
            _field_errors(detail),
            [{"field": None, "code": "invalid", "message": "Expected a dictionary."}],
        )

    def test_bare_list_of_errors_has_a_null_field(self) -> None:
        self.assertEqual(
            _field_errors([ErrorDetail("bad", code="oops")]),
            [{"field": None, "code": "oops", "message": "bad"}],
        )


class ExceptionHandlerTests(SimpleTestCase):
    def handle(self, exc: Exception) -> Response:
        response = exception_handler(exc, {})
        assert response is not None, f"{exc!r} was not mapped"
        return response

    def assertProblem(self, exc: Exception, status: int, code: str) -> dict[str, Any]:
        response = self.handle(exc)
        self.assertEqual(response.status_code, status)
        self.assertEqual(response.content_type, PROBLEM_CONTENT_TYPE)
        body: dict[str, Any] = response.data
        self.assertEqual(body["status"], status)
        self.assertEqual(body["code"], code)
        self.assertEqual(body["type"], f"urn:payouts:error:{code}")
        self.assertTrue(body["title"])
        self.assertTrue(body["message"])
        return body

    def test_validation_error_lists_the_failing_fields(self) -> None:
        exc = exceptions.ValidationError(
            {"amount": [ErrorDetail("Must be greater than zero.", code="not_positive")]}
        )
        body = self.assertProblem(exc, 400, "validation_error")
        self.assertEqual(
            body["errors"],
            [{"field": "amount", "code": "not_positive", "message": "Must be greater than zero."}],
        )

    def test_parse_error_is_malformed_json(self) -> None:
        body = self.assertProblem(
            exceptions.ParseError("JSON parse error - x"), 400, "malformed_json"
        )
        self.assertNotIn("errors", body)

    def test_authentication_errors_are_401_with_challenge(self) -> None:
        exc = exceptions.NotAuthenticated()
        exc.auth_header = 'Bearer realm="api"'  # type: ignore[attr-defined]  # as DRF's view sets it
        response = self.handle(exc)
        self.assertEqual(response.status_code, 401)
        self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="api"')
        self.assertProblem(
            exceptions.AuthenticationFailed("Invalid API key."), 401, "authentication_failed"
        )

    def test_http_level_errors_keep_their_status_and_code(self) -> None:
        self.assertProblem(exceptions.MethodNotAllowed("PUT"), 405, "method_not_allowed")
        self.assertProblem(
            exceptions.UnsupportedMediaType("text/plain"), 415, "unsupported_media_type"
        )
        self.assertProblem(RequestTooLarge(), 413, "request_too_large")
        self.assertProblem(exceptions.NotAcceptable(), 406, "not_acceptable")

    def test_throttled_carries_retry_after(self) -> None:
        response = self.handle(exceptions.Throttled(wait=7))
        self.assertEqual(response.status_code, 429)
        self.assertEqual(response["Retry-After"], "7")

    def test_not_found_errors_are_404(self) -> None:
        self.assertProblem(PayoutNotFound("x"), 404, "not_found")
        self.assertProblem(Http404(), 404, "not_found")

    def test_unknown_exceptions_are_left_to_propagate(self) -> None:
        self.assertIsNone(exception_handler(RuntimeError("boom"), {}))

    def test_an_unreachable_database_is_503_with_retry_after(self) -> None:
        with self.assertLogs("payouts.api.errors", "ERROR"):
            response = self.handle(OperationalError("connection refused"))
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response["Retry-After"], "1")
        self.assertEqual(response.data["code"], "service_unavailable")
