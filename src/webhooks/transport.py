"""The HTTP POST of a webhook: to the address we checked, and never longer than its deadline.

Two guards urllib3 does not give by itself:

- The peer check. The destination is checked when the URL is registered and again before each
  attempt, but the name is resolved once more when the connection is made: a DNS answer that
  changes in between (rebinding) would reach an internal address. So every new connection's
  actual peer address is checked too, and refused unless it is public (or
  PAYOUTS_WEBHOOKS_ALLOW_PRIVATE).
- A wall-clock deadline. urllib3's timeouts bound each socket operation, so a receiver that
  trickles a byte at a time holds the attempt for ever. A timer shuts the socket down at the
  deadline, whatever is being read.

One pool per attempt, one connection in it: receivers are many and rarely repeat within a
connection's lifetime, and a pool of our own lets the connection class carry the deadline.
"""

import contextlib
import ipaddress
import socket
import threading
import time
from typing import Any

import urllib3
from django.conf import settings
from urllib3.connectionpool import connection_from_url

from .destinations import _non_public_kind


class PeerRefused(OSError):
    """The connection reached an address webhooks may not be sent to."""


def post(
    url: str, *, body: bytes, headers: dict[str, str], deadline: float, read_bytes: int
) -> tuple[int, dict[str, str], bytes]:
    """POST `body`; (status, headers, the first `read_bytes` of the answer). Raises OSError or
    urllib3's HTTPError when there is no answer (refused peer, timeout, deadline, reset)."""
    timers: list[threading.Timer] = []
    pool = connection_from_url(url, maxsize=1, retries=False)
    pool.ConnectionCls = _guarded(pool.ConnectionCls, deadline, timers)
    remaining = max(deadline - time.monotonic(), 0.001)
    try:
        response = pool.urlopen(
            "POST",
            urllib3.util.parse_url(url).request_uri,
            body=body,
            headers=headers,
            timeout=urllib3.Timeout(connect=remaining, read=remaining),
            redirect=False,
            retries=False,
            preload_content=False,
            assert_same_host=False,
        )
        try:
            data = response.read(read_bytes)
        finally:
            response.close()
        return int(response.status), dict(response.headers), data
    finally:
        for timer in timers:
            timer.cancel()
        pool.close()


def _guarded(base: Any, deadline: float, timers: list[threading.Timer]) -> Any:
    class GuardedConnection(base):
        def _new_conn(self) -> socket.socket:
            sock: socket.socket = super()._new_conn()
            peer = ipaddress.ip_address(sock.getpeername()[0])
            kind = None if settings.PAYOUTS_WEBHOOKS_ALLOW_PRIVATE else _non_public_kind(peer)
            if kind:
                sock.close()
                raise PeerRefused(f"destination refused: connected to {peer}, a {kind} address")
            timer = threading.Timer(max(deadline - time.monotonic(), 0), _cut, args=(sock,))
            timer.daemon = True
            timer.start()
            timers.append(timer)
            return sock

    return GuardedConnection


def _cut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
