"""End to end with a slow provider: a cancel while the provider works, a worker killed mid-call."""

import unittest
from datetime import timedelta
from typing import ClassVar

from django.utils import timezone

from payouts import services
from payouts.models import (
    PayoutEvent,
    PayoutRequest,
    ProviderCall,
    SandboxLedgerEntry,
    SandboxOutcome,
)

from ..invariant import ledger_outcome
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


def ledger_outcome_now(payout_id: object) -> str:
    """The ledger's outcome as settlement makes it (a due pending row reads as settled)."""
    entry = SandboxLedgerEntry.objects.filter(idempotency_key=str(payout_id)).first()
    return ledger_outcome(entry)


def provider_accepted(payout_id: object) -> bool:
    """The provider has the payout pending: an execute call reached it and is being waited on.

    A counted call is not yet an accepted one: the sandbox counts the call, then accepts it in
    a second write, and a kill can land between the two.
    """
    return SandboxLedgerEntry.objects.filter(
        idempotency_key=str(payout_id), outcome=SandboxOutcome.PENDING
    ).exists()


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class CancelDuringProcessingEndToEndTests(WorkerTestCase):
    worker_env: ClassVar[dict[str, str]] = SLOW_WORKER_ENV

    def test_cancel_while_the_provider_has_the_payout_pending_is_confirmed_by_the_provider(
        self,
    ) -> None:
        # Issue 6 rewrote this test: it asserted that a cancel during the provider call answered
        # CANCELED while the ledger paid (the late outcome only recorded, applied=false). Now
        # the cancel asks the provider, which cancels the pending payout: CANCELED, never paid.
        payout_id = self.create_payout("e2e-cancel-processing", "sandbox:success").json()["id"]
        wait_for_status(payout_id, PROCESSING)
        wait_for(
            lambda: ledger_outcome_now(payout_id) == SandboxOutcome.PENDING,
            "the provider to accept the payout",
        )

        response = self.api.post(f"{PAYOUTS_URL}{payout_id}/cancel/")

        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["status"], CANCELED)
        entry = ledger(payout_id)
        self.assertEqual((entry.calls, entry.outcome), (1, SandboxOutcome.CANCELED))
        self.assertIsNone(entry.executed_at)
        # The worker's execute call, still waiting at the provider, hears "canceled" once the
        # latency is over: nothing to apply, nothing contradicting.
        wait_for(
            lambda: ProviderCall.objects.filter(
                payout_id=payout_id, kind="execute", finished_at__isnull=False
            ).exists(),
            "the worker's execute call to end",
        )
        payout = PayoutRequest.objects.get(pk=payout_id)
        self.assertEqual(payout.status, CANCELED)
        self.assertEqual(payout.provider_reference, "")
        self.assertIsNotNone(payout.processed_at)
        self.assertEqual(
            history(payout_id),
            [
                ("", NEW, "api", True),
                (NEW, PROCESSING, "worker", True),
                (PROCESSING, CANCELED, "api", True),
            ],
        )
        self.assertEqual(
            sorted(
                ProviderCall.objects.filter(payout_id=payout_id).values_list(
                    "kind", "requested_by", "outcome"
                )
            ),
            [("cancel", "api", "canceled"), ("execute", "worker", "canceled")],
        )
        self.assertEqual(ledger(payout_id).outcome, SandboxOutcome.CANCELED)
        self.assertEqual(self.api.get(f"{PAYOUTS_URL}{payout_id}/").json()["status"], CANCELED)

    def test_cancel_after_the_provider_paid_is_refused_with_the_paid_status(self) -> None:
        payout_id = self.create_payout("e2e-cancel-too-late", "sandbox:slow:300").json()["id"]
        wait_for(
            lambda: ledger_outcome_now(payout_id) == SandboxOutcome.PAID,
            "the provider to settle the payout",
        )

        response = self.api.post(f"{PAYOUTS_URL}{payout_id}/cancel/")

        # Whether the worker or the cancel applies the provider's answer first, the client
        # learns the payout was paid, and why the cancel was refused.
        self.assertEqual(response.status_code, 400, response.content)
        body = response.json()
        self.assertEqual((body["code"], body["payout_status"]), ("payout_not_cancelable", PAID))
        payout = PayoutRequest.objects.get(pk=payout_id)
        self.assertEqual(payout.status, PAID)
        entry = ledger(payout_id)
        self.assertEqual((entry.calls, entry.outcome), (1, SandboxOutcome.PAID))
        self.assertEqual(payout.provider_reference, entry.reference)
        applied_paid = PayoutEvent.objects.filter(payout_id=payout_id, to_status=PAID)
        self.assertEqual(applied_paid.filter(applied=True).count(), 1)
        self.assertFalse(applied_paid.filter(applied=False).exists())


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
        wait_for(lambda: provider_accepted(payout_id), "the provider to accept the payout")
        assert self.worker is not None

        self.worker.kill()  # mid provider call: no outcome, message never acknowledged
        type(self).replacement = start_worker(**FAST_WORKER_ENV)

        payout = PayoutRequest.objects.get(pk=payout_id)
        self.assertEqual(payout.status, PROCESSING)
        # Accepted by the provider, not settled: nobody has called since the worker died.
        self.assertEqual(ledger(payout_id).outcome, SandboxOutcome.PENDING)
        # The dead worker's lease runs out (here: at once) and the sweep queues the payout again.
        PayoutRequest.objects.filter(pk=payout_id).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )
        self.assertEqual(services.payouts_recover_stale(), 1)

        # The replacement's 1 s deadline may spend its retries while the provider still has the
        # payout pending (5 s): it then stays PROCESSING, re-checked by the sweep (run here by
        # hand: this class has no beat) until the provider settles it.
        def finished() -> PayoutRequest | None:
            services.payouts_recover_stale()
            payout = PayoutRequest.objects.get(pk=payout_id)
            return payout if payout.status in (PAID, "FAILED") else None

        payout = wait_for(finished, "the recovered payout to finish", interval=0.5)
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
