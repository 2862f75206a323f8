"""payout_cancel against the real sandbox: CANCELED only when no money moved."""

import threading
import time
from decimal import Decimal

from django.test import TestCase, TransactionTestCase, override_settings

from payouts import services
from payouts.errors import CancelUnconfirmed, PayoutNotCancelable
from payouts.models import (
    ApiClient,
    EventActor,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    SandboxLedgerEntry,
    SandboxOutcome,
)
from payouts.providers import SandboxProvider
from payouts.services.processing import AttemptDeferred
from payouts.transitions import mark_execute_started, transition

S = PayoutStatus
PROVIDER = SandboxProvider(latency_ms=0, failure_rate=0.0)


class CancelMixin:
    def create(self, destination: str) -> PayoutRequest:
        client, _ = ApiClient.objects.get_or_create(name="merchant")
        return services.payout_create(
            client=client,
            client_reference=destination,
            amount=Decimal("7.00"),
            currency="EUR",
            destination=destination,
            metadata={},
        ).payout

    def cancel(self, payout: PayoutRequest) -> PayoutRequest:
        return services.payout_cancel(payout=payout, actor=EventActor.API, provider=PROVIDER)


def ledger(payout: PayoutRequest) -> SandboxLedgerEntry | None:
    return SandboxLedgerEntry.objects.filter(idempotency_key=str(payout.pk)).first()


@override_settings(PAYOUTS_PROVIDER_TIMEOUT_SECONDS=0.05)
class CancelTests(CancelMixin, TestCase):
    def test_a_new_payout_is_canceled_without_asking_the_provider(self) -> None:
        payout = self.cancel(self.create("sandbox:success"))
        self.assertEqual(payout.status, S.CANCELED)
        self.assertFalse(ProviderCall.objects.exists())

    def test_a_claimed_payout_whose_call_has_not_started_is_canceled_and_never_sent(self) -> None:
        payout = self.create("sandbox:success")
        transition(payout.pk, to=S.PROCESSING, actor=EventActor.WORKER, lease_owner="task-1")
        self.assertEqual(self.cancel(payout).status, S.CANCELED)
        # The worker's compare-and-set loses: it never calls the provider.
        self.assertFalse(mark_execute_started(payout.pk, owner="task-1"))
        status = services.payout_process(
            payout_id=payout.pk, attempt_id="task-1", provider=PROVIDER
        )
        self.assertEqual(status, S.CANCELED)
        self.assertIsNone(ledger(payout))

    def test_once_a_call_started_only_the_providers_confirmation_cancels(self) -> None:
        payout = self.create("sandbox:slow:60000")
        with self.assertRaises(AttemptDeferred):  # the call timed out; pending at the provider
            services.payout_process(payout_id=payout.pk, attempt_id="task-1", provider=PROVIDER)
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.PENDING)  # type: ignore[union-attr]
        payout = self.cancel(payout)
        self.assertEqual(payout.status, S.CANCELED)
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.CANCELED)  # type: ignore[union-attr]
        call = ProviderCall.objects.get(payout=payout, kind="cancel")
        self.assertEqual((call.outcome, call.requested_by), ("canceled", EventActor.API))
        self.assertIn("confirmed by the provider", payout.events.get(to_status=S.CANCELED).reason)
        # The retry finds it CANCELED and leaves it: never paid.
        status = services.payout_process(
            payout_id=payout.pk, attempt_id="task-1", provider=PROVIDER
        )
        self.assertEqual(status, S.CANCELED)

    def test_a_lost_answer_then_a_cancel_is_refused_with_the_providers_outcome(self) -> None:
        payout = self.create("sandbox:lost")
        with self.assertRaises(AttemptDeferred):  # executed, answer lost; retry pending
            services.payout_process(payout_id=payout.pk, attempt_id="task-1", provider=PROVIDER)
        with self.assertRaises(PayoutNotCancelable) as refused:
            self.cancel(payout)
        self.assertEqual(refused.exception.payout.status, S.PAID)
        payout.refresh_from_db()
        entry = ledger(payout)
        assert entry is not None
        self.assertEqual((payout.status, payout.provider_reference), (S.PAID, entry.reference))
        self.assertEqual((entry.outcome, entry.calls), (SandboxOutcome.PAID, 1))

    def test_no_answer_from_the_provider_changes_nothing(self) -> None:
        payout = self.create("sandbox:cancel-refused")
        slow = SandboxProvider(latency_ms=60_000, failure_rate=0.0)
        with self.assertRaises(AttemptDeferred):  # the call timed out; pending at the provider
            services.payout_process(payout_id=payout.pk, attempt_id="task-1", provider=slow)
        with self.assertRaises(CancelUnconfirmed):
            self.cancel(payout)
        payout.refresh_from_db()
        self.assertEqual(payout.status, S.PROCESSING)
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.PENDING)  # type: ignore[union-attr]
        self.assertEqual(
            list(ProviderCall.objects.filter(payout=payout).values_list("kind", "outcome")),
            [("execute", "unknown"), ("cancel", "unknown")],
        )

    def test_a_final_payout_is_not_cancelable(self) -> None:
        payout = self.create("sandbox:success")
        services.payout_process(payout_id=payout.pk, attempt_id="task-1", provider=PROVIDER)
        with self.assertRaises(PayoutNotCancelable) as refused:
            self.cancel(payout)
        self.assertEqual(refused.exception.payout.status, S.PAID)


class CancelDuringTheCallTests(CancelMixin, TransactionTestCase):
    """A cancel while the worker's execute call waits at the provider (threads, committed rows)."""

    def test_the_provider_cancels_the_pending_payout_and_the_worker_agrees(self) -> None:
        payout = self.create("sandbox:slow:1500")
        results: list[object] = []

        def work() -> None:
            try:
                results.append(
                    services.payout_process(
                        payout_id=payout.pk, attempt_id="task-1", provider=PROVIDER
                    )
                )
            finally:
                from django.db import connection

                connection.close()

        worker = threading.Thread(target=work)
        worker.start()
        deadline = time.monotonic() + 5
        while ledger(payout) is None or ledger(payout).outcome != SandboxOutcome.PENDING:  # type: ignore[union-attr]
            self.assertLess(time.monotonic(), deadline, "the call never reached the provider")
            time.sleep(0.01)
        self.assertEqual(self.cancel(payout).status, S.CANCELED)
        worker.join(10)
        self.assertEqual(results, [S.CANCELED])
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.CANCELED)  # type: ignore[union-attr]
        payout.refresh_from_db()
        self.assertEqual(payout.events.filter(applied=False).count(), 0)
