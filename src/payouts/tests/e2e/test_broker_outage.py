"""End to end: the broker dies under a worker with unacknowledged tasks and comes back.

Regression test for Celery 5.7.0, whose worker exited with "Unrecoverable error:
AttributeError('NoneType' object has no attribute 'hostname')" when the Redis connection dropped
while tasks were unacknowledged (hence celery 5.6.3 / kombu 5.6.2 in requirements.txt). The
worker must survive the outage, let the in-flight payouts finish exactly once and consume again
once Redis is back.
"""

import os
import re
import shutil
import tempfile
import time
import unittest
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from functools import partial
from typing import Any
from unittest import mock

from django.test import TransactionTestCase
from django.utils import timezone
from rest_framework.test import APIClient

from config.celery import app as celery_app
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

from .base import FAST_WORKER_ENV, PAYOUTS_URL
from .support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    REDIS_BINARY_AVAILABLE,
    REDIS_BINARY_SKIP_REASON,
    ServiceLogsOnFailure,
    ServiceProcess,
    free_port,
    history,
    ledger,
    start_beat,
    start_gunicorn,
    start_redis,
    start_worker,
    timed_request,
    wait_for,
    wait_for_status,
)

PROCESSING, PAID = "PROCESSING", "PAID"

# Each provider call takes 3 s (inside a 10 s timeout): the broker is killed while all three
# tasks are running, hence unacknowledged (acks_late).
OUTAGE_WORKER_ENV = {
    **FAST_WORKER_ENV,
    "PAYOUTS_SANDBOX_LATENCY_MS": "3000",
    "PAYOUTS_PROVIDER_TIMEOUT_SECONDS": "10",
}
# How long the broker stays down, and the worker must stay up meanwhile.
OUTAGE_SECONDS = 2.0
SETTLE_SECONDS = 60.0


def _reset_publisher() -> None:
    # The app caches its connection and producer pools, built from broker_url on first use.
    celery_app._pool = None  # type: ignore[attr-defined]
    celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]


@contextmanager
def publisher_at(broker_url: str) -> Iterator[None]:
    """Point this process's publisher (the web side) at `broker_url`; restored on exit."""
    original = celery_app.conf.broker_url
    _reset_publisher()
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    with mock.patch.dict(os.environ, {"CELERY_BROKER_URL": broker_url}):
        celery_app.conf.update(broker_url=broker_url)
        try:
            port = broker_url.rsplit(":", 1)[1].split("/", 1)[0]
            assert f":{port}/" in celery_app.connection_for_write().as_uri()
            yield
        finally:
            _reset_publisher()
            celery_app.conf.update(broker_url=original)


