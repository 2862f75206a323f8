"""End to end: the API, a real Celery worker over the real Redis broker, the sandbox provider."""

import os
import unittest
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any
from unittest import mock

from django.utils import timezone

from config.celery import app as celery_app
from payouts import services
from payouts.models import PayoutEvent, PayoutRequest, PayoutStatus, ProviderCall, SandboxOutcome
from payouts.providers.sandbox import DECLINE_REASONS
from payouts.tasks import process_payout

from .base import PAYOUTS_URL, WorkerTestCase
from .support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    free_port,
    history,
    ledger,
    wait_for,
    wait_for_status,
)

NEW, PROCESSING, PAID, FAILED = "NEW", "PROCESSING", "PAID", "FAILED"


def provider_calls(payout_id: Any) -> list[tuple[str, int | None, str]]:
    """(kind, attempt, outcome) of each provider call recorded for the payout, oldest first."""
    return [
        (call.kind, call.attempt, call.outcome)
        for call in ProviderCall.objects.filter(payout_id=payout_id).order_by("started_at", "id")
    ]


def _reset_publisher() -> None:
    # The app caches its connection and producer pools, built from broker_url on first use.
    celery_app._pool = None  # type: ignore[attr-defined]
    celery_app.amqp._producer_pool = None  # type: ignore[attr-defined]


