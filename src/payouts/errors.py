"""Domain errors: what went wrong in payout terms, knowing nothing of HTTP.

Services and selectors raise these; the table in api/errors.py gives each its HTTP answer.
"""

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import PayoutRequest


class PayoutError(Exception):
    """Base of the domain errors."""


class PayoutNotFound(PayoutError):
    """Unknown id, malformed id, or another client's payout: indistinguishable on purpose."""


class ClientReferenceConflict(PayoutError):
    """The client_reference is taken by a payout with different data (`fields` differ)."""

    def __init__(self, existing: "PayoutRequest", fields: list[str]) -> None:
        super().__init__(f"client_reference {existing.client_reference!r} differs in {fields}")
        self.existing = existing
        self.fields = fields


class PayoutNotCancelable(PayoutError):
    """The payout is final (PAID, FAILED, CANCELED); `payout` holds its current state."""

    def __init__(self, payout: "PayoutRequest") -> None:
        super().__init__(f"payout {payout.pk} is {payout.status}")
        self.payout = payout


class CancelUnconfirmed(PayoutError):
    """A call may have reached the provider and it did not answer the cancel: nothing changed."""

    def __init__(self, payout: "PayoutRequest", detail: str) -> None:
        super().__init__(f"payout {payout.pk}: the provider did not confirm the cancel ({detail})")
        self.payout = payout
        self.detail = detail
