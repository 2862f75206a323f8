"""The payment-provider boundary: what the worker asks of any PSP adapter.

An adapter executes one payout instruction and either returns a result (paid or declined) or
raises one of two error kinds: transient (retry later with the same idempotency key) or
permanent (retrying cannot help). The payout id is the idempotency key, so a retried or
duplicated call never moves money twice.
"""

from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol


@dataclass(frozen=True, slots=True)
class PayoutInstruction:
    idempotency_key: str
    amount: Decimal
    currency: str
    destination: str


@dataclass(frozen=True, slots=True)
class PayoutPaid:
    reference: str


@dataclass(frozen=True, slots=True)
class PayoutDeclined:
    code: str
    reason: str


PayoutResult = PayoutPaid | PayoutDeclined


class ProviderError(Exception):
    def __init__(self, code: str, reason: str) -> None:
        super().__init__(f"{code}: {reason}")
        self.code = code
        self.reason = reason


class ProviderTransientError(ProviderError):
    """Timeouts, 5xx, rate limits: the same call may succeed later."""


class ProviderPermanentError(ProviderError):
    """The provider rejected the call itself (bad credentials, malformed request)."""


class PayoutProvider(Protocol):
    def execute(self, instruction: PayoutInstruction) -> PayoutResult:
        """Execute the payout once per idempotency key; a repeat returns the first outcome."""
        ...

    def lookup(self, idempotency_key: str) -> PayoutResult | None:
        """The outcome of a payout executed under this key, or None if it never was.

        Asked before giving up on a payout whose calls kept timing out: a timeout does not
        mean the provider did not execute it.
        """
        ...
