"""Where a webhook may be sent: https only, and never to our own network.

`check_destination` is asked when an endpoint is registered and again before every delivery
(DNS can change between the two). Local runs and tests allow plain http and private addresses
(PAYOUTS_WEBHOOKS_ALLOW_HTTP, PAYOUTS_WEBHOOKS_ALLOW_PRIVATE).
"""

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings


class UnsafeDestination(Exception):
    """A webhook URL we refuse to call; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _is_internal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_destination(url: str) -> None:
    """Return if `url` may receive webhooks; else raise UnsafeDestination saying why."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise UnsafeDestination("webhook_url_invalid", f"Not a valid URL: {exc}.") from None
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise UnsafeDestination("webhook_url_invalid", "The URL must be http(s)://host/...")
    if parts.scheme != "https" and not settings.PAYOUTS_WEBHOOKS_ALLOW_HTTP:
        raise UnsafeDestination("webhook_url_not_https", "Webhook URLs must use https.")
    if settings.PAYOUTS_WEBHOOKS_ALLOW_PRIVATE:
        return
    try:
        resolved = socket.getaddrinfo(
            parts.hostname,
            port or (443 if parts.scheme == "https" else 80),
            type=socket.SOCK_STREAM,
        )
    except (socket.gaierror, UnicodeError):
        raise UnsafeDestination(
            "webhook_url_unresolvable", f"The host {parts.hostname!r} does not resolve."
        ) from None
    for _family, _type, _proto, _name, sockaddr in resolved:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if _is_internal(address):
            raise UnsafeDestination(
                "webhook_url_private",
                f"The host {parts.hostname!r} resolves to {address}, a private, loopback or "
                "link-local address.",
            )
