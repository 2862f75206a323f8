"""A TransactionTestCase with a real Celery worker running for the whole class."""

import shutil
import tempfile
import uuid
from typing import Any, ClassVar

from django.test import TransactionTestCase
from rest_framework.test import APIClient

from payouts.models import ApiClient, ApiKey

from ..invariant import MoneyInvariantAssertions, check_money_invariant
from .support import (
    ServiceLogsOnFailure,
    ServiceProcess,
    free_port,
    purge_queue,
    start_beat,
    start_gunicorn,
    start_worker,
    timed_request,
)

PAYOUTS_URL = "/api/v1/payout-requests/"

# Fast provider, short backoffs: a transient or hanging destination settles in seconds. The
# lease keeps its default (20 s).
FAST_WORKER_ENV = {
    "PAYOUTS_SANDBOX_LATENCY_MS": "50",
    "PAYOUTS_SANDBOX_FAILURE_RATE": "0",
    "PAYOUTS_PROVIDER_TIMEOUT_SECONDS": "1",
    "PAYOUTS_RETRY_BACKOFF_SECONDS": "1",
    "PAYOUTS_RETRY_BACKOFF_MAX_SECONDS": "2",
    "PAYOUTS_MAX_RETRIES": "3",
}


class MoneyInvariantAfterEachTest(MoneyInvariantAssertions, ServiceLogsOnFailure):
    """tearDown: no payout the test left behind contradicts the sandbox ledger (SPEC)."""

    def tearDown(self) -> None:
        self.print_logs_if_failed()
        report = check_money_invariant()
        if report.violations:
            for service in self.service_processes():
                print(f"\n----- {service.name} log -----\n{service.output()[-20000:]}")
            raise AssertionError(str(report))


class WorkerTestCase(MoneyInvariantAfterEachTest, TransactionTestCase):
    """One worker per class, started after the queue was purged and stopped at the end."""

    worker_env: ClassVar[dict[str, str]] = FAST_WORKER_ENV
    worker: ClassVar[ServiceProcess | None] = None

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        try:
            purge_queue()
            cls.worker = start_worker(**cls.worker_env)
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            if cls.worker is not None:
                cls.worker.stop()
                cls.worker.remove_log()
                cls.worker = None
        finally:
            super().tearDownClass()

    def service_processes(self) -> list[ServiceProcess]:
        return [self.worker] if self.worker is not None else []

    def setUp(self) -> None:
        self.client_account = ApiClient.objects.create(name=f"merchant-{self.id()[-40:]}")
        _, key = ApiKey.objects.create_key(name="e2e", client=self.client_account)
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def create_payout(self, reference: str, destination: str, amount: str = "100.00") -> Any:
        response = self.api.post(
            PAYOUTS_URL,
            {
                "client_reference": reference,
                "amount": amount,
                "currency": "RUB",
                "destination": destination,
                "metadata": {"order": reference},
            },
            format="json",
        )
        self.assertEqual(response.status_code, 201, response.content)
        return response


class StackTestCase(MoneyInvariantAfterEachTest, TransactionTestCase):
    """Worker, beat (the recovery sweep) and gunicorn per class, driven over real HTTP."""

    worker_env: ClassVar[dict[str, str]] = FAST_WORKER_ENV
    services: ClassVar[list[ServiceProcess]]
    worker: ClassVar[ServiceProcess | None]
    base_url: ClassVar[str]
    beat_dir: ClassVar[str]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.services = []
        cls.worker = None
        cls.beat_dir = ""
        try:
            purge_queue()
            cls.worker = cls.track(start_worker(**cls.worker_env))
            cls.beat_dir = tempfile.mkdtemp(prefix="payouts-e2e-beat-")
            cls.track(start_beat(cls.beat_dir, **cls.worker_env))
            port = free_port()
            cls.base_url = f"http://127.0.0.1:{port}"
            cls.track(start_gunicorn(port, **cls.worker_env))
        except BaseException:
            cls.stop_services()
            super().tearDownClass()
            raise

    @classmethod
    def track(cls, service: ServiceProcess) -> ServiceProcess:
        cls.services.append(service)
        return service

    @classmethod
    def stop_services(cls) -> None:
        for service in reversed(cls.services):
            service.stop()
            service.remove_log()
        cls.services = []
        if cls.beat_dir:
            shutil.rmtree(cls.beat_dir, ignore_errors=True)

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.stop_services()
        finally:
            super().tearDownClass()

    def service_processes(self) -> list[ServiceProcess]:
        return list(self.services)

    def setUp(self) -> None:
        client = ApiClient.objects.create(name=f"merchant-{self.id()[-40:]}")
        _, self.key = ApiKey.objects.create_key(name="e2e", client=client)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, payload, _ = timed_request(self.base_url, self.key, method, path, body)
        return status, payload

    def create(self, reference: str, destination: str, amount: str = "100.00") -> uuid.UUID:
        status, body = self.request(
            "POST",
            PAYOUTS_URL,
            {
                "client_reference": reference,
                "amount": amount,
                "currency": "RUB",
                "destination": destination,
            },
        )
        self.assertEqual(status, 201, body)
        return uuid.UUID(body["id"])

    def cancel(self, payout_id: uuid.UUID) -> tuple[int, Any]:
        return self.request("POST", f"{PAYOUTS_URL}{payout_id}/cancel/")
