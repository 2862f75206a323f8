"""System test: gunicorn and a Celery worker as separate processes, driven over HTTP."""

import json
import unittest
import urllib.error
import urllib.request
from typing import Any

from django.test import TransactionTestCase

from payouts.models import ApiClient, ApiKey, PayoutEvent, PayoutRequest, SandboxOutcome

from .base import FAST_WORKER_ENV, MoneyInvariantAfterEachTest
from .support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    ServiceProcess,
    free_port,
    history,
    ledger,
    purge_queue,
    start_gunicorn,
    start_worker,
    wait_for,
)


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class HttpSystemTests(MoneyInvariantAfterEachTest, TransactionTestCase):
    services: list[ServiceProcess]
    base_url: str

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.services = []
        try:
            purge_queue()
            port = free_port()
            cls.base_url = f"http://127.0.0.1:{port}"
            cls.services.append(start_worker(**FAST_WORKER_ENV))
            cls.services.append(start_gunicorn(port, WEB_CONCURRENCY="2"))
        except BaseException:
            cls._stop_services()
            super().tearDownClass()
            raise

    @classmethod
    def _stop_services(cls) -> None:
        for service in reversed(cls.services):
            service.stop()
            service.remove_log()
        cls.services = []

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls._stop_services()
        finally:
            super().tearDownClass()

    def service_processes(self) -> list[ServiceProcess]:
        return self.services

    def setUp(self) -> None:
        client = ApiClient.objects.create(name="system-test merchant")
        _, self.key = ApiKey.objects.create_key(name="system test", client=client)

    def request(
        self, method: str, path: str, body: Any = None, auth: bool = True
    ) -> tuple[int, Any]:
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.key}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(
            self.base_url + path, data=data, method=method, headers=headers
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            with error:
                return error.code, json.loads(error.read() or b"null")

    def test_payout_created_over_http_is_paid_by_the_worker_and_then_not_cancelable(self) -> None:
        payout = {
            "client_reference": "system-1",
            "amount": "1500.5",
            "currency": "rub",
            "destination": "sandbox:success",
            "metadata": {"order": "42"},
        }

        status, created = self.request("POST", "/api/v1/payout-requests/", payout)
        self.assertEqual(status, 201, created)
        self.assertEqual(
            (created["status"], created["amount"], created["currency"]), ("NEW", "1500.50", "RUB")
        )
        payout_url = f"/api/v1/payout-requests/{created['id']}/"

        def paid() -> dict[str, Any] | None:
            status, body = self.request("GET", payout_url)
            self.assertEqual(status, 200, body)
            return body if body["status"] in {"PAID", "FAILED", "CANCELED"} else None

        final = wait_for(paid, "the payout to be processed", interval=0.2)
        self.assertEqual(final["status"], "PAID")
        self.assertIsNotNone(final["processed_at"])

        # The same request again: the existing payout, nothing new.
        status, repeated = self.request("POST", "/api/v1/payout-requests/", payout)
        self.assertEqual(status, 200, repeated)
        self.assertEqual((repeated["id"], repeated["status"]), (created["id"], "PAID"))

        status, problem = self.request("POST", payout_url + "cancel/")
        self.assertEqual(status, 400, problem)
        self.assertEqual(problem["code"], "payout_not_cancelable")

        status, events = self.request("GET", payout_url + "events/")
        self.assertEqual(status, 200, events)
        self.assertEqual(
            [(e["from_status"], e["to_status"]) for e in events["results"]],
            [(None, "NEW"), ("NEW", "PROCESSING"), ("PROCESSING", "PAID")],
        )

        # State left behind: one payout, executed once, history untouched by the refused cancel.
        self.assertEqual(PayoutRequest.objects.count(), 1)
        stored = PayoutRequest.objects.get(pk=created["id"])
        self.assertEqual(stored.status, "PAID")
        entry = ledger(stored.pk)
        self.assertEqual((entry.calls, entry.outcome), (1, SandboxOutcome.PAID))
        self.assertEqual(stored.provider_reference, entry.reference)
        self.assertEqual(
            history(stored.pk),
            [
                ("", "NEW", "api", True),
                ("NEW", "PROCESSING", "worker", True),
                ("PROCESSING", "PAID", "worker", True),
            ],
        )
        self.assertEqual(PayoutEvent.objects.count(), 3)

    def test_readiness_probe_is_ok_with_database_and_broker_up(self) -> None:
        status, body = self.request("GET", "/readyz", auth=False)

        self.assertEqual(status, 200, body)
        self.assertEqual(body, {"status": "ok"})

    def test_api_over_http_rejects_a_request_without_key(self) -> None:
        status, body = self.request("GET", "/api/v1/payout-requests/", auth=False)

        self.assertEqual(status, 401, body)
        self.assertEqual(body["code"], "not_authenticated")