def provider_called(payout_id: object) -> bool:
    return SandboxLedgerEntry.objects.filter(idempotency_key=str(payout_id), calls__gte=1).exists()


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
@unittest.skipUnless(REDIS_BINARY_AVAILABLE, REDIS_BINARY_SKIP_REASON)
class BrokerOutageEndToEndTests(ServiceLogsOnFailure, TransactionTestCase):
    """A private Redis (killed and restarted by the test) and a worker of this test's own."""

    def setUp(self) -> None:
        self.redis_dir = tempfile.mkdtemp(prefix="payouts-e2e-redis-")
        self.addCleanup(shutil.rmtree, self.redis_dir, ignore_errors=True)
        self.redis_port = free_port()
        self.broker_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.services: list[ServiceProcess] = []
        self.redis = self._start_redis()
        self.worker = start_worker(CELERY_BROKER_URL=self.broker_url, **OUTAGE_WORKER_ENV)
        self._track(self.worker)

        client = ApiClient.objects.create(name="merchant-broker-outage")
        _, key = ApiKey.objects.create_key(name="e2e", client=client)
        self.api = APIClient()
        self.api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")

    def tearDown(self) -> None:
        self.print_logs_if_failed()

    def service_processes(self) -> list[ServiceProcess]:
        return list(self.services)

    def _track(self, service: ServiceProcess) -> None:
        self.services.append(service)
        # Cleanups run after tearDown printed the logs, last started first: worker before Redis.
        self.addCleanup(service.remove_log)
        self.addCleanup(service.stop)

    def _start_redis(self) -> ServiceProcess:
        redis = start_redis(self.redis_port, self.redis_dir)
        self._track(redis)
        return redis

    def create_payout(self, reference: str) -> Any:
        with publisher_at(self.broker_url):
            response = self.api.post(
                PAYOUTS_URL,
                {
                    "client_reference": reference,
                    "amount": "100.00",
                    "currency": "RUB",
                    "destination": "sandbox:success",
                    "metadata": {"order": reference},
                },
                format="json",
            )
        self.assertEqual(response.status_code, 201, response.content)
        return response.json()["id"]

    def assert_worker_alive(self) -> None:
        self.assertIsNone(
            self.worker.process.poll(),
            f"the worker exited with {self.worker.process.returncode} (its log follows)",
        )
        # Celery 5.7.0 logged this and shut down (which takes a moment with tasks running).
        unrecoverable = [
            line for line in self.worker.output().splitlines() if "Unrecoverable error" in line
        ]
        self.assertEqual(unrecoverable, [], "the worker is shutting down (its log follows)")

    def settle_paid(self, payout_ids: list[Any]) -> None:
        """Wait for every payout to be PAID; a payout stuck PROCESSING goes to the sweep."""
        deadline = time.monotonic() + SETTLE_SECONDS
        swept = False
        while True:
            pending = list(
                PayoutRequest.objects.filter(pk__in=payout_ids)
                .exclude(status=PayoutStatus.PAID)
                .values_list("pk", "status")
            )
            if not pending:
                return
            now = time.monotonic()
            if now > deadline:
                self.fail(
                    f"not PAID after {SETTLE_SECONDS:.0f} s: "
                    + "; ".join(f"{pk} {status} {history(pk)}" for pk, status in pending)
                )
            if not swept and now > deadline - SETTLE_SECONDS / 2:
                # Its ack or outcome was lost with the connection: the lease runs out (here: at
                # once) and the recovery sweep queues it again, as beat would.
                stuck = [pk for pk, status in pending if status == PayoutStatus.PROCESSING]
                PayoutRequest.objects.filter(pk__in=stuck).update(
                    lease_expires_at=timezone.now() - timedelta(seconds=1)
                )
                with publisher_at(self.broker_url):
                    services.payouts_recover_stale()
                swept = True
            time.sleep(0.2)

    def assert_paid_once(self, payout_id: Any) -> None:
        payout = PayoutRequest.objects.get(pk=payout_id)
        self.assertEqual(payout.status, PAID)
        self.assertEqual(
            SandboxLedgerEntry.objects.filter(idempotency_key=str(payout_id)).count(), 1
        )
        entry = ledger(payout_id)
        self.assertEqual(entry.outcome, SandboxOutcome.PAID)
        self.assertGreaterEqual(entry.calls, 1)
        self.assertEqual(payout.provider_reference, entry.reference)
        applied = PayoutEvent.objects.filter(payout_id=payout_id, applied=True)
        self.assertEqual(applied.filter(to_status=PayoutStatus.PAID).count(), 1, history(payout_id))
        self.assertFalse(applied.filter(to_status=PayoutStatus.FAILED).exists(), history(payout_id))

    def test_worker_survives_a_broker_outage_with_unacked_tasks_and_pays_each_payout_once(
        self,
    ) -> None:
        payout_ids = [self.create_payout(f"e2e-outage-{n}") for n in range(3)]
        for payout_id in payout_ids:
            wait_for_status(payout_id, PROCESSING)
            wait_for(partial(provider_called, payout_id), "the provider call to start")

        # The broker dies while all three tasks are running, unacknowledged.
        self.redis.kill()
        time.sleep(OUTAGE_SECONDS)
        self.assert_worker_alive()

        # Same port, same append-only file: the broker comes back with what it had.
        self.redis = self._start_redis()
        self.settle_paid(payout_ids)
        for payout_id in payout_ids:
            self.assert_paid_once(payout_id)
        self.assert_worker_alive()

        # The worker reconnected and consumes again.
        later = self.create_payout("e2e-outage-after")
        payout = wait_for_status(later, PAID, "FAILED")
        self.assertEqual(payout.status, PAID)
        self.assert_paid_once(later)
        self.assert_worker_alive()


