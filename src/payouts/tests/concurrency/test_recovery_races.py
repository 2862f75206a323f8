"""Concurrent recovery sweeps, on PostgreSQL: each stale payout is queued once."""

from collections import Counter
from datetime import timedelta
from decimal import Decimal

from django.utils import timezone

from payouts import services
from payouts.models import EventActor, PayoutRequest, PayoutStatus
from payouts.transitions import transition

from .support import ConcurrencyTestCase, run_concurrently


class ConcurrentRecoverySweepTests(ConcurrencyTestCase):
    def payout(self, reference: str) -> PayoutRequest:
        return services.payout_create(
            client=self.merchant,
            client_reference=reference,
            amount=Decimal("5.00"),
            currency="RUB",
            destination="sandbox:success",
            metadata={},
        ).payout

    def test_concurrent_recovery_sweeps_queue_each_stale_payout_exactly_once(self) -> None:
        stale_new = [self.payout(f"stale-new-{i}").pk for i in range(15)]
        stale_processing = [self.payout(f"stale-processing-{i}").pk for i in range(15)]
        for payout_id in stale_processing:
            transition(payout_id, to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
        live = self.payout("live").pk
        finished = self.payout("finished").pk
        transition(finished, to=PayoutStatus.CANCELED, actor=EventActor.API)
        stale = stale_new + stale_processing
        PayoutRequest.objects.filter(pk__in=stale).update(
            lease_expires_at=timezone.now() - timedelta(minutes=5)
        )
        self.enqueued.calls.clear()  # forget the creates' own enqueues

        results = run_concurrently(lambda _: services.payouts_recover_stale(), 8)

        self.assertTrue(all(isinstance(r, int) for r in results), results)
        self.assertEqual(sum(results), len(stale))
        self.assertEqual(Counter(self.enqueued.calls), Counter(str(pk) for pk in stale))
        self.assertEqual(self.enqueued.count(live), 0)
        self.assertEqual(self.enqueued.count(finished), 0)
        # Every stale payout got a fresh lease and kept its status; a new sweep finds nothing.
        now = timezone.now()
        for payout in PayoutRequest.objects.filter(pk__in=stale):
            assert payout.lease_expires_at is not None
            self.assertGreater(payout.lease_expires_at, now)
        self.assertEqual(
            PayoutRequest.objects.filter(pk__in=stale_processing, status="PROCESSING").count(), 15
        )
        self.assertEqual(PayoutRequest.objects.filter(pk__in=stale_new, status="NEW").count(), 15)
        self.assertEqual(services.payouts_recover_stale(), 0)
