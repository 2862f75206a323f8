"""A sandbox PSP: behaves like a real payout provider, moves no money.

An accepted payout is pending for the provider's latency and settles at the end of it, paid or
declined (a configurable share at random, with realistic codes); until then it can be canceled.
An execute call waits for the settlement (at most until its deadline: then it answers Unknown,
and the payout still settles). A few destinations are deterministic test cases, like a real
PSP's test account numbers:

    sandbox:success              always paid (ignores the random failure rate)
    sandbox:decline:<code>       always declined with <code>, e.g. sandbox:decline:account_closed
    sandbox:transient:<n>        the first n execute calls are refused (HTTP 503), then paid
    sandbox:unreachable          every execute call is refused before it is sent (connection
                                 refused): never executed
    sandbox:hang                 no execute call is ever answered (each one times out) and
                                 none is executed; lookups and cancels answer
    sandbox:lost                 paid, but the answer of the first execute call is lost (a
                                 timeout); later calls and lookups return the payment
    sandbox:lost-lookup-down:<n> as lost, and the first n lookups are refused (HTTP 503)
    sandbox:cancel-refused       paid normally; every cancel of it is refused (HTTP 503) once
                                 the sandbox has received the payout
    sandbox:slow:<ms>            paid, pending for <ms> milliseconds instead of the latency
    sandbox:error                every execute call raises in the adapter (a bug) before it
                                 reaches the provider: lookups find nothing, cancels void the key

Everything is recorded in its ledger (SandboxLedgerEntry) under the idempotency key, and every
change of an entry is a compare-and-set, so concurrent calls cannot execute a payout twice.
"""

import random
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from ..models import SandboxLedgerEntry, SandboxOutcome
from .base import (
    CancelAnswer,
    Canceled,
    Declined,
    ExecuteAnswer,
    Executed,
    LookupAnswer,
    NotExecuted,
    NotFound,
    PayoutInstruction,
    Pending,
    Settled,
    Unknown,
    release_database_connection,
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
    r"|transient:(?P<transient>\d{1,3})|(?P<unreachable>unreachable)|(?P<hang>hang)"
    r"|(?P<lost>lost)(?:-lookup-down:(?P<lookup_down>\d{1,3}))?"
    r"|(?P<cancel_refused>cancel-refused)|slow:(?P<slow>\d{1,6})|(?P<error>error))"
)

REFUSED = NotExecuted("provider_unavailable", "The provider answered HTTP 503 Service Unavailable.")
CONNECTION_REFUSED = NotExecuted(
    "provider_unreachable", "The connection to the provider was refused."
)
TIMEOUT = Unknown("provider_timeout", "The provider did not answer in time.")


@dataclass(frozen=True, slots=True)
class TestCase:
    """What a destination asks of the sandbox (all false: an ordinary payout)."""

    match: re.Match[str] | None

    def __getitem__(self, name: str) -> str | None:
        return self.match[name] if self.match else None

    @property
    def deterministic(self) -> bool:
        return self.match is not None


def _test_case(destination: str) -> TestCase:
    return TestCase(TEST_DESTINATION.fullmatch(destination))


