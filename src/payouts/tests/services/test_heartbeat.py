"""The lease heartbeat renews the leases of attempts in flight, from its own thread."""

import time
from datetime import timedelta
from decimal import Decimal

from django.test import TransactionTestCase, override_settings
from django.utils import timezone

from payouts.heartbeat import LeaseHeartbeat
from payouts.models import ApiClient, PayoutRequest, PayoutStatus


@override_settings(PAYOUTS_LEASE_SECONDS=6)  # a beat every 2 s
class LeaseHeartbeatTests(TransactionTestCase):
    def payout(self, reference: str, *, lease_seconds: float) -> PayoutRequest:
        client, _ = ApiClient.objects.get_or_create(name="merchant")
        return PayoutRequest.objects.create(
            client=client,
            client_reference=reference,
            amount=Decimal("1.00"),
            currency="EUR",
            destination="sandbox:success",
            status=PayoutStatus.PROCESSING,
            lease_owner="task-1",
            lease_expires_at=timezone.now() + timedelta(seconds=lease_seconds),
        )

    def lease(self, payout: PayoutRequest) -> timedelta:
        payout.refresh_from_db()
        assert payout.lease_expires_at is not None
        return payout.lease_expires_at - timezone.now()

    def test_held_leases_are_renewed_and_released_ones_are_not(self) -> None:
        held = self.payout("held", lease_seconds=1)
        other_owner = self.payout("other-owner", lease_seconds=1)
        longer = self.payout("longer", lease_seconds=600)  # a re-check scheduled far away
        heartbeat = LeaseHeartbeat()
        with (
            heartbeat.hold(held.pk, "task-1", at_most=60),
            heartbeat.hold(other_owner.pk, "task-2", at_most=60),  # not its lease
            heartbeat.hold(longer.pk, "task-1", at_most=60),
        ):
            time.sleep(2.6)
            self.assertGreater(self.lease(held), timedelta(seconds=3))
            self.assertLess(self.lease(other_owner), timedelta(seconds=0))
            self.assertGreater(self.lease(longer), timedelta(seconds=590))  # never shortened
        renewed = PayoutRequest.objects.get(pk=held.pk).lease_expires_at
        time.sleep(2.2)
        self.assertEqual(PayoutRequest.objects.get(pk=held.pk).lease_expires_at, renewed)

    def test_a_hold_past_its_limit_is_no_longer_renewed(self) -> None:
        hung = self.payout("hung", lease_seconds=1)
        heartbeat = LeaseHeartbeat()
        with (
            self.assertLogs("payouts.heartbeat", "ERROR") as logs,
            heartbeat.hold(hung.pk, "task-1", at_most=0.5),
        ):
            time.sleep(2.6)  # one beat, after the limit
            self.assertLess(self.lease(hung), timedelta(seconds=0))
        self.assertIn("runs past every deadline", logs.output[0])
