"""The money invariant (SPEC.md), checked against the sandbox provider's ledger.

One checker for every test that runs a worker: each payout's status is compared with what the
sandbox ledger says happened to the money under its id (the idempotency key).

- PAID: the ledger executed it, exactly once (one row, outcome paid), with the same amount,
  currency and destination, and the payout's provider_reference is the ledger's reference.
- FAILED: the ledger did not pay it (and will not: no pending row). A FAILED payout whose
  ledger row is a decline carries that decline's code, and one with the code of a decline
  has that decline in the ledger; any other FAILED one has a not-executed code of ours
  (provider_unavailable, processing_error).
- CANCELED: the ledger never executed it: no row, only refused calls, or canceled. A paid, a
  declined or a still pending row is a contradiction.
- NEW and PROCESSING are unfinished: listed, not judged (the caller decides whether any may be
  left).

The ledger settles lazily (an accepted payout stays "pending" in its row until a call past
settles_at settles it), so a pending row past its settlement time is read as what it settles
to: the checker reads, it never calls the provider (a lookup would change the ledger).
Payouts are read before their ledger rows: a final status read first had its ledger settled.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.utils import timezone

from payouts.models import PayoutRequest, PayoutStatus, SandboxLedgerEntry, SandboxOutcome

# What a ledger row means for the money, once lazy settlement is taken into account.
NO_ROW = "no row"
EXECUTED = SandboxOutcome.PAID.value
DECLINED = SandboxOutcome.DECLINED.value
CANCELED = SandboxOutcome.CANCELED.value
RECEIVED = "received"  # calls arrived, every one refused before it was accepted
PENDING = SandboxOutcome.PENDING.value  # accepted, may still be paid

NOT_EXECUTED = frozenset({NO_ROW, CANCELED, RECEIVED})
# The failure codes of our own (not the provider's declines): the provider never executed it.
NOT_EXECUTED_FAILURE_CODES = frozenset({"provider_unavailable", "processing_error"})


@dataclass(frozen=True)
class Violation:
    payout_id: str
    problem: str
    payout: dict[str, Any]
    ledger: dict[str, Any] | None

    def __str__(self) -> str:
        return (
            f"payout {self.payout_id}: {self.problem}\n"
            f"    payout: {self.payout}\n    ledger: {self.ledger}"
        )


@dataclass
class InvariantReport:
    checked: int = 0
    violations: list[Violation] = field(default_factory=list)
    # (payout id, status, review reason or "") of every NEW or PROCESSING payout.
    unfinished: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not self.violations

    def __str__(self) -> str:
        lines = [
            f"money invariant: {self.checked} payouts checked, {len(self.violations)} "
            f"violations, {len(self.unfinished)} unfinished"
        ]
        lines += [str(violation) for violation in self.violations]
        lines += [f"unfinished: {pid} {status} {reason}" for pid, status, reason in self.unfinished]
        return "\n".join(lines)


def ledger_outcome(entry: SandboxLedgerEntry | None, now: Any = None) -> str:
    """What the ledger row means for the money now (a due pending row is read as settled)."""
    if entry is None:
        return NO_ROW
    if entry.outcome == SandboxOutcome.PENDING:
        now = now or timezone.now()
        if entry.settles_at is not None and entry.settles_at <= now:
            return DECLINED if entry.decline_code else EXECUTED
        return PENDING
    if entry.outcome == SandboxOutcome.RECEIVED:
        return RECEIVED
    return str(entry.outcome)


def _payout_side(payout: PayoutRequest) -> dict[str, Any]:
    return {
        "status": payout.status,
        "amount": str(payout.amount),
        "currency": payout.currency,
        "destination": payout.destination,
        "provider_reference": payout.provider_reference,
        "failure_code": payout.failure_code,
        "attempts": payout.attempts,
        "execute_started_at": payout.execute_started_at,
    }


def _ledger_side(entry: SandboxLedgerEntry, outcome: str) -> dict[str, Any]:
    return {
        "outcome": outcome,
        "stored_outcome": entry.outcome or RECEIVED,
        "amount": str(entry.amount),
        "currency": entry.currency,
        "destination": entry.destination,
        "reference": entry.reference,
        "decline_code": entry.decline_code,
        "calls": entry.calls,
        "lookup_calls": entry.lookup_calls,
        "cancel_calls": entry.cancel_calls,
    }


def _problems(payout: PayoutRequest, entries: list[SandboxLedgerEntry], now: Any) -> list[str]:
    if len(entries) > 1:
        return [f"{len(entries)} ledger rows under one idempotency key"]
    entry = entries[0] if entries else None
    outcome = ledger_outcome(entry, now)
    status = payout.status
    if status == PayoutStatus.PAID:
        if entry is None or outcome != EXECUTED:
            return [f"PAID but the ledger says {outcome}"]
        problems = []
        if (entry.amount, entry.currency, entry.destination) != (
            payout.amount,
            payout.currency,
            payout.destination,
        ):
            problems.append("PAID with another amount, currency or destination than the ledger")
        if not payout.provider_reference or payout.provider_reference != entry.reference:
            problems.append("PAID with a provider_reference that is not the ledger's reference")
        return problems
    if status == PayoutStatus.FAILED:
        if outcome in (EXECUTED, PENDING):
            return [f"FAILED but the ledger says {outcome} (money moved or may move)"]
        if outcome == DECLINED:
            assert entry is not None
            if payout.failure_code != entry.decline_code:
                return [
                    f"FAILED {payout.failure_code!r} but the ledger declined it with "
                    f"{entry.decline_code!r}"
                ]
        elif payout.failure_code not in NOT_EXECUTED_FAILURE_CODES:
            return [f"FAILED with the decline {payout.failure_code!r}, ledger says {outcome}"]
        return []
    if status == PayoutStatus.CANCELED:
        if outcome not in NOT_EXECUTED:
            return [f"CANCELED but the ledger says {outcome}"]
        return []
    return []


def check_money_invariant(payout_ids: Iterable[Any] | None = None) -> InvariantReport:
    """Compare the given payouts (all when None) with the sandbox ledger; never writes."""
    payouts = PayoutRequest.objects.order_by("created_at", "id")
    if payout_ids is not None:
        payouts = payouts.filter(pk__in=[str(pid) for pid in payout_ids])
    report = InvariantReport()
    rows = list(payouts)
    ledger: dict[str, list[SandboxLedgerEntry]] = {}
    keys = [str(payout.pk) for payout in rows]
    for start in range(0, len(keys), 1000):
        batch = keys[start : start + 1000]
        for entry in SandboxLedgerEntry.objects.filter(idempotency_key__in=batch):
            ledger.setdefault(entry.idempotency_key, []).append(entry)
    now = timezone.now()
    for payout in rows:
        report.checked += 1
        if payout.status in (PayoutStatus.NEW, PayoutStatus.PROCESSING):
            report.unfinished.append((str(payout.pk), payout.status, payout.review_reason))
            continue
        entries = ledger.get(str(payout.pk), [])
        for problem in _problems(payout, entries, now):
            report.violations.append(
                Violation(
                    payout_id=str(payout.pk),
                    problem=problem,
                    payout=_payout_side(payout),
                    ledger=(
                        _ledger_side(entries[0], ledger_outcome(entries[0], now))
                        if entries
                        else None
                    ),
                )
            )
    return report


class MoneyInvariantAssertions:
    """Mixin for a TestCase: assert that no payout's status contradicts the ledger."""

    def assertMoneyInvariant(
        self, payout_ids: Iterable[Any] | None = None, *, finished: bool = False
    ) -> InvariantReport:
        """No violation; with `finished`, no payout left NEW or PROCESSING unless flagged."""
        report = check_money_invariant(payout_ids)
        if report.violations:
            raise AssertionError(str(report))
        if finished:
            stuck = [row for row in report.unfinished if not row[2]]
            if stuck:
                raise AssertionError(f"unfinished and not flagged for review:\n{report}")
        return report
