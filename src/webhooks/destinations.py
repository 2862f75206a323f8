"""Where webhooks may go: an absolute https URL whose host resolves to public addresses only.

A webhook makes our server send a request to a URL a client chose, so an unchecked URL would
let any client reach what only our network can (a metadata service at 169.254.169.254, an
admin port on localhost, a database on 10.x): server-side request forgery. `check_destination`
runs when an endpoint is registered or changed and again before each delivery, since what a
name resolves to can change. Local runs and tests, whose receivers listen on 127.0.0.1 over
plain http, turn the two relaxations on (PAYOUTS_WEBHOOKS_ALLOW_HTTP, _ALLOW_PRIVATE).

Written here with the standard library (urllib.parse, socket, ipaddress): the one Python
library for this, `advocate`, has been unmaintained since 2020 and wraps `requests` sessions
rather than checking a URL.
"""

import ipaddress
import socket
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from urllib.parse import urlsplit

from django.conf import settings

MAX_URL_LENGTH = 2048
# getaddrinfo has no timeout of its own (the system resolver may retry for 30 s or more): it
# runs on this pool and its caller waits this long at most. A lookup that overruns keeps its
# thread until the resolver gives up; the pool bounds how many can.
RESOLVE_TIMEOUT_SECONDS = 3.0
_resolver = ThreadPoolExecutor(max_workers=8, thread_name_prefix="webhook-dns")

# The codes, each in api/errors.py's ANSWERS.
INVALID = "webhook_url_invalid"
NOT_HTTPS = "webhook_url_not_https"
UNRESOLVABLE = "webhook_url_unresolvable"
PRIVATE = "webhook_url_private"
CODES = (INVALID, NOT_HTTPS, UNRESOLVABLE, PRIVATE)

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeDestination(Exception):
    """A URL webhooks must not be sent to; `code` (one of CODES) says why, `message` to whom."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def check_destination(url: str) -> None:
    """Raise UnsafeDestination unless `url` is one webhooks may be POSTed to now."""
    host, port = _parse(url)
    allow_private = settings.PAYOUTS_WEBHOOKS_ALLOW_PRIVATE
    for address in _resolve(host, port):
        if not allow_private and (kind := _non_public_kind(address)):
            shown = host if host == str(address) else f"{host} resolves to {address}, which"
            raise UnsafeDestination(
                PRIVATE,
                f"{shown} is a {kind} address; webhooks are sent to public addresses only.",
            )


def _parse(url: str) -> tuple[str, int]:
    """The URL's host and port, if it is a well-formed absolute http(s) URL we may use."""
    if not isinstance(url, str) or not url:
        raise UnsafeDestination(INVALID, "Give the URL as a non-empty string.")
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeDestination(INVALID, f"The URL is longer than {MAX_URL_LENGTH} characters.")
    if any(character <= " " or character == "\x7f" for character in url):
        raise UnsafeDestination(
            INVALID, "The URL contains spaces or control characters; percent-encode them."
        )
    try:
        parts = urlsplit(url)
        scheme, host, port = parts.scheme.lower(), parts.hostname, parts.port
    except ValueError as exc:  # a bad port, an unbalanced [ ]
        raise UnsafeDestination(INVALID, f"The URL is malformed: {exc}.") from None
    if scheme not in ("http", "https") or not host:
        raise UnsafeDestination(
            INVALID, "Give an absolute URL with a host, such as https://example.com/webhooks."
        )
    if scheme == "http" and not settings.PAYOUTS_WEBHOOKS_ALLOW_HTTP:
        raise UnsafeDestination(
            NOT_HTTPS, "Webhooks are sent over https only; give an https:// URL."
        )
    if parts.username is not None or parts.password is not None:
        raise UnsafeDestination(
            INVALID,
            "The URL must not carry credentials (user:password@); verify our signatures instead.",
        )
    if port == 0:
        raise UnsafeDestination(INVALID, "The URL's port must be 1-65535.")
    return host, port or (443 if scheme == "https" else 80)


def _resolve(host: str, port: int) -> list[IpAddress]:
    """Every address `host` resolves to (an IP literal is its own), within the timeout."""
    try:
        future = _resolver.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
        infos = future.result(timeout=RESOLVE_TIMEOUT_SECONDS)
    except FutureTimeout:
        raise UnsafeDestination(
            UNRESOLVABLE, f"{host} did not resolve within {RESOLVE_TIMEOUT_SECONDS:g} s."
        ) from None
    except (OSError, UnicodeError):  # gaierror is an OSError; a bad IDNA label a UnicodeError
        raise UnsafeDestination(UNRESOLVABLE, f"{host} does not resolve to an address.") from None
    addresses: list[IpAddress] = []
    for family, _, _, _, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        # An IPv6 sockaddr may name its zone ("fe80::1%eth0").
        addresses.append(ipaddress.ip_address(str(sockaddr[0]).partition("%")[0]))
    if not addresses:
        raise UnsafeDestination(UNRESOLVABLE, f"{host} does not resolve to an IP address.")
    return addresses


def _non_public_kind(address: IpAddress) -> str | None:
    """What makes the address non-public ("loopback", "private", ...), or None if it is public."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address inside an IPv6 one reaches that IPv4 host: judge the IPv4 address.
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return _non_public_kind(embedded)
    for kind, flag in (
        ("unspecified", address.is_unspecified),
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("reserved", address.is_reserved),  # before private, which includes 240.0.0.0/4
        ("private", address.is_private),
        # The rest that is not globally routable: shared address space (100.64.0.0/10), ...
        ("non-global", not address.is_global),
    ):
        if flag:
            return kind
    return None
