"""A sandbox PSP: behaves like a real payout provider, moves no money.

It sleeps for a configurable latency, declines a configurable share of payouts at random with
realistic codes, and treats a few destinations as deterministic test cases (like a real PSP's
test account numbers):

    sandbox:success              always paid (ignores the random failure rate)
    sandbox:decline:<code>       always declined with <code>, e.g. sandbox:decline:account_closed
    sandbox:transient:<n>        the first n calls fail transiently (HTTP 503), then paid
    sandbox:hang                 every call hangs until the client gives up (timeout)
    sandbox:lost                 paid on the first call, but that call's answer is lost (a
                                 timeout); later calls and lookups return the payment

Every call is recorded in its ledger under the idempotency key; the outcome is written once,
and any later call with the same key returns that outcome without executing again.
"""

import random
import re
import secrets
import time

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from ..models import SandboxLedgerEntry, SandboxOutcome
from .base import (
    PayoutDeclined,
    PayoutInstruction,
    PayoutPaid,
    PayoutResult,
    ProviderPermanentError,
    ProviderTransientError,
)

DECLINE_REASONS = {
    "insufficient_funds": "The payout balance is too low to cover this payout.",
    "account_closed": "The destination account has been closed.",
    "invalid_account_number": "The destination account number is not valid.",
    "account_frozen": "The destination account is frozen and cannot receive funds.",
    "could_not_process": "The destination bank could not process this payout.",
}
RANDOM_DECLINE_CODES = tuple(DECLINE_REASONS)

TEST_DESTINATION = re.compile(
    r"sandbox:(?:(?P<success>success)|decline:(?P<decline>[a-z0-9_]{1,64})"
    r"|transient:(?P<transient>\d{1,3})|(?P<hang>hang)|(?P<lost>lost))"
)


class SandboxProvider:
    def __init__(self, *, latency_ms: int, failure_rate: float, timeout_seconds: float) -> None:
        self.latency_seconds = latency_ms / 1000
        self.failure_rate = failure_rate
        self.timeout_seconds = timeout_seconds

    def execute(self, instruction: PayoutInstruction) -> PayoutResult:
        entry = self._record_call(instruction)
        if entry.outcome:
            return self._result_of(entry)

        test_case = TEST_DESTINATION.fullmatch(instruction.destination)
        if test_case and test_case["hang"]:
            time.sleep(self.timeout_seconds)
            raise ProviderTransientError("provider_timeout", "The provider did not answer in time.")
        if self.latency_seconds > self.timeout_seconds:
            time.sleep(self.timeout_seconds)
            raise ProviderTransientError("provider_timeout", "The provider did not answer in time.")
        time.sleep(self.latency_seconds)
        if test_case and test_case["transient"] and entry.calls <= int(test_case["transient"]):
            raise ProviderTransientError(
                "provider_unavailable", "The provider answered HTTP 503 Service Unavailable."
            )

        outcome: PayoutResult
        if test_case and test_case["decline"]:
            code = test_case["decline"]
            outcome = PayoutDeclined(
                code, DECLINE_REASONS.get(code, f"Declined by the bank ({code}).")
            )
        elif not test_case and random.random() < self.failure_rate:
            code = random.choice(RANDOM_DECLINE_CODES)
            outcome = PayoutDeclined(code, DECLINE_REASONS[code])
        else:
            outcome = PayoutPaid(reference=f"sbx_po_{secrets.token_hex(12)}")
        outcome = self._execute_once(entry, outcome)
        if test_case and test_case["lost"]:
            raise ProviderTransientError(
                "provider_timeout", "The provider did not answer in time (the payout was made)."
            )
        return outcome

    def lookup(self, idempotency_key: str) -> PayoutResult | None:
        entry = SandboxLedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
        return self._result_of(entry) if entry and entry.outcome else None

    def _record_call(self, instruction: PayoutInstruction) -> SandboxLedgerEntry:
        with transaction.atomic():
            entry, _ = SandboxLedgerEntry.objects.get_or_create(
                idempotency_key=instruction.idempotency_key,
                defaults={
                    "amount": instruction.amount,
                    "currency": instruction.currency,
                    "destination": instruction.destination,
                },
            )
            SandboxLedgerEntry.objects.filter(pk=entry.pk).update(calls=F("calls") + 1)
            entry.refresh_from_db()
        if (entry.amount, entry.currency, entry.destination) != (
            instruction.amount,
            instruction.currency,
            instruction.destination,
        ):
            raise ProviderPermanentError(
                "idempotency_key_reused",
                "The idempotency key was already used for a different payout.",
            )
        return entry

    def _execute_once(self, entry: SandboxLedgerEntry, outcome: PayoutResult) -> PayoutResult:
        """Write the outcome unless a concurrent call already did; return the one that stands."""
        if isinstance(outcome, PayoutPaid):
            values = {"outcome": SandboxOutcome.PAID, "reference": outcome.reference}
        else:
            values = {
                "outcome": SandboxOutcome.DECLINED,
                "decline_code": outcome.code,
                "decline_reason": outcome.reason,
            }
        executed = SandboxLedgerEntry.objects.filter(pk=entry.pk, outcome="").update(
            executed_at=timezone.now(), **values
        )
        if executed:
            return outcome
        entry.refresh_from_db()
        return self._result_of(entry)

    @staticmethod
    def _result_of(entry: SandboxLedgerEntry) -> PayoutResult:
        if entry.outcome == SandboxOutcome.PAID:
            return PayoutPaid(reference=entry.reference)
        return PayoutDeclined(entry.decline_code, entry.decline_reason)
