"""payout_process against the real sandbox provider and database (no broker, no worker).

Every test ends on the money invariant: what the payout says is what the sandbox ledger did.
"""

import time
from datetime import timedelta
from decimal import Decimal

from django.test import TestCase, override_settings
from django.utils import timezone

from payouts import services
from payouts.models import (
    ApiClient,
    EventActor,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    SandboxLedgerEntry,
    SandboxOutcome,
)
from payouts.providers import (
    CancelAnswer,
    Declined,
    ExecuteAnswer,
    LookupAnswer,
    NotExecuted,
    PayoutInstruction,
    SandboxProvider,
    Unknown,
)
from payouts.services.processing import AttemptDeferred
from payouts.transitions import transition

S = PayoutStatus
# Settles at once; "hang" and slow payouts give up at the (short) deadline below.
PROVIDER = SandboxProvider(latency_ms=0, failure_rate=0.0)


def ledger(payout: PayoutRequest) -> SandboxLedgerEntry | None:
    return SandboxLedgerEntry.objects.filter(idempotency_key=str(payout.pk)).first()


def calls(payout: PayoutRequest) -> list[tuple[str, str]]:
    return list(
        ProviderCall.objects.filter(payout=payout)
        .order_by("started_at", "id")
        .values_list("kind", "outcome")
    )


@override_settings(PAYOUTS_PROVIDER_TIMEOUT_SECONDS=0.05)
class PayoutProcessTestCase(TestCase):
    def create(self, destination: str, reference: str = "") -> PayoutRequest:
        client, _ = ApiClient.objects.get_or_create(name="merchant")
        return services.payout_create(
            client=client,
            client_reference=reference or destination,
            amount=Decimal("12.50"),
            currency="EUR",
            destination=destination,
            metadata={},
        ).payout

    def process(
        self, payout: PayoutRequest, *, delivery: str = "task-1", provider: object = PROVIDER
    ) -> PayoutStatus | None:
        return services.payout_process(
            payout_id=payout.pk,
            attempt_id=delivery,
            recovered=delivery != "task-1",
            provider=provider,  # type: ignore[arg-type]
        )

    def deferred(self, payout: PayoutRequest, **kwargs: object) -> AttemptDeferred:
        with self.assertRaises(AttemptDeferred) as caught:
            self.process(payout, **kwargs)  # type: ignore[arg-type]
        return caught.exception

    def expire_lease(self, payout: PayoutRequest) -> None:
        """As if the lease ran out (a re-check is due, or the worker died)."""
        PayoutRequest.objects.filter(pk=payout.pk).update(lease_expires_at=timezone.now())


