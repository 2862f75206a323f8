"""The outbox: every status change and the creation write their event in the same transaction."""

from decimal import Decimal

from django.db import transaction
from django.test import TestCase

from payouts import services
from payouts.models import ApiClient, EventActor, PayoutStatus
from payouts.transitions import transition
from webhooks.models import Event, WebhookEndpoint


class OutboxTests(TestCase):
    def setUp(self) -> None:
        self.client_account = ApiClient.objects.create(name="merchant")

    def create(self, reference: str = "r1") -> services.PayoutCreated:
        return services.payout_create(
            client=self.client_account,
            client_reference=reference,
            amount=Decimal("5.00"),
            currency="EUR",
            destination="sandbox:success",
            metadata={},
        )

    def test_creation_and_every_move_write_a_numbered_event_with_the_payout_as_shown(self) -> None:
        payout = self.create().payout
        transition(payout.pk, to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
        transition(
            payout.pk, to=PayoutStatus.PAID, actor=EventActor.WORKER, provider_reference="p1"
        )
        events = list(Event.objects.filter(payout=payout).order_by("sequence"))
        self.assertEqual(
            [(e.sequence, e.type, e.data["status"]) for e in events],
            [
                (1, "payout.created", "NEW"),
                (2, "payout.processing", "PROCESSING"),
                (3, "payout.paid", "PAID"),
            ],
        )
        self.assertEqual(events[-1].data["provider_reference"], "p1")
        self.assertEqual(events[-1].data["id"], str(payout.pk))
        self.assertEqual({e.client_id for e in events}, {self.client_account.pk})

    def test_a_move_that_rolls_back_leaves_no_event(self) -> None:
        payout = self.create().payout
        with self.assertRaises(RuntimeError), transaction.atomic():
            transition(payout.pk, to=PayoutStatus.CANCELED, actor=EventActor.API)
            raise RuntimeError("the change's transaction fails")
        self.assertEqual(list(Event.objects.values_list("type", flat=True)), ["payout.created"])

    def test_a_repeat_or_a_lost_race_writes_no_event(self) -> None:
        payout = self.create().payout
        self.create()  # the identical repeat: 200, nothing new
        transition(payout.pk, to=PayoutStatus.CANCELED, actor=EventActor.API)
        self.assertIsNone(transition(payout.pk, to=PayoutStatus.CANCELED, actor=EventActor.API))
        self.assertEqual(Event.objects.count(), 2)

    def test_without_an_endpoint_the_event_is_dispatched_as_written(self) -> None:
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            payout = self.create().payout
        event = Event.objects.get(payout=payout)
        self.assertEqual(event.dispatched_at, event.created_at)
        self.assertEqual(len(callbacks), 1)  # the payout's publish only

    def test_with_an_endpoint_the_dispatch_waits_for_the_commit(self) -> None:
        WebhookEndpoint.objects.create(
            client=self.client_account, url="https://example.com/hooks", secret="whsec_x"
        )
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            payout = self.create().payout
        self.assertIsNone(Event.objects.get(payout=payout).dispatched_at)
        self.assertEqual(len(callbacks), 2)  # the payout's publish and the event's dispatch
