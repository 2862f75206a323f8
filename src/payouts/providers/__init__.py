from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

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
    PayoutProvider,
    Pending,
    ProviderAnswer,
    Settled,
    Unknown,
    release_database_connection,
)
from .sandbox import SandboxProvider

__all__ = (
    "CancelAnswer",
    "Canceled",
    "Declined",
    "ExecuteAnswer",
    "Executed",
    "LookupAnswer",
    "NotExecuted",
    "NotFound",
    "PayoutInstruction",
    "PayoutProvider",
    "Pending",
    "ProviderAnswer",
    "SandboxProvider",
    "Settled",
    "Unknown",
    "get_provider",
    "release_database_connection",
)


def get_provider() -> PayoutProvider:
    """The adapter named by PAYOUTS_PROVIDER, configured from settings."""
    if settings.PAYOUTS_PROVIDER == "sandbox":
        return SandboxProvider(
            latency_ms=settings.PAYOUTS_SANDBOX_LATENCY_MS,
            failure_rate=settings.PAYOUTS_SANDBOX_FAILURE_RATE,
        )
    raise ImproperlyConfigured(f"Unknown PAYOUTS_PROVIDER {settings.PAYOUTS_PROVIDER!r}")
