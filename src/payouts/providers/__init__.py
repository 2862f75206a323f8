from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from .base import (
    PayoutDeclined,
    PayoutInstruction,
    PayoutPaid,
    PayoutProvider,
    PayoutResult,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
)
from .sandbox import SandboxProvider

__all__ = (
    "PayoutDeclined",
    "PayoutInstruction",
    "PayoutPaid",
    "PayoutProvider",
    "PayoutResult",
    "ProviderError",
    "ProviderPermanentError",
    "ProviderTransientError",
    "SandboxProvider",
    "get_provider",
)


def get_provider() -> PayoutProvider:
    """The adapter named by PAYOUTS_PROVIDER, configured from settings."""
    if settings.PAYOUTS_PROVIDER == "sandbox":
        return SandboxProvider(
            latency_ms=settings.PAYOUTS_SANDBOX_LATENCY_MS,
            failure_rate=settings.PAYOUTS_SANDBOX_FAILURE_RATE,
            timeout_seconds=settings.PAYOUTS_PROVIDER_TIMEOUT_SECONDS,
        )
    raise ImproperlyConfigured(f"Unknown PAYOUTS_PROVIDER {settings.PAYOUTS_PROVIDER!r}")
