"""The money-invariant checker finds each contradiction between a payout and the ledger."""

from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.test import TestCase
from django.utils import timezone

from payouts.models import ApiClient, PayoutRequest, SandboxLedgerEntry

from .invariant import check_money_invariant

DESTINATION = "sandbox:success"


class MoneyInvariantCheckerTests(TestCase):
    def setUp(self) -> None:
        self.client_account = ApiClient.objects.create(name="invariant")
        self.count = 0

    def payout(self, status: str, **fields: Any) -> PayoutRequest:
        self.count += 1
        if status in ("NEW", "PROCESSING"):
            fields.setdefault("lease_expires_at", timezone.now() + timedelta(minutes=1))
        return PayoutRequest.objects.create(
            client=self.client_account,
            client_reference=f"ref-{self.count}",
            amount=Decimal("10.00"),
            currency="RUB",
            destination=DESTINATION,
            status=status,
            **fields,
        )

    def entry(self, payout: PayoutRequest, outcome: str, **fields: Any) -> SandboxLedgerEntry:
        values: dict[str, Any] = {
            "amount": payout.amount,
            "currency": payout.currency,
            "destination": payout.destination,
        }
        values.update(fields)
        return SandboxLedgerEntry.objects.create(
            idempotency_key=str(payout.pk), outcome=outcome, **values
        )

    def problems(self, payout: PayoutRequest) -> list[str]:
        return [violation.problem for violation in check_money_invariant([payout.pk]).violations]

    def test_agreeing_payouts_are_clean(self) -> None:
        paid = self.payout("PAID", provider_reference="sbx_1")
        self.entry(paid, "paid", reference="sbx_1")
        declined = self.payout("FAILED", failure_code="account_closed")
        self.entry(declined, "declined", decline_code="account_closed")
        self.payout("CANCELED")  # never sent: no row
        voided = self.payout("CANCELED")
        self.entry(voided, "canceled", amount=0, destination="")
        unavailable = self.payout("FAILED", failure_code="provider_unavailable")
        self.entry(unavailable, "")
        self.payout("PROCESSING")

        report = check_money_invariant()

        self.assertEqual(report.violations, [], str(report))
        self.assertEqual((report.checked, len(report.unfinished)), (6, 1))

    def test_canceled_payout_the_ledger_paid_or_declined_or_may_pay_is_reported(self) -> None:
        for outcome, extra in (
            ("paid", {"reference": "sbx_2"}),
            ("declined", {"decline_code": "account_closed"}),
            ("pending", {"settles_at": timezone.now() + timedelta(minutes=1)}),
        ):
            with self.subTest(outcome):
                payout = self.payout("CANCELED")
                self.entry(payout, outcome, **extra)
                self.assertEqual(self.problems(payout), [f"CANCELED but the ledger says {outcome}"])

    def test_a_pending_row_past_its_settlement_counts_as_paid(self) -> None:
        payout = self.payout("FAILED", failure_code="provider_unavailable")
        self.entry(payout, "pending", settles_at=timezone.now() - timedelta(seconds=1))

        (violation,) = check_money_invariant([payout.pk]).violations

        self.assertIn("FAILED but the ledger says paid", violation.problem)
        assert violation.ledger is not None
        self.assertEqual(violation.ledger["stored_outcome"], "pending")
        self.assertEqual(violation.payout["status"], "FAILED")

    def test_failed_payout_must_carry_the_ledgers_decline(self) -> None:
        wrong_code = self.payout("FAILED", failure_code="insufficient_funds")
        self.entry(wrong_code, "declined", decline_code="account_closed")
        no_decline = self.payout("FAILED", failure_code="insufficient_funds")

        self.assertEqual(len(self.problems(wrong_code)), 1)
        self.assertEqual(
            self.problems(no_decline),
            ["FAILED with the decline 'insufficient_funds', ledger says no row"],
        )

    def test_paid_payout_must_match_the_ledgers_payment(self) -> None:
        no_row = self.payout("PAID", provider_reference="sbx_3")
        other_reference = self.payout("PAID", provider_reference="sbx_4")
        self.entry(other_reference, "paid", reference="sbx_5")
        other_amount = self.payout("PAID", provider_reference="sbx_6")
        self.entry(other_amount, "paid", reference="sbx_6", amount=Decimal("11.00"))
        only_refused = self.payout("PAID", provider_reference="sbx_7")
        self.entry(only_refused, "")

        self.assertEqual(self.problems(no_row), ["PAID but the ledger says no row"])
        self.assertEqual(len(self.problems(other_reference)), 1)
        self.assertEqual(len(self.problems(other_amount)), 1)
        self.assertEqual(self.problems(only_refused), ["PAID but the ledger says received"])
