"""End to end with a slow provider: a cancel while the provider works, a worker killed mid-call."""

import unittest
from datetime import timedelta
from typing import ClassVar

from django.utils import timezone

from payouts import services
from payouts.models import PayoutEvent, PayoutRequest, SandboxLedgerEntry, SandboxOutcome

from .base import FAST_WORKER_ENV, PAYOUTS_URL, WorkerTestCase
from .support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    ServiceProcess,
    history,
    ledger,
    start_worker,
    wait_for,
    wait_for_status,
)

NEW, PROCESSING, PAID, CANCELED = "NEW", "PROCESSING", "PAID", "CANCELED"

# Each provider call takes 5 s (inside a 10 s timeout): ample time to act meanwhile, even on a
# loaded machine.
SLOW_WORKER_ENV = {
    **FAST_WORKER_ENV,
    "PAYOUTS_SANDBOX_LATENCY_MS": "5000",
    "PAYOUTS_PROVIDER_TIMEOUT_SECONDS": "10",
}


def provider_called(payout_id: object) -> bool:
    return SandboxLedgerEntry.objects.filter(idempotency_key=str(payout_id), calls__gte=1).exists()


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class CancelDuringProcessingEndToEndTests(WorkerTestCase):
    worker_env: ClassVar[dict[str, str]] = SLOW_WORKER_ENV

    def test_cancel_during_processing_stands_and_the_late_provider_outcome_is_only_recorded(
        self,
    ) -> None:
        payout_id = self.create_payout("e2e-cancel-processing", "sandbox:success").json()["id"]
        wait_for_status(payout_id, PROCESSING)
        wait_for(lambda: provider_called(payout_id), "the provider call to start")

        response = self.api.post(f"{PAYOUTS_URL}{payout_id}/cancel/")

        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["status"], CANCELED)
        # The provider finishes the payout it already started; the worker must not overwrite
        # the cancel, only record what the provider said.
        late = wait_for(
            lambda: PayoutEvent.objects.filter(payout_id=payout_id, applied=False).first(),
            "the late provider outcome to be recorded",
        )
        payout = PayoutRequest.objects.get(pk=payout_id)
        self.assertEqual(payout.status, CANCELED)
        self.assertIsNotNone(payout.processed_at)
        self.assertEqual(payout.provider_reference, "")
        self.assertEqual((late.from_status, late.to_status, late.actor), (CANCELED, PAID, "worker"))
        self.assertEqual(
            history(payout_id),
            [
                ("", NEW, "api", True),
                (NEW, PROCESSING, "worker", True),
                (PROCESSING, CANCELED, "api", True),
                (CANCELED, PAID, "worker", False),
            ],
        )
        entry = ledger(payout_id)
        self.assertEqual((entry.calls, entry.outcome), (1, SandboxOutcome.PAID))
        self.assertIsNotNone(entry.executed_at)
        # The client sees CANCELED and, in the history, what the provider did.
        self.assertEqual(self.api.get(f"{PAYOUTS_URL}{payout_id}/").json()["status"], CANCELED)
        events = self.api.get(f"{PAYOUTS_URL}{payout_id}/events/").json()["results"]
        self.assertEqual(events[-1]["applied"], False)
        self.assertEqual(events[-1]["to_status"], PAID)


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class WorkerCrashEndToEndTests(WorkerTestCase):
    """The class worker is slow and gets SIGKILLed; a fresh worker takes over."""

    worker_env: ClassVar[dict[str, str]] = SLOW_WORKER_ENV
    replacement: ClassVar[ServiceProcess | None] = None

    @classmethod
    def tearDownClass(cls) -> None:
        if cls.replacement is not None:
            cls.replacement.stop()
            cls.replacement.remove_log()
            cls.replacement = None
        super().tearDownClass()

    def service_processes(self) -> list[ServiceProcess]:
        return [*super().service_processes(), *filter(None, [type(self).replacement])]

    def test_payout_of_a_killed_worker_is_resumed_by_the_recovery_sweep_and_paid_once(self) -> None:
        payout_id = self.create_payout("e2e-killed-worker", "sandbox:success").json()["id"]
        wait_for_status(payout_id, PROCESSING)
        wait_for(lambda: provider_called(payout_id), "the provider call to start")
        assert self.worker is not None

        self.worker.kill()  # mid provider call: no outcome, message never acknowledged
        type(self).replacement = start_worker(**FAST_WORKER_ENV)

        payout = PayoutRequest.objects.get(pk=payout_id)
        self.assertEqual(payout.status, PROCESSING)
        self.assertEqual(ledger(payout_id).outcome, "")
        # The dead worker's lease runs out (here: at once) and the sweep queues the payout again.
        PayoutRequest.objects.filter(pk=payout_id).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        self.assertEqual(services.payouts_recover_stale(), 1)

        payout = wait_for_status(payout_id, PAID, "FAILED")
        self.assertEqual(payout.status, PAID)
        entry = ledger(payout_id)
        # Called by the killed worker and again after recovery; executed once.
        self.assertGreaterEqual(entry.calls, 2)
        self.assertEqual(entry.outcome, SandboxOutcome.PAID)
        self.assertEqual(
            SandboxLedgerEntry.objects.filter(idempotency_key=str(payout_id)).count(), 1
        )
        self.assertEqual(payout.provider_reference, entry.reference)
        self.assertEqual(
            history(payout_id),
            [
                ("", NEW, "api", True),
                (NEW, PROCESSING, "worker", True),
                (PROCESSING, PAID, "recovery", True),
            ],
        )
