"""Domain errors of the notifications, knowing nothing of HTTP (payouts/api/errors.py maps them).

A refused webhook URL is `destinations.UnsafeDestination`, beside the rules that refuse it.
"""


class WebhookError(Exception):
    """Base of the notification errors."""


class WebhookEndpointNotFound(WebhookError):
    """Unknown id, malformed id, or another client's endpoint: indistinguishable on purpose."""


class WebhookDeliveryNotFound(WebhookError):
    """No such delivery to this endpoint (or a malformed id)."""


class WebhookEndpointLimitReached(WebhookError):
    """The client already has as many endpoints as one may."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"at most {limit} webhook endpoints per client")
        self.limit = limit


class WebhookEndpointDisabled(WebhookError):
    """A delivery to a disabled endpoint cannot be replayed: enable the endpoint first."""