@contextmanager
def broker_unreachable() -> Iterator[None]:
    """Point this process's publisher (the web side) at a port where nothing listens."""
    port = free_port()
    dead = f"redis://127.0.0.1:{port}/0"
    original = celery_app.conf.broker_url
    _reset_publisher()
    # Celery reads CELERY_BROKER_URL from the environment before its own configuration.
    with mock.patch.dict(os.environ, {"CELERY_BROKER_URL": dead}):
        celery_app.conf.update(broker_url=dead)
        try:
            assert f":{port}/" in celery_app.connection_for_write().as_uri()
            yield
        finally:
            _reset_publisher()
            celery_app.conf.update(broker_url=original)


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class PayoutProcessingEndToEndTests(WorkerTestCase):
    def test_created_payout_is_paid_by_the_worker(self) -> None:
        response = self.create_payout("e2e-paid", "sandbox:success")
        payout_id = response.json()["id"]

        payout = wait_for_status(payout_id, PAID)

        entry = ledger(payout_id)
        self.assertEqual(entry.outcome, SandboxOutcome.PAID)
        self.assertEqual(entry.calls, 1)
        self.assertEqual(entry.amount, Decimal("100.00"))
        self.assertTrue(payout.provider_reference.startswith("sbx_po_"))
        self.assertEqual(payout.provider_reference, entry.reference)
        self.assertIsNotNone(payout.processed_at)
        self.assertIsNone(payout.lease_expires_at)
        self.assertEqual(
            history(payout_id),
            [
                ("", NEW, "api", True),
                (NEW, PROCESSING, "worker", True),
                (PROCESSING, PAID, "worker", True),
            ],
        )
        # What the client sees.
        body = self.api.get(f"{PAYOUTS_URL}{payout_id}/").json()
        self.assertEqual((body["status"], body["failure_code"]), (PAID, ""))
        events = self.api.get(f"{PAYOUTS_URL}{payout_id}/events/").json()["results"]
        self.assertEqual([event["to_status"] for event in events], [NEW, PROCESSING, PAID])

    def test_declined_payout_fails_with_the_provider_code_and_reason(self) -> None:
        response = self.create_payout("e2e-decline", "sandbox:decline:insufficient_funds")
        payout_id = response.json()["id"]

        payout = wait_for_status(payout_id, FAILED, PAID)

        self.assertEqual(payout.status, FAILED)
        self.assertEqual(payout.failure_code, "insufficient_funds")
        self.assertEqual(payout.failure_reason, DECLINE_REASONS["insufficient_funds"])
        self.assertEqual(payout.provider_reference, "")
        entry = ledger(payout_id)
        self.assertEqual(
            (entry.outcome, entry.decline_code, entry.calls),
            (SandboxOutcome.DECLINED, "insufficient_funds", 1),
        )
        self.assertEqual(
            history(payout_id),
            [
                ("", NEW, "api", True),
                (NEW, PROCESSING, "worker", True),
                (PROCESSING, FAILED, "worker", True),
            ],
        )
        body = self.api.get(f"{PAYOUTS_URL}{payout_id}/").json()
        self.assertEqual((body["status"], body["failure_code"]), (FAILED, "insufficient_funds"))
        self.assertTrue(body["failure_reason"])

    def test_a_payout_whose_answer_was_lost_is_looked_up_and_paid_once(self) -> None:
        response = self.create_payout("e2e-lost", "sandbox:lost")
        payout_id = response.json()["id"]

        payout = wait_for_status(payout_id, PAID, FAILED)

        self.assertEqual(payout.status, PAID)
        entry = ledger(payout_id)
        # The first call paid and its answer was lost; the retry asked (lookup) instead of
        # sending the payout again, and got the recorded payment.
        self.assertEqual(
            (entry.calls, entry.lookup_calls, entry.outcome), (1, 1, SandboxOutcome.PAID)
        )
        self.assertEqual(payout.provider_reference, entry.reference)
        self.assertEqual(
            provider_calls(payout_id),
            [("execute", 1, "unknown"), ("lookup", 2, "executed")],
        )

    def test_transient_provider_errors_are_retried_until_paid(self) -> None:
        response = self.create_payout("e2e-transient", "sandbox:transient:2")
        payout_id = response.json()["id"]

        payout = wait_for_status(payout_id, PAID, FAILED)

        self.assertEqual(payout.status, PAID)
        entry = ledger(payout_id)
        # Two 503s, then the third call executed it, once.
        self.assertEqual((entry.calls, entry.outcome), (3, SandboxOutcome.PAID))
        self.assertEqual(payout.provider_reference, entry.reference)
        # Retries renew the lease without new history rows.
        self.assertEqual(
            history(payout_id),
            [
                ("", NEW, "api", True),
                (NEW, PROCESSING, "worker", True),
                (PROCESSING, PAID, "worker", True),
            ],
        )

    def test_provider_that_hangs_is_voided_then_fails_as_provider_unavailable(self) -> None:
        response = self.create_payout("e2e-hang", "sandbox:hang")
        payout_id = response.json()["id"]

        # 4 attempts of a 1 s timeout plus backoffs of at most 1 + 2 + 2 s; the outcome of the
        # last is unknown, so the payout stays PROCESSING until a re-check (the sweep, run here
        # by hand: this class has no beat) finds nothing at the provider and voids the key.
        def failed() -> PayoutRequest | None:
            services.payouts_recover_stale()
            payout = PayoutRequest.objects.get(pk=payout_id)
            return payout if payout.status in (PAID, FAILED) else None

        payout = wait_for(failed, "the hanging payout to finish", timeout=90, interval=0.5)

        self.assertEqual(payout.status, FAILED, history(payout_id))
        self.assertEqual(payout.failure_code, "provider_unavailable")
        self.assertTrue(payout.failure_reason)
        entry = ledger(payout_id)
        # Called once per attempt (1 + PAYOUTS_MAX_RETRIES), never accepted, then voided.
        self.assertEqual(entry.calls, 4)
        self.assertEqual((entry.outcome, entry.cancel_calls), (SandboxOutcome.CANCELED, 1))
        calls = provider_calls(payout_id)
        executes = [outcome for kind, _, outcome in calls if kind == "execute"]
        self.assertEqual(executes, ["unknown"] * 4)
        # The void comes last, and is what the FAILED rests on.
        self.assertEqual(calls[-1][0::2], ("cancel", "canceled"))
        self.assertEqual(
            [(source, target) for source, target, _, _ in history(payout_id)],
            [("", NEW), (NEW, PROCESSING), (PROCESSING, FAILED)],
        )

    def test_payout_created_while_broker_is_down_is_answered_201_and_paid_after_recovery_sweep(
        self,
    ) -> None:
        with broker_unreachable(), self.assertLogs("payouts.services", "WARNING") as logs:
            response = self.create_payout("e2e-broker-down", "sandbox:success")
        payout_id = response.json()["id"]
        self.assertEqual(response.json()["status"], NEW)
        self.assertIn("could not queue payout", "\n".join(logs.output))

        # Nothing reached the broker: the payout waits, untouched, for the sweep.
        payout = PayoutRequest.objects.get(pk=payout_id)
        self.assertEqual(payout.status, NEW)
        self.assertIsNotNone(payout.lease_expires_at)
        self.assertEqual(history(payout_id), [("", NEW, "api", True)])
        # The failed publish expired the lease, so the very next sweep (beat: every 30 s) queues
        # it instead of one a lease (180 s) later; a second sweep finds nothing more to do.
        assert payout.lease_expires_at is not None
        self.assertLessEqual(payout.lease_expires_at, timezone.now())
        self.assertEqual(services.payouts_recover_stale(), 1)
        self.assertEqual(services.payouts_recover_stale(), 0)

        payout = wait_for_status(payout_id, PAID, FAILED)
        self.assertEqual(payout.status, PAID)
        entry = ledger(payout_id)
        self.assertEqual((entry.calls, entry.outcome), (1, SandboxOutcome.PAID))
        self.assertEqual(
            history(payout_id),
            [
                ("", NEW, "api", True),
                (NEW, PROCESSING, "recovery", True),
                (PROCESSING, PAID, "recovery", True),
            ],
        )

    def test_duplicate_deliveries_of_one_payout_execute_it_once(self) -> None:
        # Stored without the on-commit enqueue, then delivered twice by hand.
        with mock.patch.object(services.creation, "payout_enqueue"):
            created = services.payout_create(
                client=self.client_account,
                client_reference="e2e-duplicate",
                amount=Decimal("10.00"),
                currency="RUB",
                destination="sandbox:success",
                metadata={},
            )
        payout_id = created.payout.pk
        task_ids = [str(uuid.uuid4()), str(uuid.uuid4())]
        for task_id in task_ids:
            process_payout.apply_async(args=(str(payout_id),), task_id=task_id)

        payout = wait_for_status(payout_id, PAID, FAILED)
        # Both deliveries have run to completion before the state is inspected.
        worker = self.worker
        assert worker is not None
        wait_for(
            lambda: all(f"[{task_id}] succeeded" in worker.output() for task_id in task_ids),
            "both deliveries to finish",
        )

        self.assertEqual(payout.status, PAID)
        entry = ledger(payout_id)
        self.assertGreaterEqual(entry.calls, 1)
        self.assertEqual(entry.outcome, SandboxOutcome.PAID)
        payout.refresh_from_db()
        self.assertEqual(payout.provider_reference, entry.reference)
        applied = PayoutEvent.objects.filter(payout_id=payout_id, applied=True)
        self.assertEqual(applied.filter(to_status=PayoutStatus.PROCESSING).count(), 1)
        self.assertEqual(applied.filter(to_status=PayoutStatus.PAID).count(), 1)
        self.assertFalse(applied.filter(to_status=PayoutStatus.FAILED).exists())