class ExecuteTests(PayoutProcessTestCase):
    def test_success_claims_pays_and_records_the_call(self) -> None:
        payout = self.create("sandbox:success")
        self.assertEqual(self.process(payout), S.PAID)
        payout.refresh_from_db()
        entry = ledger(payout)
        assert entry is not None
        self.assertEqual((entry.outcome, entry.calls), (SandboxOutcome.PAID, 1))
        self.assertEqual(payout.provider_reference, entry.reference)
        self.assertEqual(payout.attempts, 1)
        self.assertIsNotNone(payout.execute_started_at)
        self.assertIsNone(payout.lease_expires_at)
        call = ProviderCall.objects.get(payout=payout)
        self.assertEqual((call.kind, call.outcome, call.attempt), ("execute", "executed", 1))
        self.assertEqual(call.requested_by, EventActor.WORKER)
        self.assertIsNotNone(call.finished_at)
        self.assertIsNotNone(call.latency_ms)

    def test_a_second_delivery_after_the_outcome_calls_nothing(self) -> None:
        payout = self.create("sandbox:success")
        self.process(payout)
        self.assertEqual(self.process(payout, delivery="task-2"), S.PAID)
        self.assertEqual(payout.events.filter(to_status=S.PAID).count(), 1)
        self.assertEqual(calls(payout), [("execute", "executed")])

    def test_decline_fails_at_once_with_the_providers_code(self) -> None:
        payout = self.create("sandbox:decline:account_closed")
        self.assertEqual(self.process(payout), S.FAILED)
        payout.refresh_from_db()
        self.assertEqual(payout.failure_code, "account_closed")
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.DECLINED)  # type: ignore[union-attr]

    def test_refusals_are_retried_then_paid_and_every_call_is_recorded(self) -> None:
        payout = self.create("sandbox:transient:2")
        for _ in range(2):
            deferred = self.deferred(payout)
            payout.refresh_from_db()
            # The lease covers the backoff: the sweep must not re-queue it meanwhile.
            assert payout.lease_expires_at is not None
            self.assertGreaterEqual(
                (payout.lease_expires_at - timezone.now()).total_seconds(), deferred.countdown
            )
        self.assertEqual(self.process(payout), S.PAID)
        self.assertEqual(
            calls(payout),
            [("execute", "not_executed"), ("execute", "not_executed"), ("execute", "executed")],
        )
        self.assertEqual(
            list(ProviderCall.objects.filter(payout=payout).values_list("attempt", flat=True)),
            [1, 2, 3],
        )

    @override_settings(PAYOUTS_MAX_RETRIES=2)
    def test_never_executed_fails_only_after_the_budget_and_a_confirmed_void(self) -> None:
        payout = self.create("sandbox:unreachable")
        for _ in range(2):
            self.deferred(payout)
        # Its worker died; the sweep's new delivery takes over: the budget is the payout's.
        self.expire_lease(payout)
        self.assertEqual(self.process(payout, delivery="task-2"), S.FAILED)
        payout.refresh_from_db()
        self.assertEqual((payout.failure_code, payout.attempts), ("provider_unavailable", 3))
        self.assertEqual(
            calls(payout),
            [("execute", "not_executed")] * 3 + [("cancel", "canceled")],
        )
        # The key is voided at the provider: nothing can execute under it any more.
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.CANCELED)  # type: ignore[union-attr]
        self.assertEqual(payout.events.get(to_status=S.FAILED).actor, EventActor.RECOVERY)

    def test_a_second_delivery_stands_aside_while_the_first_holds_the_lease(self) -> None:
        payout = self.create("sandbox:transient:1")
        self.deferred(payout, delivery="task-1")
        # A duplicate message (a sweep re-queue of a backlog) while task-1 waits to retry.
        self.assertEqual(self.process(payout, delivery="task-2"), S.PROCESSING)
        payout.refresh_from_db()
        self.assertEqual((payout.lease_owner, payout.attempts), ("task-1", 1))
        self.assertEqual(ledger(payout).calls, 1)  # type: ignore[union-attr]

    def test_a_canceled_payout_is_not_sent_to_the_provider(self) -> None:
        payout = self.create("sandbox:success")
        transition(payout.pk, to=S.CANCELED, actor=EventActor.API)
        self.assertEqual(self.process(payout), S.CANCELED)
        self.assertIsNone(ledger(payout))
        self.assertEqual(calls(payout), [])


class UnknownOutcomeTests(PayoutProcessTestCase):
    def test_a_lost_answer_is_looked_up_and_the_payout_paid_once(self) -> None:
        payout = self.create("sandbox:lost")
        self.deferred(payout)  # executed, but the answer never arrived
        payout.refresh_from_db()
        self.assertIsNotNone(payout.outcome_unknown_since)
        self.assertEqual(self.process(payout), S.PAID)
        payout.refresh_from_db()
        entry = ledger(payout)
        assert entry is not None
        self.assertEqual((entry.calls, entry.outcome), (1, SandboxOutcome.PAID))
        self.assertEqual(payout.provider_reference, entry.reference)
        self.assertIsNone(payout.outcome_unknown_since)
        self.assertEqual(calls(payout), [("execute", "unknown"), ("lookup", "executed")])

    @override_settings(PAYOUTS_MAX_RETRIES=0)
    def test_the_last_attempt_without_an_answer_leaves_it_processing_not_failed(self) -> None:
        payout = self.create("sandbox:lost-lookup-down:2")
        # The only attempt's answer is lost: no retries left, and no guess either.
        self.assertEqual(self.process(payout), S.PROCESSING)
        payout.refresh_from_db()
        self.assertEqual((payout.status, payout.failure_code), (S.PROCESSING, ""))
        assert payout.lease_expires_at is not None  # the next re-check, for the sweep
        self.assertGreater(payout.lease_expires_at, timezone.now())
        # Re-checks: the lookups are refused twice, then answer.
        for delivery in ("sweep-1", "sweep-2"):
            self.expire_lease(payout)
            self.assertEqual(self.process(payout, delivery=delivery), S.PROCESSING)
        self.expire_lease(payout)
        self.assertEqual(self.process(payout, delivery="sweep-3"), S.PAID)
        self.assertEqual(
            calls(payout),
            [
                ("execute", "unknown"),
                ("lookup", "unknown"),
                ("lookup", "unknown"),
                ("lookup", "executed"),
            ],
        )
        self.assertFalse(payout.events.filter(to_status=S.FAILED).exists())
        self.assertIsNone(PayoutRequest.objects.get(pk=payout.pk).review_flagged_at)

    @override_settings(PAYOUTS_MAX_RETRIES=0, PAYOUTS_REVIEW_AFTER_SECONDS=0)
    def test_unknown_past_the_review_age_is_flagged_and_still_not_guessed(self) -> None:
        payout = self.create("sandbox:lost-lookup-down:5")
        with self.assertLogs("payouts.services.processing", "ERROR") as logs:
            self.assertEqual(self.process(payout), S.PROCESSING)
        self.assertIn("flagged for review", logs.output[0])
        payout.refresh_from_db()
        self.assertIsNotNone(payout.review_flagged_at)
        self.assertIn("provider_timeout", payout.review_reason)
        self.assertEqual(payout.status, S.PROCESSING)

    @override_settings(PAYOUTS_MAX_RETRIES=1)
    def test_a_provider_that_never_answers_is_voided_before_the_payout_fails(self) -> None:
        payout = self.create("sandbox:hang")
        self.deferred(payout)  # timed out at the deadline: unknown
        # Looked up: nothing accepted under the key. Retried, timed out again; budget spent.
        self.assertEqual(self.process(payout), S.PROCESSING)
        self.expire_lease(payout)
        self.assertEqual(self.process(payout, delivery="sweep-1"), S.FAILED)
        payout.refresh_from_db()
        self.assertEqual(payout.failure_code, "provider_unavailable")
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.CANCELED)  # type: ignore[union-attr]
        self.assertEqual(
            calls(payout),
            [
                ("execute", "unknown"),
                ("lookup", "not_found"),
                ("execute", "unknown"),
                ("lookup", "not_found"),
                ("cancel", "canceled"),
            ],
        )

    def test_a_slow_provider_settles_after_the_deadline_and_the_lookup_finds_it(self) -> None:
        payout = self.create("sandbox:slow:300")
        self.deferred(payout)  # the 50 ms deadline passed while it was pending
        self.assertEqual(ledger(payout).outcome, SandboxOutcome.PENDING)  # type: ignore[union-attr]
        self.deferred(payout)  # looked up at once: still pending
        SandboxLedgerEntry.objects.filter(idempotency_key=str(payout.pk)).update(
            settles_at=timezone.now()
        )
        self.assertEqual(self.process(payout), S.PAID)
        self.assertEqual(ledger(payout).calls, 1)  # type: ignore[union-attr]