class SandboxProvider:
    def __init__(self, *, latency_ms: int, failure_rate: float) -> None:
        self.latency_seconds = latency_ms / 1000
        self.failure_rate = failure_rate

    # --- the three calls ------------------------------------------------------------------

    def execute(self, instruction: PayoutInstruction, *, deadline: float) -> ExecuteAnswer:
        case = _test_case(instruction.destination)
        if case["error"]:
            raise RuntimeError("sandbox:error: the adapter failed before sending the call")
        if case["unreachable"]:
            return CONNECTION_REFUSED
        entry = self._receive(instruction)
        if entry.outcome == SandboxOutcome.CANCELED:
            return Canceled()
        if (entry.amount, entry.currency, entry.destination) != (
            instruction.amount,
            instruction.currency,
            instruction.destination,
        ):
            return Declined(
                "idempotency_key_reused",
                "The idempotency key was already used for a different payout.",
            )
        if case["hang"]:
            _sleep_until(deadline)
            return TIMEOUT
        if entry.outcome == SandboxOutcome.RECEIVED:
            if case["transient"] and entry.calls <= int(case["transient"]):
                _sleep_until(min(deadline, time.monotonic() + self.latency_seconds))
                return REFUSED
            self._accept(entry, case)
        answer = self._wait_for_settlement(entry, deadline)
        if case["lost"] and entry.calls == 1:
            return Unknown("provider_timeout", "The provider did not answer in time.")
        return answer

    def lookup(self, idempotency_key: str, *, deadline: float) -> LookupAnswer:
        entry = SandboxLedgerEntry.objects.filter(idempotency_key=idempotency_key).first()
        if entry is None:
            return NotFound()
        case = _test_case(entry.destination)
        SandboxLedgerEntry.objects.filter(pk=entry.pk).update(lookup_calls=F("lookup_calls") + 1)
        entry.refresh_from_db()
        if case["lookup_down"] and entry.lookup_calls <= int(case["lookup_down"]):
            return Unknown(REFUSED.code, REFUSED.reason)
        self._settle_if_due(entry)
        if entry.outcome == SandboxOutcome.RECEIVED:
            return NotFound()  # only refused calls: no payout was ever accepted
        if entry.outcome == SandboxOutcome.PENDING:
            return Pending()
        return _settled(entry)

    def cancel(self, idempotency_key: str, *, deadline: float) -> CancelAnswer:
        with transaction.atomic():
            # A key never seen is voided: an execute arriving later is refused (Canceled).
            entry, _ = SandboxLedgerEntry.objects.get_or_create(
                idempotency_key=idempotency_key,
                defaults={
                    "amount": 0,
                    "outcome": SandboxOutcome.CANCELED,
                    "canceled_at": timezone.now(),
                },
            )
            SandboxLedgerEntry.objects.filter(pk=entry.pk).update(
                cancel_calls=F("cancel_calls") + 1
            )
        if _test_case(entry.destination)["cancel_refused"]:
            return Unknown(REFUSED.code, REFUSED.reason)
        now = timezone.now()
        # Refused calls only, or accepted and not settled yet: cancel, unless it settled first.
        SandboxLedgerEntry.objects.filter(pk=entry.pk, outcome=SandboxOutcome.RECEIVED).update(
            outcome=SandboxOutcome.CANCELED, canceled_at=now
        )
        SandboxLedgerEntry.objects.filter(
            pk=entry.pk, outcome=SandboxOutcome.PENDING, settles_at__gt=now
        ).update(outcome=SandboxOutcome.CANCELED, canceled_at=now)
        entry.refresh_from_db()
        self._settle_if_due(entry)
        return _settled(entry)

    # --- the ledger -----------------------------------------------------------------------

    def _receive(self, instruction: PayoutInstruction) -> SandboxLedgerEntry:
        """The entry of this key, with the call counted: one upsert, one round-trip.

        INSERT ... ON CONFLICT DO UPDATE ... RETURNING (PostgreSQL, SQLite 3.35+): the first
        call creates the entry, every call counts, concurrent calls serialize on the key. The
        ORM's get_or_create plus an update took eight round-trips for the same.
        """
        new = SandboxLedgerEntry(
            idempotency_key=instruction.idempotency_key,
            amount=instruction.amount,
            currency=instruction.currency,
            destination=instruction.destination,
            calls=1,
        )
        fields = [
            field for field in SandboxLedgerEntry._meta.concrete_fields if not field.primary_key
        ]
        # The ORM's own insert path: pre_save fills auto_now_add, the instance holds defaults.
        params = [
            field.get_db_prep_save(field.pre_save(new, add=True), connection) for field in fields
        ]
        table = connection.ops.quote_name(SandboxLedgerEntry._meta.db_table)
        columns = ", ".join(connection.ops.quote_name(str(field.column)) for field in fields)
        calls = connection.ops.quote_name("calls")
        sql = (
            f"INSERT INTO {table} ({columns}) VALUES ({', '.join(['%s'] * len(fields))})"
            f" ON CONFLICT ({connection.ops.quote_name('idempotency_key')})"
            f" DO UPDATE SET {calls} = {table}.{calls} + 1 RETURNING *"
        )
        [entry] = SandboxLedgerEntry.objects.raw(sql, params)  # read to the end: one row
        return entry

    def _accept(self, entry: SandboxLedgerEntry, case: TestCase) -> None:
        """RECEIVED -> PENDING with the outcome it will settle to (a concurrent call may win)."""
        latency = int(case["slow"]) / 1000 if case["slow"] else self.latency_seconds
        values: dict[str, object] = {
            "outcome": SandboxOutcome.PENDING,
            "settles_at": timezone.now() + timedelta(seconds=latency),
        }
        code = case["decline"]
        if not code and not case.deterministic and random.random() < self.failure_rate:
            code = random.choice(RANDOM_DECLINE_CODES)
        if code:
            values |= {
                "decline_code": code,
                "decline_reason": DECLINE_REASONS.get(code, f"Declined by the bank ({code})."),
            }
        else:
            values["reference"] = f"sbx_po_{secrets.token_hex(12)}"
        if SandboxLedgerEntry.objects.filter(pk=entry.pk, outcome=SandboxOutcome.RECEIVED).update(
            **values
        ):
            for name, value in values.items():
                setattr(entry, name, value)
        else:
            entry.refresh_from_db()  # a concurrent call accepted (or a cancel voided) it first

    def _wait_for_settlement(self, entry: SandboxLedgerEntry, deadline: float) -> ExecuteAnswer:
        """Wait until the payout settles (or is canceled), or the deadline passes: Unknown."""
        while entry.outcome == SandboxOutcome.PENDING:
            assert entry.settles_at is not None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return TIMEOUT  # it still settles, without us
            wait = (entry.settles_at - timezone.now()).total_seconds()
            release_database_connection()  # a remote PSP's wait holds none of ours
            time.sleep(min(max(wait, 0), remaining))
            self._settle_if_due(entry)
        return _settled(entry)

    @staticmethod
    def _settle_if_due(entry: SandboxLedgerEntry) -> None:
        """PENDING -> PAID or DECLINED once settles_at has passed (unless canceled first)."""
        if entry.outcome == SandboxOutcome.PENDING:
            now = timezone.now()
            outcome = SandboxOutcome.DECLINED if entry.decline_code else SandboxOutcome.PAID
            if SandboxLedgerEntry.objects.filter(
                pk=entry.pk, outcome=SandboxOutcome.PENDING, settles_at__lte=now
            ).update(outcome=outcome, executed_at=now):
                entry.outcome, entry.executed_at = outcome, now
            else:
                entry.refresh_from_db()  # not due yet, or settled or canceled meanwhile


def _settled(entry: SandboxLedgerEntry) -> Settled:
    if entry.outcome == SandboxOutcome.PAID:
        return Executed(reference=entry.reference, amount=entry.amount, currency=entry.currency)
    if entry.outcome == SandboxOutcome.DECLINED:
        return Declined(entry.decline_code, entry.decline_reason)
    assert entry.outcome == SandboxOutcome.CANCELED, entry.outcome
    return Canceled()


def _sleep_until(deadline: float) -> None:
    release_database_connection()
    time.sleep(max(deadline - time.monotonic(), 0))
