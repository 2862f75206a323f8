"""Shared fixtures for the API tests: a real API client and key, and request helpers."""

import json
from typing import Any
from unittest import mock

from rest_framework.test import APIClient, APITestCase

from payouts import transitions
from payouts.models import ApiClient, ApiKey, EventActor, PayoutRequest, PayoutStatus
from payouts.tasks import process_payout

LIST_URL = "/api/v1/payout-requests/"
PROBLEM_CONTENT_TYPE = "application/problem+json"


def detail_url(payout_id: Any) -> str:
    return f"{LIST_URL}{payout_id}/"


def cancel_url(payout_id: Any) -> str:
    return f"{LIST_URL}{payout_id}/cancel/"


def events_url(payout_id: Any) -> str:
    return f"{LIST_URL}{payout_id}/events/"


def payout_body(**overrides: Any) -> dict[str, Any]:
    return {
        "client_reference": "inv-1",
        "amount": "1500.00",
        "currency": "RUB",
        "destination": "40817810099910004312",
        "metadata": {"order_id": "42"},
        **overrides,
    }


class ApiTestCase(APITestCase):
    merchant: ApiClient
    key: str
    other_merchant: ApiClient
    other_key: str

    @classmethod
    def setUpTestData(cls) -> None:
        cls.merchant, cls.key = cls.make_merchant("merchant-a")
        cls.other_merchant, cls.other_key = cls.make_merchant("merchant-b")

    @staticmethod
    def make_merchant(name: str) -> tuple[ApiClient, str]:
        merchant = ApiClient.objects.create(name=name)
        _, key = ApiKey.objects.create_key(name=f"{name}-key", client=merchant)
        return merchant, key

    def setUp(self) -> None:
        self.client = self.client_for(self.key)
        self.other = self.client_for(self.other_key)

    @staticmethod
    def client_for(key: str) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        return client

    # --- requests -----------------------------------------------------------------------------

    def create(self, client: APIClient | None = None, **overrides: Any) -> Any:
        """POST a payout and run its on-commit callbacks, with the task publish counted."""
        response, _ = self.create_counting(client, **overrides)
        return response

    def create_counting(self, client: APIClient | None = None, **overrides: Any) -> tuple[Any, int]:
        """POST a payout; return the response and how many processing tasks it published.

        The real on-commit path runs (payout_enqueue); only the broker publish is replaced by a
        mock so the count is exact and no message leaves the test. e2e tests cover the broker.
        """
        with (
            mock.patch.object(process_payout, "apply_async") as publish,
            self.captureOnCommitCallbacks(execute=True),
        ):
            response = (client or self.client).post(
                LIST_URL, payout_body(**overrides), format="json"
            )
        for call in publish.call_args_list:
            self.assertEqual(call.kwargs["args"], (str(response.json()["id"]),))
        return response, publish.call_count

    def post_raw(
        self, body: bytes | str, content_type: str = "application/json", **extra: Any
    ) -> Any:
        return self.client.generic(
            "POST",
            LIST_URL,
            body,  # type: ignore[arg-type]  # bytes are fine, the stubs say str
            content_type=content_type,
            **extra,
        )

    def created_payout(self, client: APIClient | None = None, **overrides: Any) -> PayoutRequest:
        response = self.create(client, **overrides)
        self.assertEqual(response.status_code, 201, response.content)
        return PayoutRequest.objects.get(pk=response.json()["id"])

    def move(self, payout: PayoutRequest, *statuses: PayoutStatus, **fields: Any) -> None:
        """Walk the payout through the given statuses with real transitions (never save())."""
        for status in statuses:
            extra = fields if status == statuses[-1] else {}
            left = transitions.transition(payout.pk, to=status, actor=EventActor.WORKER, **extra)
            self.assertIsNotNone(left, f"could not move {payout.pk} to {status}")
        payout.refresh_from_db()

    # --- assertions ---------------------------------------------------------------------------

    def assertProblem(self, response: Any, status: int, code: str) -> dict[str, Any]:
        self.assertEqual(response.status_code, status, response.content[:2000])
        self.assertTrue(
            response["Content-Type"].startswith(PROBLEM_CONTENT_TYPE), response["Content-Type"]
        )
        body = json.loads(response.content)
        self.assertLessEqual({"type", "title", "status", "code", "message"}, set(body), body)
        self.assertEqual(body["status"], status)
        self.assertEqual(body["code"], code, body)
        self.assertEqual(body["type"], f"urn:payouts:error:{code}")
        self.assertIsInstance(body["message"], str)
        self.assertTrue(body["message"])
        return body

    def assertValidationError(
        self, response: Any, *expected: tuple[str | None, str]
    ) -> dict[str, Any]:
        """400 validation_error whose errors contain each (field, code) pair given."""
        body = self.assertProblem(response, 400, "validation_error")
        self.assertIsInstance(body["errors"], list)
        for error in body["errors"]:
            self.assertEqual(set(error), {"field", "code", "message"}, error)
        pairs = {(error["field"], error["code"]) for error in body["errors"]}
        for pair in expected:
            self.assertIn(pair, pairs, body["errors"])
        return body