class RaisingProvider:
    """A buggy adapter: the sandbox behind it, but `broken` calls raise instead of answering."""

    def __init__(self, *broken: str) -> None:
        self.broken = set(broken)

    def _maybe_raise(self, kind: str) -> None:
        if kind in self.broken:
            raise RuntimeError(f"adapter bug in {kind}")

    def execute(self, instruction: PayoutInstruction, *, deadline: float) -> ExecuteAnswer:
        self._maybe_raise("execute")
        return PROVIDER.execute(instruction, deadline=deadline)

    def lookup(self, idempotency_key: str, *, deadline: float) -> LookupAnswer:
        self._maybe_raise("lookup")
        return PROVIDER.lookup(idempotency_key, deadline=deadline)

    def cancel(self, idempotency_key: str, *, deadline: float) -> CancelAnswer:
        self._maybe_raise("cancel")
        return PROVIDER.cancel(idempotency_key, deadline=deadline)


@override_settings(PAYOUTS_MAX_RETRIES=2)
class PoisonPayoutTests(PayoutProcessTestCase):
    def test_an_adapter_that_raises_spends_the_budget_and_the_provider_decides(self) -> None:
        payout = self.create("sandbox:success")
        provider = RaisingProvider("execute")
        with self.assertLogs("payouts", "ERROR"):
            for _ in range(2):
                self.deferred(payout, provider=provider)
            # The third and last attempt raises too: unknown, so the provider is asked later.
            self.assertEqual(self.process(payout, provider=provider), S.PROCESSING)
        self.expire_lease(payout)
        # It never reached the provider (lookup: not found): voided there, then FAILED.
        self.assertEqual(self.process(payout, delivery="sweep-1", provider=provider), S.FAILED)
        payout.refresh_from_db()
        self.assertEqual((payout.failure_code, payout.attempts), ("provider_unavailable", 4))
        self.assertEqual(
            [outcome for _, outcome in calls(payout)],
            ["error", "not_found", "error", "not_found", "error", "not_found", "canceled"],
        )

    def test_a_payout_whose_lookups_raise_is_flagged_for_review_and_stops_looping(self) -> None:
        payout = self.create("sandbox:lost")
        provider = RaisingProvider("lookup")
        with self.assertLogs("payouts", "ERROR"):
            self.deferred(payout, provider=provider)  # lost answer: unknown
            self.deferred(payout, provider=provider)  # the lookup raises
            self.assertEqual(self.process(payout, provider=provider), S.PROCESSING)
        payout.refresh_from_db()
        self.assertIsNotNone(payout.review_flagged_at)
        self.assertEqual(payout.attempts, 3)
        # Not re-queued in a loop: the next look is scheduled a backoff away.
        assert payout.lease_expires_at is not None
        self.assertGreater(payout.lease_expires_at, timezone.now())
        # The money moved at the provider; once lookups work, the payout says so.
        self.expire_lease(payout)
        self.assertEqual(self.process(payout, delivery="sweep-1"), S.PAID)
        self.assertEqual(ledger(payout).calls, 1)  # type: ignore[union-attr]

    def test_a_payout_never_sent_fails_processing_error_once_the_budget_is_spent(self) -> None:
        payout = self.create("sandbox:success")
        PayoutRequest.objects.filter(pk=payout.pk).update(attempts=3)  # three crashed attempts
        transition(payout.pk, to=S.PROCESSING, actor=EventActor.WORKER)
        self.expire_lease(payout)
        self.assertEqual(self.process(payout, delivery="sweep-1"), S.FAILED)
        payout.refresh_from_db()
        self.assertEqual(payout.failure_code, "processing_error")
        self.assertEqual(calls(payout), [])  # no call was ever sent: nothing to ask
        self.assertIsNone(ledger(payout))


