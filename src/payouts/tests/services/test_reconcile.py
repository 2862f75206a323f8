"""`manage.py reconcile` against the real sandbox ledger: payouts made by the real worker code."""

import subprocess
import sys
from datetime import datetime
from datetime import timezone as dt_timezone
from decimal import Decimal
from io import StringIO
from pathlib import Path

from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection
from django.test import TestCase, TransactionTestCase, override_settings

from payouts import services
from payouts.models import (
    ApiClient,
    EventActor,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    ProviderCallKind,
    ProviderCallOutcome,
    SandboxLedgerEntry,
    SandboxOutcome,
)
from payouts.providers import PayoutInstruction, SandboxProvider
from payouts.services.reconciliation import Verdict
from payouts.tests.concurrency.support import requires_postgresql
from payouts.tests.e2e.support import service_env

# Settles at once: an accepted payout is paid or declined within its execute call.
PROVIDER = SandboxProvider(latency_ms=0, failure_rate=0.0)
SRC_DIR = Path(__file__).resolve().parents[3]


class ReconcileCase(TestCase):
    def create(self, reference: str, destination: str = "sandbox:success") -> PayoutRequest:
        client, _ = ApiClient.objects.get_or_create(name="merchant-a")
        return services.payout_create(
            client=client,
            client_reference=reference,
            amount=Decimal("12.50"),
            currency="EUR",
            destination=destination,
            metadata={},
        ).payout

    @override_settings(PAYOUTS_MAX_RETRIES=0, PAYOUTS_PROVIDER_TIMEOUT_SECONDS=0.2)
    def processed(self, reference: str, destination: str = "sandbox:success") -> PayoutRequest:
        """Created and run through one worker attempt (no retries: the budget is one attempt)."""
        payout = self.create(reference, destination)
        services.payout_process(payout_id=payout.pk, attempt_id="task-1", provider=PROVIDER)
        payout.refresh_from_db()
        return payout

    def reconcile(self, *args: str) -> tuple[int, str]:
        """Run the command; its exit code and what it printed."""
        out = StringIO()
        try:
            call_command("reconcile", *args, stdout=out)
        except CommandError as exc:
            return exc.returncode, out.getvalue() + f"CommandError: {exc}\n"
        return 0, out.getvalue()

    def ledger(self, payout: PayoutRequest) -> SandboxLedgerEntry:
        return SandboxLedgerEntry.objects.get(idempotency_key=str(payout.pk))

    def assert_reported(self, output: str, payout: PayoutRequest, verdict: Verdict) -> str:
        lines = [line for line in output.splitlines() if str(payout.pk) in line]
        self.assertEqual(len(lines), 1, output)
        self.assertTrue(lines[0].startswith(verdict.value.upper()), lines[0])
        self.assertIn(repr(payout.client_reference), lines[0])
        return lines[0]


