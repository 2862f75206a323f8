"""Concurrent recovery sweeps and lease takeovers, on PostgreSQL: one winner each."""

import uuid
from collections import Counter
from datetime import datetime, timedelta
from decimal import Decimal

from django.utils import timezone

from payouts import services
from payouts.models import EventActor, PayoutRequest, PayoutStatus
from payouts.transitions import lease_take_over, transition

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


class ConcurrentLeaseTakeoverTests(ConcurrencyTestCase):
    def test_deliveries_racing_for_an_expired_lease_have_exactly_one_winner(self) -> None:
        for round_ in range(10):
            payout_id = services.payout_create(
                client=self.merchant,
                client_reference=f"takeover-{round_}",
                amount=Decimal("5.00"),
                currency="RUB",
                destination="sandbox:success",
                metadata={},
            ).payout.pk
            transition(
                payout_id,
                to=PayoutStatus.PROCESSING,
                actor=EventActor.WORKER,
                lease_owner="dead-worker",
                lease_expires_at=timezone.now() - timedelta(seconds=1),
                count_attempt=True,
            )
            deadline = timezone.now() + timedelta(minutes=3)

            def take_over(
                n: int, payout_id: uuid.UUID = payout_id, deadline: datetime = deadline
            ) -> bool:
                return lease_take_over(payout_id, owner=f"delivery-{n}", expires_at=deadline)

            results = run_concurrently(take_over, 8)

            with self.subTest(round=round_):
                self.assertEqual(sorted(results, key=str), [False] * 7 + [True], results)
                payout = PayoutRequest.objects.get(pk=payout_id)
                self.assertEqual(payout.lease_owner, f"delivery-{results.index(True)}")
                self.assertEqual(payout.attempts, 2)  # the dead worker's and the winner's
                # The winner's live lease now keeps everyone else out, the dead holder too.
                self.assertFalse(
                    lease_take_over(payout_id, owner="dead-worker", expires_at=deadline)
                )
                self.assertTrue(
                    lease_take_over(payout_id, owner=payout.lease_owner, expires_at=deadline)
                )