class DownProvider:
    """A PSP that is down: every execute refused (503, not executed), lookups and cancels too."""

    def execute(self, instruction: PayoutInstruction, *, deadline: float) -> NotExecuted:
        return NotExecuted("provider_unavailable", "HTTP 503")

    def lookup(self, idempotency_key: str, *, deadline: float) -> Unknown:
        return Unknown("provider_unavailable", "HTTP 503")

    def cancel(self, idempotency_key: str, *, deadline: float) -> Unknown:
        return Unknown("provider_unavailable", "HTTP 503")


class LongReasonProvider:
    """A real PSP's decline with a long human reason and a long code (columns hold 500/64)."""

    def execute(self, instruction: PayoutInstruction, *, deadline: float) -> Declined:
        return Declined("account_closed" + "_x" * 40, "The account has been closed. " * 30)

    def lookup(self, idempotency_key: str, *, deadline: float) -> Declined:
        return self.execute(None, deadline=deadline)  # type: ignore[arg-type]

    def cancel(self, idempotency_key: str, *, deadline: float) -> Declined:
        return self.execute(None, deadline=deadline)  # type: ignore[arg-type]


@override_settings(PAYOUTS_MAX_RETRIES=0, PAYOUTS_REVIEW_AFTER_SECONDS=60)
class ProviderEdgeCaseTests(PayoutProcessTestCase):
    def test_a_provider_down_for_a_day_after_a_refusal_is_flagged_for_review(self) -> None:
        payout = self.create("psp:account")
        # Refused (never executed), but the void cannot reach the provider either: no guess.
        self.assertEqual(self.process(payout, provider=DownProvider()), S.PROCESSING)
        PayoutRequest.objects.filter(pk=payout.pk).update(
            execute_started_at=timezone.now() - timedelta(days=1)
        )
        self.expire_lease(payout)
        with self.assertLogs("payouts.services.processing", "ERROR"):
            self.assertEqual(
                self.process(payout, delivery="sweep-1", provider=DownProvider()), S.PROCESSING
            )
        payout.refresh_from_db()
        self.assertIsNotNone(payout.review_flagged_at)

    def test_a_decline_with_long_texts_fails_the_payout_with_them_cut(self) -> None:
        payout = self.create("psp:account")
        self.assertEqual(self.process(payout, provider=LongReasonProvider()), S.FAILED)
        payout.refresh_from_db()
        self.assertTrue(payout.failure_code.startswith("account_closed"))
        self.assertEqual((len(payout.failure_code), len(payout.failure_reason)), (64, 500))
        call = ProviderCall.objects.get(payout=payout)
        self.assertEqual((call.outcome, len(call.code)), ("declined", 64))

    def test_a_key_the_worker_voided_itself_is_failed_not_canceled(self) -> None:
        # The worker voided the key (budget spent, never accepted) and died before FAILED.
        payout = self.create("sandbox:hang")
        self.assertEqual(self.process(payout), S.PROCESSING)
        PROVIDER.cancel(str(payout.pk), deadline=time.monotonic() + 1)
        self.expire_lease(payout)
        # Nobody asked for a cancel: no money moved, and it is FAILED, not CANCELED.
        self.assertEqual(self.process(payout, delivery="sweep-1"), S.FAILED)
        payout.refresh_from_db()
        self.assertEqual(payout.failure_code, "provider_unavailable")