class ReconcileTests(ReconcileCase):
    def test_a_clean_run_prints_only_the_summary_and_exits_0(self) -> None:
        paid = self.processed("paid", "sandbox:success")
        declined = self.processed("declined", "sandbox:decline:account_closed")
        never_sent = self.processed("unreachable", "sandbox:unreachable")
        canceled = services.payout_cancel(payout=self.create("canceled"), actor=EventActor.API)
        pending = self.processed("pending", "sandbox:slow:60000")
        self.create("new")
        statuses = [p.status for p in (paid, declined, never_sent, canceled, pending)]
        self.assertEqual(statuses, ["PAID", "FAILED", "FAILED", "CANCELED", "PROCESSING"])
        self.assertEqual(never_sent.failure_code, "provider_unavailable")

        code, output = self.reconcile()

        self.assertEqual(code, 0, output)
        self.assertEqual(
            output.splitlines()[-1].split(": ", 1)[1],
            "6 agree, 0 mismatch, 0 unfinished, 0 could not be checked.",
        )
        self.assertEqual(len(output.splitlines()), 1, output)

    def test_every_lookup_is_a_recorded_provider_call_requested_by_reconcile(self) -> None:
        paid = self.processed("paid")
        new = self.create("new")
        self.reconcile()
        for payout, outcome in (
            (paid, ProviderCallOutcome.EXECUTED),
            (new, ProviderCallOutcome.NOT_FOUND),
        ):
            call = ProviderCall.objects.get(payout=payout, kind=ProviderCallKind.LOOKUP)
            self.assertEqual((call.outcome, call.requested_by), (outcome, EventActor.RECONCILE))
            self.assertIsNone(call.attempt)
            self.assertIsNotNone(call.finished_at)
        self.assertEqual(self.ledger(paid).lookup_calls, 1)

    def test_a_paid_payout_missing_from_the_ledger_is_a_mismatch(self) -> None:
        paid = self.processed("paid")
        self.ledger(paid).delete()
        code, output = self.reconcile()
        self.assertEqual(code, 1, output)
        line = self.assert_reported(output, paid, Verdict.MISMATCH)
        self.assertIn(f"ours PAID 12.50 EUR reference {paid.provider_reference}", line)
        self.assertIn("provider not found (never accepted)", line)
        self.assertIn("CommandError: 1 payout(s) contradict the provider.", output)

    def test_a_canceled_payout_the_provider_paid_is_a_mismatch(self) -> None:
        # What issue 6 found: canceled here while a call in flight paid it there.
        canceled = services.payout_cancel(payout=self.create("canceled"), actor=EventActor.API)
        instruction = PayoutInstruction(
            str(canceled.pk), Decimal("12.50"), "EUR", "sandbox:success"
        )
        PROVIDER.execute(instruction, deadline=float("inf"))
        reference = self.ledger(canceled).reference
        code, output = self.reconcile()
        self.assertEqual(code, 1, output)
        line = self.assert_reported(output, canceled, Verdict.MISMATCH)
        self.assertIn("ours CANCELED 12.50 EUR reference -", line)
        self.assertIn(f"provider executed 12.50 EUR reference {reference}", line)

    def test_a_paid_payout_with_another_amount_or_reference_is_a_mismatch(self) -> None:
        other_amount = self.processed("other-amount")
        other_reference = self.processed("other-reference")
        SandboxLedgerEntry.objects.filter(idempotency_key=str(other_amount.pk)).update(
            amount=Decimal("125.00")
        )
        SandboxLedgerEntry.objects.filter(idempotency_key=str(other_reference.pk)).update(
            reference="sbx_po_someone_else"
        )
        code, output = self.reconcile()
        self.assertEqual(code, 1, output)
        line = self.assert_reported(output, other_amount, Verdict.MISMATCH)
        self.assertIn(
            f"provider executed 125.00 EUR reference {other_amount.provider_reference}", line
        )
        self.assertTrue(line.endswith("the amounts differ"), line)
        line = self.assert_reported(output, other_reference, Verdict.MISMATCH)
        self.assertIn(f"ours PAID 12.50 EUR reference {other_reference.provider_reference}", line)
        self.assertIn("provider executed 12.50 EUR reference sbx_po_someone_else", line)
        self.assertTrue(line.endswith("the references differ"), line)
        self.assertIn("0 agree, 2 mismatch", output)

    def test_a_failed_payout_the_provider_paid_is_a_mismatch(self) -> None:
        declined = self.processed("declined", "sandbox:decline:account_closed")
        never_sent = self.processed("unreachable", "sandbox:unreachable")
        for payout in (declined, never_sent):
            SandboxLedgerEntry.objects.filter(idempotency_key=str(payout.pk)).update(
                outcome=SandboxOutcome.PAID,
                reference=f"sbx_po_{payout.client_reference}",
                amount=Decimal("12.50"),
                currency="EUR",
            )
        code, output = self.reconcile()
        self.assertEqual(code, 1, output)
        line = self.assert_reported(output, declined, Verdict.MISMATCH)
        self.assertIn("ours FAILED 12.50 EUR failure account_closed reference -", line)
        self.assertIn("provider executed 12.50 EUR reference sbx_po_declined", line)
        line = self.assert_reported(output, never_sent, Verdict.MISMATCH)
        self.assertIn("failure provider_unavailable", line)

    def test_a_failed_payout_with_another_decline_code_is_a_mismatch(self) -> None:
        declined = self.processed("declined", "sandbox:decline:account_closed")
        SandboxLedgerEntry.objects.filter(idempotency_key=str(declined.pk)).update(
            decline_code="insufficient_funds"
        )
        code, output = self.reconcile()
        self.assertEqual(code, 1, output)
        line = self.assert_reported(output, declined, Verdict.MISMATCH)
        self.assertIn("provider declined insufficient_funds", line)
        self.assertTrue(line.endswith("the decline codes differ"), line)

    def test_a_payout_the_worker_has_yet_to_finish_is_listed_but_exits_0(self) -> None:
        # The execute's answer was lost: the provider paid, the payout waits for its lookup.
        lost = self.processed("lost", "sandbox:lost")
        self.assertEqual(lost.status, PayoutStatus.PROCESSING)
        code, output = self.reconcile()
        self.assertEqual(code, 0, output)
        line = self.assert_reported(output, lost, Verdict.UNFINISHED)
        self.assertIn("ours PROCESSING 12.50 EUR reference -", line)
        self.assertIn(f"provider executed 12.50 EUR reference {self.ledger(lost).reference}", line)
        self.assertIn("0 agree, 0 mismatch, 1 unfinished", output)
        lost.refresh_from_db()
        self.assertEqual(lost.status, PayoutStatus.PROCESSING)  # reported, never applied

    def test_a_payout_the_provider_cannot_answer_for_exits_2_and_a_mismatch_exits_1(self) -> None:
        down = self.processed("lookup-down", "sandbox:lost-lookup-down:5")
        code, output = self.reconcile()
        self.assertEqual(code, 2, output)
        line = self.assert_reported(output, down, Verdict.UNCHECKED)
        self.assertIn("provider no answer (provider_unavailable:", line)
        self.assertIn("The provider did not answer for 1 payout(s)", output)
        # A contradiction is worse than a gap: it decides the exit code.
        paid = self.processed("paid")
        self.ledger(paid).delete()
        code, output = self.reconcile()
        self.assertEqual(code, 1, output)
        self.assert_reported(output, down, Verdict.UNCHECKED)
        self.assert_reported(output, paid, Verdict.MISMATCH)


