"""payout_process against the real sandbox provider and database (no broker, no worker)."""

from decimal import Decimal

from django.test import TestCase, override_settings
from django.utils import timezone

from payouts import services
from payouts.models import (
    ApiClient,
    EventActor,
    PayoutRequest,
    PayoutStatus,
    SandboxLedgerEntry,
)
from payouts.providers import (
    PayoutInstruction,
    PayoutPaid,
    PayoutResult,
    ProviderTransientError,
    SandboxProvider,
)
from payouts.transitions import transition

# Answers at once: "hang" gives up after a zero timeout, everything else has no latency.
PROVIDER = SandboxProvider(latency_ms=0, failure_rate=0.0, timeout_seconds=0)


class PayoutProcessTests(TestCase):
    def create(self, destination: str) -> PayoutRequest:
        client, _ = ApiClient.objects.get_or_create(name="merchant")
        return services.payout_create(
            client=client,
            client_reference=destination,
            amount=Decimal("12.50"),
            currency="EUR",
            destination=destination,
            metadata={},
        ).payout

    def process(
        self, payout: PayoutRequest, *, delivery: str = "task-1", recovered: bool = False
    ) -> PayoutStatus | None:
        return services.payout_process(
            payout_id=payout.pk, attempt_id=delivery, recovered=recovered, provider=PROVIDER
        )

    def test_success_claims_pays_and_records_the_provider_reference(self) -> None:
        payout = self.create("sandbox:success")
        self.assertEqual(self.process(payout), PayoutStatus.PAID)
        payout.refresh_from_db()
        entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout.pk))
        self.assertEqual(payout.provider_reference, entry.reference)
        self.assertEqual((payout.attempts, entry.calls), (1, 1))
        self.assertIsNotNone(payout.processed_at)
        self.assertIsNone(payout.lease_expires_at)

    def test_a_second_delivery_after_the_outcome_changes_nothing(self) -> None:
        payout = self.create("sandbox:success")
        self.process(payout)
        self.assertEqual(self.process(payout), PayoutStatus.PAID)
        self.assertEqual(payout.events.filter(to_status=PayoutStatus.PAID).count(), 1)
        entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout.pk))
        self.assertEqual(entry.calls, 1)  # the second delivery never reached the provider

    def test_decline_fails_at_once_with_the_providers_code(self) -> None:
        payout = self.create("sandbox:decline:account_closed")
        self.assertEqual(self.process(payout), PayoutStatus.FAILED)
        payout.refresh_from_db()
        self.assertEqual(payout.failure_code, "account_closed")
        self.assertTrue(payout.failure_reason)

    @override_settings(PAYOUTS_MAX_RETRIES=2)
    def test_transient_errors_are_retried_until_the_payouts_own_budget_is_spent(self) -> None:
        payout = self.create("sandbox:hang")
        for _ in range(2):
            with self.assertRaises(ProviderTransientError):
                self.process(payout)
        # Its worker died; once the lease expired the sweep's new delivery takes over, and the
        # budget is the payout's, not the new task message's.
        PayoutRequest.objects.filter(pk=payout.pk).update(lease_expires_at=timezone.now())
        self.assertEqual(
            self.process(payout, delivery="task-2", recovered=True), PayoutStatus.FAILED
        )
        payout.refresh_from_db()
        self.assertEqual((payout.failure_code, payout.attempts), ("provider_unavailable", 3))
        entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout.pk))
        self.assertEqual((entry.calls, entry.outcome), (3, ""))
        self.assertEqual(
            payout.events.get(to_status=PayoutStatus.FAILED).actor, EventActor.RECOVERY
        )

    def test_a_second_delivery_stands_aside_while_the_first_holds_the_lease(self) -> None:
        payout = self.create("sandbox:hang")
        with self.assertRaises(ProviderTransientError):
            self.process(payout, delivery="task-1")
        # A duplicate message (say, a sweep re-queue of a backlog) while task-1 waits to retry.
        self.assertEqual(self.process(payout, delivery="task-2"), PayoutStatus.PROCESSING)
        payout.refresh_from_db()
        self.assertEqual((payout.lease_owner, payout.attempts), ("task-1", 1))
        entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout.pk))
        self.assertEqual(entry.calls, 1)

    def test_a_lost_answer_is_retried_and_the_payout_paid_once(self) -> None:
        payout = self.create("sandbox:lost")
        with self.assertRaises(ProviderTransientError):
            self.process(payout)  # executed, but the answer never arrived
        self.assertEqual(self.process(payout), PayoutStatus.PAID)
        entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout.pk))
        self.assertEqual((entry.calls, entry.outcome), (2, "paid"))

    @override_settings(PAYOUTS_MAX_RETRIES=0)
    def test_before_giving_up_the_provider_is_asked_whether_it_paid(self) -> None:
        payout = self.create("sandbox:lost")
        # The only attempt times out, yet the provider did pay: PAID, not provider_unavailable.
        self.assertEqual(self.process(payout), PayoutStatus.PAID)
        payout.refresh_from_db()
        entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout.pk))
        self.assertEqual((payout.provider_reference, entry.calls), (entry.reference, 1))
        self.assertEqual(payout.failure_code, "")

    def test_a_canceled_payout_is_not_sent_to_the_provider(self) -> None:
        payout = self.create("sandbox:success")
        transition(payout.pk, to=PayoutStatus.CANCELED, actor=EventActor.API)
        self.assertEqual(self.process(payout), PayoutStatus.CANCELED)
        self.assertFalse(SandboxLedgerEntry.objects.exists())


