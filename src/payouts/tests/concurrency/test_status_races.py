"""Concurrent status moves on one payout, on PostgreSQL: compare-and-set leaves one winner."""

import logging
import uuid
from decimal import Decimal
from typing import Any

from payouts import errors, services
from payouts.models import (
    FINAL_STATUSES,
    EventActor,
    PayoutEvent,
    PayoutRequest,
    PayoutStatus,
    SandboxLedgerEntry,
    SandboxOutcome,
)
from payouts.providers import SandboxProvider
from payouts.transitions import transition

from .support import ConcurrencyTestCase, run_concurrently

S = PayoutStatus
ROUNDS = 50


def sandbox(latency_ms: int = 0) -> SandboxProvider:
    return SandboxProvider(latency_ms=latency_ms, failure_rate=0.0)


class ConcurrentStatusMoveTests(ConcurrencyTestCase):
    def setUp(self) -> None:
        super().setUp()
        # An outcome arriving after a cancel logs a warning by design; the races make many.
        logging.disable(logging.WARNING)
        self.addCleanup(logging.disable, logging.NOTSET)

    def new_payout(self, reference: str) -> uuid.UUID:
        return services.payout_create(
            client=self.merchant,
            client_reference=reference,
            amount=Decimal("10.00"),
            currency="RUB",
            destination="sandbox:success",
            metadata={},
        ).payout.pk

    def processing_payout(self, reference: str) -> uuid.UUID:
        payout_id = self.new_payout(reference)
        self.assertEqual(transition(payout_id, to=S.PROCESSING, actor=EventActor.WORKER), S.NEW)
        return payout_id

    def final_events(self, payout_id: uuid.UUID) -> list[tuple[str, str]]:
        return list(
            PayoutEvent.objects.filter(
                payout_id=payout_id, applied=True, to_status__in=FINAL_STATUSES
            ).values_list("to_status", "actor")
        )

    def test_cancel_racing_the_workers_outcome_has_exactly_one_winner_every_time(self) -> None:
        wins: dict[str, int] = {}
        for round_ in range(ROUNDS):
            payout_id = self.processing_payout(f"cancel-race-{round_}")
            outcome = S.PAID if round_ % 2 == 0 else S.FAILED
            outcome_fields: dict[str, Any] = (
                {"provider_reference": f"sbx_{round_}"}
                if outcome == S.PAID
                else {"failure_code": "insufficient_funds", "failure_reason": "Too low."}
            )
            moves: list[tuple[PayoutStatus, EventActor, dict[str, Any]]] = [
                (S.CANCELED, EventActor.API, {}),
                (outcome, EventActor.WORKER, outcome_fields),
            ]

            def move(index: int, payout_id: uuid.UUID = payout_id, moves: Any = moves) -> Any:
                to, actor, fields = moves[index]
                return transition(payout_id, to=to, actor=actor, reason="race", **fields)

            results = run_concurrently(move, 2)

            with self.subTest(round=round_):
                self.assertEqual(sorted(map(str, results)), ["None", S.PROCESSING], results)
                winner, actor, _ = moves[0] if results[0] else moves[1]
                payout = PayoutRequest.objects.get(pk=payout_id)
                self.assertEqual(payout.status, winner)
                self.assertEqual(self.final_events(payout_id), [(winner, actor)])
                self.assertIsNotNone(payout.processed_at)
                self.assertIsNone(payout.lease_expires_at)
                # The loser's fields were not written either.
                if winner == S.CANCELED:
                    self.assertEqual((payout.provider_reference, payout.failure_code), ("", ""))
                elif winner == S.PAID:
                    self.assertEqual(payout.provider_reference, f"sbx_{round_}")
                else:
                    self.assertEqual(payout.failure_code, "insufficient_funds")
                wins[winner] = wins.get(winner, 0) + 1
        self.assertEqual(sum(wins.values()), ROUNDS)

    def test_workers_claiming_one_new_payout_at_once_have_exactly_one_winner(self) -> None:
        for round_ in range(10):
            payout_id = self.new_payout(f"claim-race-{round_}")

            def claim(_: int, payout_id: uuid.UUID = payout_id) -> PayoutStatus | None:
                return transition(
                    payout_id, to=S.PROCESSING, actor=EventActor.WORKER, reason="claimed"
                )

            results = run_concurrently(claim, 8)

            with self.subTest(round=round_):
                self.assertEqual(sorted(map(str, results)), ["NEW"] + ["None"] * 7, results)
                self.assertEqual(PayoutRequest.objects.get(pk=payout_id).status, S.PROCESSING)
                self.assertEqual(
                    PayoutEvent.objects.filter(payout_id=payout_id, to_status=S.PROCESSING).count(),
                    1,
                )

    def test_cancel_racing_a_whole_processing_attempt_never_cancels_a_paid_payout(self) -> None:
        for round_ in range(30):
            payout_id = self.new_payout(f"cancel-vs-attempt-{round_}")

            def act(index: int, payout_id: uuid.UUID = payout_id) -> Any:
                if index == 0:
                    payout = PayoutRequest.objects.get(pk=payout_id)
                    return services.payout_cancel(payout=payout, actor=EventActor.API).status
                return services.payout_process(
                    payout_id=payout_id, attempt_id="worker-delivery", provider=sandbox()
                )

            canceled, processed = run_concurrently(act, 2)

            with self.subTest(round=round_):
                payout = PayoutRequest.objects.get(pk=payout_id)
                entry = SandboxLedgerEntry.objects.filter(idempotency_key=str(payout_id)).first()
                late = PayoutEvent.objects.filter(payout_id=payout_id, applied=False)
                self.assertEqual(len(self.final_events(payout_id)), 1)
                self.assertEqual(processed, payout.status)
                if isinstance(canceled, errors.PayoutNotCancelable):
                    # The worker finished first: PAID, and the cancel changed nothing.
                    self.assertEqual(payout.status, S.PAID)
                    self.assertEqual(payout.provider_reference, entry.reference if entry else None)
                    self.assertFalse(late.exists())
                else:
                    self.assertEqual(canceled, S.CANCELED)
                    self.assertEqual(payout.status, S.CANCELED)
                    self.assertEqual(payout.provider_reference, "")
                    # CANCELED promises no money moved: the provider never executed it (it was
                    # never called, or it confirmed the cancel), and no outcome came late.
                    self.assertIn(entry.outcome if entry else None, (None, SandboxOutcome.CANCELED))
                    self.assertFalse(late.exists())

    def test_duplicate_deliveries_at_once_call_the_provider_once(self) -> None:
        for round_ in range(5):
            payout_id = self.new_payout(f"duplicate-attempts-{round_}")

            def attempt(index: int, payout_id: uuid.UUID = payout_id) -> PayoutStatus | None:
                return services.payout_process(
                    payout_id=payout_id,
                    attempt_id=f"delivery-{index}",
                    provider=sandbox(latency_ms=20),
                )

            results = run_concurrently(attempt, 8)

            with self.subTest(round=round_):
                # The lease holder pays; the others stand aside (seeing PROCESSING, or PAID if
                # they looked after it finished) without calling the provider.
                self.assertIn(S.PAID, results)
                self.assertLessEqual(set(results), {S.PAID, S.PROCESSING})
                payout = PayoutRequest.objects.get(pk=payout_id)
                entry = SandboxLedgerEntry.objects.get(idempotency_key=str(payout_id))
                self.assertEqual(entry.outcome, SandboxOutcome.PAID)
                self.assertEqual(entry.calls, 1)
                self.assertEqual(payout.attempts, 1)
                self.assertEqual(payout.provider_reference, entry.reference)
                applied = PayoutEvent.objects.filter(payout_id=payout_id, applied=True)
                self.assertEqual(applied.filter(to_status=S.PROCESSING).count(), 1)
                self.assertEqual(self.final_events(payout_id), [(S.PAID, "worker")])
