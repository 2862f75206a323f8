"""A TransactionTestCase with a real Celery worker running for the whole class."""

from typing import Any, ClassVar

from django.test import TransactionTestCase
from rest_framework.test import APIClient

from payouts.models import ApiClient, ApiKey

from .support import ServiceLogsOnFailure, ServiceProcess, purge_queue, start_worker

PAYOUTS_URL = "/api/v1/payout-requests/"

# Fast provider, short backoffs: a transient or hanging destination settles in seconds. The
# lease keeps its default, which settings require to exceed time limit + backoff.
FAST_WORKER_ENV = {
    "PAYOUTS_SANDBOX_LATENCY_MS": "50",
    "PAYOUTS_SANDBOX_FAILURE_RATE": "0",
    "PAYOUTS_PROVIDER_TIMEOUT_SECONDS": "1",
    "PAYOUTS_RETRY_BACKOFF_SECONDS": "1",
    "PAYOUTS_RETRY_BACKOFF_MAX_SECONDS": "2",
    "PAYOUTS_MAX_RETRIES": "3",
}


class WorkerTestCase(ServiceLogsOnFailure, TransactionTestCase):
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

    def tearDown(self) -> None:
        self.print_logs_if_failed()

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