class UnreachableProvider:
    """A provider that cannot be reached: every call, the lookup too, times out.

    The sandbox answers lookups from its own ledger and so is never unreachable for them; a
    real PSP's lookup can time out as its execute did.
    """

    def __init__(self) -> None:
        self.lookups = 0
        self.answer: PayoutResult | None = None  # once set, the provider is back

    def execute(self, instruction: PayoutInstruction) -> PayoutResult:
        if self.answer is not None:
            return self.answer
        raise ProviderTransientError("provider_timeout", "The provider did not answer in time.")

    def lookup(self, idempotency_key: str) -> PayoutResult | None:
        self.lookups += 1
        if self.answer is not None:
            return self.answer
        raise ProviderTransientError("provider_timeout", "The lookup did not answer in time.")


@override_settings(PAYOUTS_MAX_RETRIES=0)
class UnknownOutcomeTests(TestCase):
    def test_a_payout_whose_lookup_also_fails_stays_processing_until_the_provider_answers(
        self,
    ) -> None:
        client = ApiClient.objects.create(name="merchant")
        payout = services.payout_create(
            client=client,
            client_reference="unknown-outcome",
            amount=Decimal("12.50"),
            currency="EUR",
            destination="psp:account",
            metadata={},
        ).payout
        provider = UnreachableProvider()

        # The budget is spent and the provider cannot say whether it executed the payout:
        # not FAILED (that would be a guess), still PROCESSING with a lease for the sweep.
        status = services.payout_process(
            payout_id=payout.pk, attempt_id="task-1", provider=provider
        )
        self.assertEqual(status, PayoutStatus.PROCESSING)
        self.assertEqual(provider.lookups, 1)
        payout.refresh_from_db()
        self.assertEqual((payout.status, payout.failure_code), (PayoutStatus.PROCESSING, ""))
        self.assertIsNotNone(payout.lease_expires_at)
        self.assertFalse(payout.events.filter(to_status=PayoutStatus.FAILED).exists())

        # The sweep's next delivery, once the lease ran out, gets the provider's answer.
        PayoutRequest.objects.filter(pk=payout.pk).update(lease_expires_at=timezone.now())
        provider.answer = PayoutPaid(reference="psp_123")
        status = services.payout_process(
            payout_id=payout.pk, attempt_id="task-2", recovered=True, provider=provider
        )
        self.assertEqual(status, PayoutStatus.PAID)
        payout.refresh_from_db()
        self.assertEqual(payout.provider_reference, "psp_123")
