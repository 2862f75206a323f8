"""End to end: the broker freezes (SIGSTOP: a hung host, not a refused connection).

gunicorn and a worker of this test's own use a private Redis. While it is frozen every create
must still answer 201 within 1.5 s (the publish is bounded and not retried); once it thaws,
the recovery sweep queues what could not be published, and every payout is paid exactly once.
"""

import shutil
import signal
import tempfile
import time
import unittest
from typing import Any

from django.test import TransactionTestCase
from django.utils import timezone

from payouts import services
from payouts.models import (
    ApiClient,
    ApiKey,
    PayoutEvent,
    PayoutRequest,
    PayoutStatus,
    SandboxLedgerEntry,
    SandboxOutcome,
)

from .base import FAST_WORKER_ENV, PAYOUTS_URL, MoneyInvariantAfterEachTest
from .support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    REDIS_BINARY_AVAILABLE,
    REDIS_BINARY_SKIP_REASON,
    ServiceProcess,
    free_port,
    history,
    start_gunicorn,
    start_redis,
    start_worker,
    timed_request,
)
from .test_broker_outage import publisher_at

CREATES = 6
CREATE_BUDGET_SECONDS = 1.5
SETTLE_SECONDS = 60.0


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
@unittest.skipUnless(REDIS_BINARY_AVAILABLE, REDIS_BINARY_SKIP_REASON)
class FrozenBrokerEndToEndTests(MoneyInvariantAfterEachTest, TransactionTestCase):
    def setUp(self) -> None:
        self.services: list[ServiceProcess] = []
        redis_dir = tempfile.mkdtemp(prefix="payouts-e2e-frozen-redis-")
        self.addCleanup(shutil.rmtree, redis_dir, ignore_errors=True)
        redis_port = free_port()
        self.broker_url = f"redis://127.0.0.1:{redis_port}/0"
        self.redis = self._track(start_redis(redis_port, redis_dir))
        # However the test ends, thaw Redis first: a stopped process ignores SIGTERM.
        self.addCleanup(self._thaw)
        self._track(start_worker(CELERY_BROKER_URL=self.broker_url, **FAST_WORKER_ENV))
        web_port = free_port()
        self.base_url = f"http://127.0.0.1:{web_port}"
        self._track(start_gunicorn(web_port, CELERY_BROKER_URL=self.broker_url))

        client = ApiClient.objects.create(name="merchant-frozen-broker")
        _, self.key = ApiKey.objects.create_key(name="e2e", client=client)

    def _track(self, service: ServiceProcess) -> ServiceProcess:
        self.services.append(service)
        self.addCleanup(service.remove_log)
        self.addCleanup(service.stop)
        return service

    def _thaw(self) -> None:
        if self.redis.process.poll() is None:
            self.redis.process.send_signal(signal.SIGCONT)

    def service_processes(self) -> list[ServiceProcess]:
        return list(self.services)

    def create_over_http(self, reference: str) -> tuple[int, Any, float]:
        body = {
            "client_reference": reference,
            "amount": "10.00",
            "currency": "RUB",
            "destination": "sandbox:success",
        }
        return self.request("POST", body)

    def get_list(self) -> tuple[int, Any, float]:
        return self.request("GET")

    def request(self, method: str, body: Any = None) -> tuple[int, Any, float]:
        return timed_request(self.base_url, self.key, method, PAYOUTS_URL, body)

    def test_creates_answer_201_fast_while_the_broker_is_frozen_and_are_paid_once_later(
        self,
    ) -> None:
        # Both gunicorn workers load the API (GETs need no broker), but only one publishes
        # before the freeze: the creates meet both a pooled and a fresh producer connection.
        for _ in range(4):
            status, body, _ = self.get_list()
            self.assertEqual(status, 200, body)
        status, warm, _ = self.create_over_http("frozen-warm-up")
        self.assertEqual(status, 201, warm)

        self.redis.process.send_signal(signal.SIGSTOP)
        created: list[str] = []
        latencies: list[float] = []
        try:
            for n in range(CREATES):
                status, body, seconds = self.create_over_http(f"frozen-{n}")
                self.assertEqual(status, 201, body)
                created.append(body["id"])
                latencies.append(seconds)
        finally:
            self._thaw()
        self.assertLessEqual(max(latencies), CREATE_BUDGET_SECONDS, latencies)

        # Each failed publish expired its payout's lease: the next sweep will queue it.
        for payout in PayoutRequest.objects.filter(pk__in=created):
            if payout.status == PayoutStatus.NEW:
                assert payout.lease_expires_at is not None
                self.assertLessEqual(payout.lease_expires_at, timezone.now())

        # Thawed: sweep as beat would, until everything is paid.
        payout_ids = [warm["id"], *created]
        deadline = time.monotonic() + SETTLE_SECONDS
        swept = 0
        while PayoutRequest.objects.filter(pk__in=payout_ids).exclude(status="PAID").exists():
            if time.monotonic() > deadline:
                pending = PayoutRequest.objects.filter(pk__in=payout_ids).exclude(status="PAID")
                self.fail(
                    f"not PAID after {SETTLE_SECONDS:.0f} s: "
                    + "; ".join(f"{p.pk} {p.status} {history(p.pk)}" for p in pending)
                )
            with publisher_at(self.broker_url):
                swept += services.payouts_recover_stale()
            time.sleep(0.5)

        for payout_id in payout_ids:
            with self.subTest(payout=payout_id):
                entries = SandboxLedgerEntry.objects.filter(idempotency_key=str(payout_id))
                self.assertEqual(
                    [entry.outcome for entry in entries], [SandboxOutcome.PAID], history(payout_id)
                )
                applied = PayoutEvent.objects.filter(payout_id=payout_id, applied=True)
                self.assertEqual(applied.filter(to_status="PAID").count(), 1, history(payout_id))
                self.assertFalse(applied.filter(to_status="FAILED").exists(), history(payout_id))
        print(
            f"\nfrozen broker: create latencies {', '.join(f'{s:.2f}' for s in latencies)} s; "
            f"the sweep queued {swept}"
        )
