"""A dead worker's payouts resume within 60 s, with the default lease (20 s) and sweep (30 s).

The worker is SIGKILLed while the provider has its payouts (each call takes 4 s); a new worker
starts at once, and beat runs the recovery sweep on its default schedule. The heartbeat kept the
dead worker's leases at most 20 s ahead, so the sweep re-queues them within a lease plus one
sweep interval, and the provider's answer (the payment already made) finishes them.
"""

import sys
import time
import unittest
from typing import ClassVar

from payouts.models import PayoutRequest, ProviderCall, SandboxLedgerEntry

from .base import StackTestCase
from .support import E2E_AVAILABLE, E2E_SKIP_REASON, history, start_worker, wait_for

RESUME_WITHIN_SECONDS = 60.0
# Only the provider is slow: lease, heartbeat and sweep interval keep their defaults.
RESUME_ENV = {
    "PAYOUTS_SANDBOX_LATENCY_MS": "4000",
    "PAYOUTS_SANDBOX_FAILURE_RATE": "0",
    "PAYOUTS_PROVIDER_TIMEOUT_SECONDS": "10",
}


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class DeadWorkerRecoveryEndToEndTests(StackTestCase):
    worker_env: ClassVar[dict[str, str]] = RESUME_ENV

    def test_payouts_of_a_worker_killed_mid_call_finish_within_a_minute(self) -> None:
        payout_ids = [self.create(f"resume-{index}", "sandbox:success") for index in range(4)]
        # All four are at the provider: accepted, waiting for the 4 s settlement.
        wait_for(
            lambda: (
                SandboxLedgerEntry.objects.filter(
                    idempotency_key__in=[str(pid) for pid in payout_ids], outcome="pending"
                ).count()
                == 4
            ),
            "the provider to hold all four payouts",
        )
        assert self.worker is not None

        self.worker.kill()
        killed = time.monotonic()
        type(self).worker = self.track(start_worker(**RESUME_ENV))

        def all_paid() -> bool:
            return PayoutRequest.objects.filter(pk__in=payout_ids, status="PAID").count() == 4

        wait_for(all_paid, "the dead worker's payouts to be paid", timeout=90, interval=0.2)
        resumed = time.monotonic() - killed
        sys.stderr.write(f"\ndead worker's 4 payouts PAID {resumed:.1f} s after the SIGKILL\n")
        self.assertLess(resumed, RESUME_WITHIN_SECONDS)

        for payout_id in payout_ids:
            entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout_id))
            self.assertEqual(entry.outcome, "paid")
            payout = PayoutRequest.objects.get(pk=payout_id)
            self.assertEqual(payout.provider_reference, entry.reference)
            # The recovered delivery finished it; the dead worker's call stays on record,
            # unfinished.
            self.assertEqual(history(payout_id)[-1][1:3], ("PAID", "recovery"))
            dead_call = ProviderCall.objects.get(payout_id=payout_id, kind="execute", attempt=1)
            self.assertIsNone(dead_call.finished_at)
        self.assertMoneyInvariant(payout_ids, finished=True)