class ReconcilePeriodTests(ReconcileCase):
    def setUp(self) -> None:
        # Three payouts that each contradict the ledger, created on three days.
        self.payouts = {}
        for day in (1, 2, 3):
            payout = self.processed(f"day-{day}")
            self.ledger(payout).delete()
            created = datetime(2026, 1, day, 12, tzinfo=dt_timezone.utc)
            PayoutRequest.objects.filter(pk=payout.pk).update(created_at=created)
            self.payouts[day] = payout

    def reported(self, output: str) -> list[int]:
        return [day for day, payout in self.payouts.items() if str(payout.pk) in output]

    def test_since_is_inclusive_and_until_exclusive(self) -> None:
        code, output = self.reconcile(
            "--since", "2026-01-02T12:00:00Z", "--until", "2026-01-03T12:00Z"
        )
        self.assertEqual((code, self.reported(output)), (1, [2]), output)
        # Payouts outside the period are not even looked up.
        self.assertEqual(ProviderCall.objects.filter(kind=ProviderCallKind.LOOKUP).count(), 1)

    def test_dates_and_offsets_are_accepted_like_the_apis_filters(self) -> None:
        code, output = self.reconcile(
            "--since", "2026-01-02", "--until", "2026-01-03T15:00:01+03:00"
        )
        self.assertEqual((code, self.reported(output)), (1, [2, 3]), output)
        self.assertIn("in [2026-01-02T00:00:00+00:00, 2026-01-03T12:00:01+00:00)", output)

    def test_by_default_the_last_24_hours_are_checked(self) -> None:
        recent = self.processed("recent")
        self.ledger(recent).delete()
        code, output = self.reconcile()
        self.assertEqual(code, 1, output)
        self.assertEqual(self.reported(output), [])
        self.assert_reported(output, recent, Verdict.MISMATCH)
        code, output = self.reconcile("--until", "2026-01-03")
        self.assertEqual((code, self.reported(output)), (1, [2]), output)

    def test_a_bad_instant_or_an_empty_period_is_a_clear_command_error(self) -> None:
        for args, message in (
            (("--since", "yesterday"), "--since 'yesterday': use an ISO 8601 date-time"),
            (("--until", "2026-13-01"), "--until '2026-13-01': use an ISO 8601 date-time"),
            (("--since", "2026-01-02", "--until", "2026-01-02"), "--since must be before --until"),
        ):
            with self.subTest(args=args), self.assertRaisesMessage(CommandError, message) as caught:
                call_command("reconcile", *args, stdout=StringIO())
            self.assertEqual(caught.exception.returncode, 2)
        self.assertFalse(ProviderCall.objects.filter(kind=ProviderCallKind.LOOKUP).exists())


@requires_postgresql  # the command runs in a second process, against the same database
class ReconcileCommandLineTests(TransactionTestCase):
    def run_command(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", "reconcile"],
            cwd=SRC_DIR,
            env=service_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    def test_the_exit_code_tells_cron_whether_anything_contradicts_the_provider(self) -> None:
        client = ApiClient.objects.create(name="merchant-cli")
        payout = services.payout_create(
            client=client,
            client_reference="cli",
            amount=Decimal("3.00"),
            currency="EUR",
            destination="sandbox:success",
            metadata={},
        ).payout
        with override_settings(PAYOUTS_MAX_RETRIES=0):
            services.payout_process(payout_id=payout.pk, attempt_id="t", provider=PROVIDER)
        connection.close()  # nothing of ours held open while the command runs

        clean = self.run_command()
        self.assertEqual(clean.returncode, 0, clean.stdout + clean.stderr)
        self.assertIn("1 agree, 0 mismatch", clean.stdout)

        SandboxLedgerEntry.objects.filter(idempotency_key=str(payout.pk)).delete()
        mismatch = self.run_command()
        self.assertEqual(mismatch.returncode, 1, mismatch.stdout + mismatch.stderr)
        self.assertIn(f"MISMATCH: payout {payout.pk}", mismatch.stdout)
        self.assertIn("contradict the provider", mismatch.stderr)
