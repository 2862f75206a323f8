"""Reconciliation: each payout of a period against the provider's own record of it (`lookup`).

Read-only on payouts: it reports, it never finishes one (the worker does that on the
provider's answer). Every lookup is a recorded provider call (ProviderCall, kind lookup,
requested by `admin`: staff run it) with its own deadline.

What agrees with what (anything else is a mismatch):

- PAID: executed under the same reference, for the same amount and currency.
- FAILED with a decline code: declined with that code.
- FAILED `provider_unavailable` / `processing_error`: never executed (not found, or canceled:
  the key was voided).
- CANCELED: never executed (not found, or canceled).
- NEW / PROCESSING: not settled (pending, not found). A settled answer for an unfinished
  payout is reported as *unfinished*: the worker has yet to apply it (it looks the payout up
  on its own schedule). Since our status is not final it promises nothing yet, so it is not a
  contradiction; and it is what a payout read a moment before the worker finished it shows.
- Any status, no answer (`Unknown`): *could not check*.

Final statuses never change, so a payout read as final cannot be overtaken by the worker while
it is being checked: a mismatch is never a race.
"""

import enum
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.conf import settings

from ..models import EventActor, PayoutRequest, PayoutStatus, ProviderCallKind
from ..money import format_amount
from ..providers import (
    Canceled,
    Declined,
    Executed,
    LookupAnswer,
    NotFound,
    PayoutProvider,
    Pending,
    Unknown,
    get_provider,
)
from .provider_calls import call_provider

# Failure codes of ours that mean "the provider never executed it", not a decline.
NOT_EXECUTED_CODES = frozenset({"provider_unavailable", "processing_error"})
# Rows fetched per round trip of the server-side cursor: constant memory over any table size.
CHUNK_SIZE = 500


class Verdict(enum.Enum):
    AGREES = "agrees"
    MISMATCH = "mismatch"
    UNFINISHED = "unfinished"  # not final yet, the provider has settled it
    UNCHECKED = "could not check"  # the provider did not answer


@dataclass(frozen=True, slots=True)
class Check:
    """One payout compared with the provider's answer about it."""

    payout: PayoutRequest
    answer: LookupAnswer
    verdict: Verdict
    why: str = ""

    def describe(self) -> str:
        """One line with both sides, for an operator."""
        payout = self.payout
        head = f"{self.verdict.value.upper()}: payout {payout.pk} ({payout.client_reference!r}"
        head += f" of {payout.client.name})" if payout.client_id else ")"
        review = " [flagged for review]" if payout.review_flagged_at else ""
        line = f"{head}: ours {describe_ours(payout)}{review}; provider {describe(self.answer)}"
        return f"{line}; {self.why}" if self.why else line


def payouts_reconcile(
    *, since: datetime, until: datetime, provider: PayoutProvider | None = None
) -> Iterator[Check]:
    """Compare every payout created in [since, until) with the provider, one lookup each.

    Streams over the table (a server-side cursor), so memory stays flat however many payouts
    the period holds. Each lookup is bounded by PAYOUTS_PROVIDER_TIMEOUT_SECONDS.
    """
    provider = provider or get_provider()
    payouts = PayoutRequest.objects.filter(created_at__gte=since, created_at__lt=until)
    for payout in payouts.select_related("client").iterator(chunk_size=CHUNK_SIZE):
        yield judge(payout, _lookup(provider, payout))


def _lookup(provider: PayoutProvider, payout: PayoutRequest) -> LookupAnswer:
    key = str(payout.pk)
    return call_provider(
        payout,
        ProviderCallKind.LOOKUP,
        lambda deadline: provider.lookup(key, deadline=deadline),
        timeout=settings.PAYOUTS_PROVIDER_TIMEOUT_SECONDS,
        requested_by=EventActor.RECONCILE,
    )


def judge(payout: PayoutRequest, answer: LookupAnswer) -> Check:
    """Does the provider's answer agree with the payout's status? (see the module's table)"""
    if isinstance(answer, Unknown):
        return Check(payout, answer, Verdict.UNCHECKED)
    never_executed = isinstance(answer, NotFound | Canceled)
    match payout.status:
        case PayoutStatus.NEW | PayoutStatus.PROCESSING:
            if isinstance(answer, Pending | NotFound):
                return Check(payout, answer, Verdict.AGREES)
            return Check(payout, answer, Verdict.UNFINISHED, "the worker has yet to apply it")
        case PayoutStatus.PAID:
            if isinstance(answer, Executed):
                if differences := _paid_differences(payout, answer):
                    return Check(payout, answer, Verdict.MISMATCH, differences)
                return Check(payout, answer, Verdict.AGREES)
            return Check(payout, answer, Verdict.MISMATCH, "PAID, but the provider did not pay")
        case PayoutStatus.FAILED if payout.failure_code in NOT_EXECUTED_CODES:
            if never_executed:
                return Check(payout, answer, Verdict.AGREES)
            return Check(
                payout,
                answer,
                Verdict.MISMATCH,
                "FAILED as never executed, but the provider has it",
            )
        case PayoutStatus.FAILED:
            if isinstance(answer, Declined) and answer.code == payout.failure_code:
                return Check(payout, answer, Verdict.AGREES)
            if isinstance(answer, Declined):
                return Check(payout, answer, Verdict.MISMATCH, "the decline codes differ")
            return Check(
                payout, answer, Verdict.MISMATCH, "FAILED, but the provider did not decline"
            )
        case PayoutStatus.CANCELED:
            if never_executed:
                return Check(payout, answer, Verdict.AGREES)
            return Check(payout, answer, Verdict.MISMATCH, "CANCELED, but the provider has it")
    raise AssertionError(f"unexpected status {payout.status!r}")


def _paid_differences(payout: PayoutRequest, answer: Executed) -> str:
    differences = []
    if answer.reference != payout.provider_reference:
        differences.append("the references differ")
    if answer.amount is not None and Decimal(answer.amount) != payout.amount:
        differences.append("the amounts differ")
    if answer.currency and answer.currency != payout.currency:
        differences.append("the currencies differ")
    return ", ".join(differences)


def _money(amount: Decimal, currency: str) -> str:
    return f"{format_amount(amount, currency)} {currency}" if currency else str(amount)


def describe_ours(payout: PayoutRequest) -> str:
    text = f"{payout.status} {_money(payout.amount, payout.currency)}"
    if payout.failure_code:
        text += f" failure {payout.failure_code}"
    return text + f" reference {payout.provider_reference or '-'}"


def describe(answer: LookupAnswer) -> str:
    match answer:
        case Executed(reference=reference, amount=amount, currency=currency):
            paid = "" if amount is None else f" {_money(amount, currency)}"
            return f"executed{paid} reference {reference or '-'}"
        case Declined(code=code, reason=reason):
            return f"declined {code} ({reason})"
        case Canceled():
            return "canceled (never executed)"
        case Pending():
            return "pending (accepted, not settled yet)"
        case NotFound():
            return "not found (never accepted)"
        case Unknown(code=code, reason=reason):
            return f"no answer ({code}: {reason})"
    raise AssertionError(f"unexpected answer {answer!r}")