# The recovery e2e test: beat sweeps every SWEEP_SECONDS. Payouts created while the broker is
# down must be claimed within one sweep interval (+ RECOVERY_SLACK_SECONDS: the sweep's own run,
# a loaded 2-core machine) of the moment both the broker and the worker are back. The worker
# reconnects on kombu's fixed backoff (2 s, then 2 s longer each try, at most 30 s; no Celery
# setting changes it), so that moment is at most RECONNECT_CAP_SECONDS after the broker's return.
SWEEP_SECONDS = 5
RECOVERY_SLACK_SECONDS = 3.0
RECONNECT_CAP_SECONDS = 30.0 + 2.0
OUTAGE_CREATES = 8
# Long enough for beat to try (and fail) to send a few sweeps while the broker is down.
RECOVERY_OUTAGE_SECONDS = 3 * SWEEP_SECONDS
RECOVERY_WAIT_SECONDS = RECONNECT_CAP_SECONDS + SWEEP_SECONDS + 30.0
WORKER_CONNECTED = re.compile(r"^(\S+ \S+) INFO \S+ Connected to redis://", re.MULTILINE)


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
@unittest.skipUnless(REDIS_BINARY_AVAILABLE, REDIS_BINARY_SKIP_REASON)
class BrokerOutageRecoveryEndToEndTests(ServiceLogsOnFailure, TransactionTestCase):
    """gunicorn, a worker and beat on a private Redis, which the test kills and restarts."""

    def setUp(self) -> None:
        self.services: list[ServiceProcess] = []
        self.redis_dir = tempfile.mkdtemp(prefix="payouts-e2e-recovery-redis-")
        self.addCleanup(shutil.rmtree, self.redis_dir, ignore_errors=True)
        beat_dir = tempfile.mkdtemp(prefix="payouts-e2e-beat-")
        self.addCleanup(shutil.rmtree, beat_dir, ignore_errors=True)
        self.redis_port = free_port()
        broker = {"CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0"}
        env = {**broker, **FAST_WORKER_ENV, "PAYOUTS_SWEEP_INTERVAL_SECONDS": str(SWEEP_SECONDS)}
        self.redis = self._track(start_redis(self.redis_port, self.redis_dir))
        self.worker = self._track(start_worker(**env))
        self._track(start_beat(beat_dir, **env))
        web_port = free_port()
        self.base_url = f"http://127.0.0.1:{web_port}"
        self._track(start_gunicorn(web_port, **broker))

        client = ApiClient.objects.create(name="merchant-broker-recovery")
        _, self.key = ApiKey.objects.create_key(name="e2e", client=client)

    def _track(self, service: ServiceProcess) -> ServiceProcess:
        self.services.append(service)
        self.addCleanup(service.remove_log)
        self.addCleanup(service.stop)
        return service

    def tearDown(self) -> None:
        self.print_logs_if_failed()

    def service_processes(self) -> list[ServiceProcess]:
        return list(self.services)

    def create_over_http(self, reference: str) -> str:
        body = {
            "client_reference": reference,
            "amount": "10.00",
            "currency": "RUB",
            "destination": "sandbox:success",
        }
        status, payload, _ = timed_request(self.base_url, self.key, "POST", PAYOUTS_URL, body)
        self.assertEqual(status, 201, payload)
        return str(payload["id"])

    def claimed_at(self, payout_ids: list[str]) -> dict[str, datetime]:
        """When a worker first claimed each payout (NEW -> PROCESSING): it was queued by then."""
        claims = PayoutEvent.objects.filter(
            payout_id__in=[uuid.UUID(pk) for pk in payout_ids],
            from_status=PayoutStatus.NEW,
            to_status=PROCESSING,
        ).values_list("payout_id", "created_at")
        first: dict[str, datetime] = {}
        for payout_id, at in claims:
            first[str(payout_id)] = min(at, first.get(str(payout_id), at))
        return first

    def worker_connected_at(self) -> datetime:
        """When the worker last (re)connected to the broker, from its log (local time)."""
        stamps = WORKER_CONNECTED.findall(self.worker.output())
        self.assertTrue(stamps, "the worker never logged a connection")
        return datetime.strptime(stamps[-1], "%Y-%m-%d %H:%M:%S,%f").astimezone()

    def test_payouts_created_while_the_broker_is_down_are_queued_within_a_sweep_of_its_return(
        self,
    ) -> None:
        self.create_over_http("recovery-warm-up")  # a pooled producer connection in gunicorn
        self.redis.kill()
        payout_ids = [self.create_over_http(f"recovery-{n}") for n in range(OUTAGE_CREATES)]
        time.sleep(RECOVERY_OUTAGE_SECONDS)
        self.assertEqual(
            PayoutRequest.objects.filter(pk__in=payout_ids, status=PayoutStatus.NEW).count(),
            OUTAGE_CREATES,
            "nothing can be queued while the broker is down",
        )

        # Same port, same append-only file.
        self.redis = self._track(start_redis(self.redis_port, self.redis_dir))
        back = timezone.now()
        deadline = time.monotonic() + RECOVERY_WAIT_SECONDS
        while len(claimed := self.claimed_at(payout_ids)) < len(payout_ids):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        self.assertEqual(
            sorted(claimed),
            sorted(payout_ids),
            [(pk, history(pk)) for pk in payout_ids if pk not in claimed],
        )
        reconnected = self.worker_connected_at()
        ready = max(back, reconnected)
        delays = sorted((at - back).total_seconds() for at in claimed.values())
        print(
            f"\nbroker outage: the worker reconnected {(reconnected - back).total_seconds():.1f} s "
            f"after the broker's return; payouts claimed {', '.join(f'{s:.1f}' for s in delays)} "
            f"s after the broker's return (sweep every {SWEEP_SECONDS} s)"
        )
        self.assertLessEqual((reconnected - back).total_seconds(), RECONNECT_CAP_SECONDS)
        self.assertLessEqual(
            max((at - ready).total_seconds() for at in claimed.values()),
            SWEEP_SECONDS + RECOVERY_SLACK_SECONDS,
            delays,
        )

        for payout_id in payout_ids:
            wait_for_status(payout_id, PAID)
            with self.subTest(payout=payout_id):
                entries = SandboxLedgerEntry.objects.filter(idempotency_key=payout_id)
                self.assertEqual([e.outcome for e in entries], [SandboxOutcome.PAID])
                applied = PayoutEvent.objects.filter(payout_id=uuid.UUID(payout_id), applied=True)
                self.assertEqual(applied.filter(to_status=PAID).count(), 1, history(payout_id))
