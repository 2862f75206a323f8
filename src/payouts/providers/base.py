"""The payment-provider boundary: what the worker and the cancel path ask of any PSP adapter.

Three calls, each keyed by the payout id (the provider's idempotency key) and bounded by a
deadline (a `time.monotonic()` instant) the adapter must honour: past it, it gives up and
answers `Unknown`. None of them raises for an outcome; an exception out of an adapter is a bug,
and the caller treats it as the worst answer that call could have had (`Unknown`).

- ``execute``: make the payout, once per key; a repeat returns the first outcome.
- ``lookup``: what the provider knows of a key.
- ``cancel``: stop the payout if it has not settled; answered with the outcome if it has.

The answers tell apart what a merchant's money depends on:

- `Executed`: the provider paid it. `Declined`: it refused it; no money moved.
- `Canceled`: it will never execute under this key (canceled, or the key was voided before any
  payout arrived under it); no money moved.
- `NotExecuted` (execute only): definitely not executed by this call: refused before it was
  accepted (HTTP 503, 429, a connection refused before anything was sent). Safe to retry.
- `Pending` (lookup only): accepted, not settled yet. `NotFound` (lookup only): no payout was
  ever accepted under this key.
- `Unknown`: no answer (a timeout, a lost answer, a reset connection): an execute may or may
  not have been executed, and only a later answer of the provider can tell.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from django.db import connection


@dataclass(frozen=True, slots=True)
class PayoutInstruction:
    idempotency_key: str
    amount: Decimal
    currency: str
    destination: str


@dataclass(frozen=True, slots=True)
class Executed:
    reference: str
    # What the provider paid, when its answer says so (a lookup's does, as a PSP's payout record
    # does): reconciliation compares them with ours. None and "" when the answer does not say.
    amount: Decimal | None = None
    currency: str = ""


@dataclass(frozen=True, slots=True)
class Declined:
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Canceled:
    pass


@dataclass(frozen=True, slots=True)
class NotExecuted:
    code: str
    reason: str


@dataclass(frozen=True, slots=True)
class Pending:
    pass


@dataclass(frozen=True, slots=True)
class NotFound:
    pass


@dataclass(frozen=True, slots=True)
class Unknown:
    code: str
    reason: str


# A payout the provider has finished with: these are the only answers that end a payout.
Settled = Executed | Declined | Canceled
ExecuteAnswer = Settled | NotExecuted | Unknown
LookupAnswer = Settled | Pending | NotFound | Unknown
CancelAnswer = Settled | Unknown
ProviderAnswer = ExecuteAnswer | LookupAnswer


class PayoutProvider(Protocol):
    def execute(self, instruction: PayoutInstruction, *, deadline: float) -> ExecuteAnswer:
        """Execute the payout once per idempotency key; a repeat returns the first outcome."""
        ...

    def lookup(self, idempotency_key: str, *, deadline: float) -> LookupAnswer:
        """What the provider knows of the payout under this key."""
        ...

    def cancel(self, idempotency_key: str, *, deadline: float) -> CancelAnswer:
        """Cancel the payout unless it has settled (then: its outcome).

        `Canceled` also when no payout was ever accepted under the key: the key is voided, so
        an execute that arrives later (a request still in flight) is refused, never paid.
        """
        ...


def release_database_connection() -> None:
    """Give this thread's pooled database connection back before waiting on a provider.

    A provider call lasts as long as the provider takes; a connection held across it would cap
    the calls in flight at the pool's size (and idle a server connection per call). Outside a
    transaction only, and only with the pool: a plain connection would be closed, not reused.
    The next query takes a connection from the pool again.
    """
    if not connection.in_atomic_block and connection.settings_dict.get("OPTIONS", {}).get("pool"):
        connection.close()
