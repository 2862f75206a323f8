"""405s, error shape, probes, OpenAPI, OPTIONS/HEAD."""

import os
import socket
import uuid
from unittest import mock

from django.test import Client
from rest_framework.test import APIClient

from payouts.models import PayoutRequest, PayoutStatus

from .helpers import LIST_URL, ApiTestCase, cancel_url, detail_url, events_url


class MethodNotAllowedTests(ApiTestCase):
    def test_put_patch_delete_on_the_list_are_405(self) -> None:
        for method in ("put", "patch", "delete"):
            with self.subTest(method=method):
                self.assertProblem(
                    getattr(self.client, method)(LIST_URL, {}, format="json"),
                    405,
                    "method_not_allowed",
                )

    def test_put_patch_delete_on_a_payout_are_405_and_change_nothing(self) -> None:
        payout = self.created_payout()
        for method in ("put", "patch", "delete"):
            with self.subTest(method=method):
                response = getattr(self.client, method)(
                    detail_url(payout.pk), {"status": "PAID"}, format="json"
                )
                self.assertProblem(response, 405, "method_not_allowed")
        payout.refresh_from_db()
        self.assertEqual(payout.status, PayoutStatus.NEW)
        self.assertEqual(PayoutRequest.objects.count(), 1)

    def test_post_on_a_payout_is_405(self) -> None:
        payout = self.created_payout()
        self.assertProblem(
            self.client.post(detail_url(payout.pk), {}, format="json"), 405, "method_not_allowed"
        )

    def test_get_on_cancel_is_405_and_does_not_cancel(self) -> None:
        payout = self.created_payout()
        self.assertProblem(self.client.get(cancel_url(payout.pk)), 405, "method_not_allowed")
        for method in ("put", "delete"):
            self.assertProblem(
                getattr(self.client, method)(cancel_url(payout.pk)), 405, "method_not_allowed"
            )
        payout.refresh_from_db()
        self.assertEqual(payout.status, PayoutStatus.NEW)

    def test_post_on_events_is_405(self) -> None:
        payout = self.created_payout()
        self.assertProblem(self.client.post(events_url(payout.pk)), 405, "method_not_allowed")

    def test_405_names_the_allowed_methods(self) -> None:
        response = self.client.delete(LIST_URL)
        self.assertIn("POST", response["Allow"])
        self.assertIn("GET", response["Allow"])


class OptionsAndHeadTests(ApiTestCase):
    def test_options_and_head_never_fail_on_any_path(self) -> None:
        payout = self.created_payout()
        paths = [
            LIST_URL,
            detail_url(payout.pk),
            cancel_url(payout.pk),
            events_url(payout.pk),
            detail_url(uuid.uuid4()),
            detail_url("junk"),
        ]
        for client in (self.client, APIClient()):
            for path in paths:
                for method in ("options", "head"):
                    with self.subTest(
                        path=path, method=method, authenticated=client is self.client
                    ):
                        response = getattr(client, method)(path)
                        self.assertLess(response.status_code, 500)

    def test_head_of_the_list_is_200_without_a_body(self) -> None:
        response = self.client.head(LIST_URL)
        self.assertEqual(response.status_code, 200)


class ErrorShapeTests(ApiTestCase):
    def test_every_error_is_a_problem_document(self) -> None:
        payout = self.created_payout()
        self.move(payout, PayoutStatus.CANCELED)
        cases = [
            (APIClient().get(LIST_URL), 401, "not_authenticated"),
            (self.client.get(detail_url(uuid.uuid4())), 404, "not_found"),
            (self.client.delete(LIST_URL), 405, "method_not_allowed"),
            (
                self.client.post(LIST_URL, "x", content_type="text/plain"),
                415,
                "unsupported_media_type",
            ),
            (
                self.client.post(LIST_URL, b"{", content_type="application/json"),
                400,
                "malformed_json",
            ),
            (self.client.post(LIST_URL, {}, format="json"), 400, "validation_error"),
            (self.client.post(cancel_url(payout.pk)), 400, "payout_not_cancelable"),
            (self.client.get(f"{LIST_URL}?nope=1"), 400, "validation_error"),
        ]
        for response, status, code in cases:
            with self.subTest(code=code):
                self.assertProblem(response, status, code)


UNAVAILABLE = {"status": "unavailable"}


class ProbeAndDocsTests(ApiTestCase):
    def test_healthz_is_200_without_auth(self) -> None:
        response = APIClient().get("/healthz")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), {"status": "ok"})

    def test_readyz_answers_only_its_status(self) -> None:
        response = APIClient().get("/readyz")
        if response.status_code == 200:
            self.assertEqual(response.json(), {"status": "ok"})
        else:  # a runner whose broker is down: still a clean 503, never a 500
            self.assertEqual((response.status_code, response.json()), (503, UNAVAILABLE))

    def test_readyz_with_the_broker_down_is_503_and_logs_why_not_the_caller(self) -> None:
        with socket.socket() as sock:  # a port nothing listens on: connection refused
            sock.bind(("127.0.0.1", 0))
            refused = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
        # Celery prefers the CELERY_BROKER_URL variable over its configuration.
        with (
            mock.patch.dict(os.environ, CELERY_BROKER_URL=refused),
            self.assertLogs("payouts.health", "WARNING") as logs,
        ):
            response = APIClient().get("/readyz")

        self.assertEqual((response.status_code, response.json()), (503, UNAVAILABLE))
        self.assertNotIn(b"broker", response.content)
        self.assertIn("broker: ", "\n".join(logs.output))
        self.assertNotIn("database: ", "\n".join(logs.output))

    def test_probes_only_answer_get(self) -> None:
        # enforce_csrf_checks: as from a real client, where CSRF used to answer first (403).
        client = Client(enforce_csrf_checks=True)
        for path in ("/healthz", "/readyz"):
            with self.subTest(path=path):
                self.assertEqual(client.post(path).status_code, 405)
                self.assertEqual(client.head(path).status_code, APIClient().get(path).status_code)

    def test_chunked_body_without_content_length_is_411(self) -> None:
        response = self.client.generic(
            "POST", LIST_URL, "", content_type="application/json", HTTP_TRANSFER_ENCODING="chunked"
        )
        self.assertEqual(response.status_code, 411)
        self.assertEqual(response.json()["code"], "length_required")
        self.assertEqual(PayoutRequest.objects.count(), 0)

    def test_openapi_schema_is_served_without_auth(self) -> None:
        response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
        self.assertEqual(response.status_code, 200)
        self.assertIn(b"/api/v1/payout-requests/", response.content)
        self.assertIn(b"openapi", response.content)

    def test_swagger_ui_is_served_without_auth_and_without_a_cdn(self) -> None:
        response = APIClient().get("/api/docs/")
        self.assertEqual(response.status_code, 200)
        html = response.content.decode()
        self.assertIn("swagger", html.lower())
        self.assertNotIn("cdn.jsdelivr.net", html)
        self.assertNotIn("unpkg.com", html)
