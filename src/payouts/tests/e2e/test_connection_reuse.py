"""Keep-alive after a refused body, against a real gunicorn over raw sockets.

Gunicorn drains at most 64 KiB of a body the application did not read, then drops the
connection. A response sent before the body was read must therefore say `Connection: close`,
or a client that reuses the connection (as the response invited it to) loses its next request.
"""

import contextlib
import json
import socket
import threading
import unittest
from dataclasses import dataclass

from django.test import TransactionTestCase

from payouts.models import ApiClient, ApiKey

from .support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    ServiceLogsOnFailure,
    ServiceProcess,
    free_port,
    start_gunicorn,
)

ONE_MB = 1024 * 1024
TIMEOUT = 15.0


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def keeps_alive(self) -> bool:
        return self.headers.get("connection", "keep-alive").lower() != "close"


class RawConnection:
    """One TCP connection speaking HTTP/1.1 by hand: nothing hides what the server sent."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
        self.buffer = b""
        self.sender: threading.Thread | None = None

    def send(self, data: bytes) -> None:
        # In a thread: the server stops reading a refused body, so a large sendall would block
        # until the server closes; the response is read meanwhile.
        def send_all() -> None:
            # OSError: the server closed while the rest of the body was still in flight.
            with contextlib.suppress(OSError):
                self.sock.sendall(data)

        self.sender = threading.Thread(target=send_all, daemon=True)
        self.sender.start()

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buffer += chunk
        return bool(chunk)

    def read_response(self) -> HttpResponse:
        """One whole response (head and Content-Length body); raises if the connection ends."""
        while b"\r\n\r\n" not in self.buffer:
            if not self._fill():
                raise ConnectionError(f"closed before a response head: {self.buffer[:200]!r}")
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers["content-length"])
        while len(self.buffer) < length:
            if not self._fill():
                raise ConnectionError("closed in the middle of a response body")
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return HttpResponse(int(status_line.split()[1]), headers, body)

    def ending(self) -> str:
        """How the connection ends after the responses read: "eof" (a clean close) or "reset"."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            return "reset"
        except TimeoutError:
            return "still open"
        return "eof" if not self.buffer else f"more data: {self.buffer[:100]!r}"

    def close(self) -> None:
        self.sock.close()
        if self.sender:
            self.sender.join(timeout=TIMEOUT)


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class ConnectionAfterRefusedBodyTests(ServiceLogsOnFailure, TransactionTestCase):
    web: ServiceProcess
    port: int

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.port = free_port()
        try:
            cls.web = start_gunicorn(cls.port, WEB_CONCURRENCY="1")
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            cls.web.stop()
            cls.web.remove_log()
        finally:
            super().tearDownClass()

    def service_processes(self) -> list[ServiceProcess]:
        return [self.web]

    def setUp(self) -> None:
        client = ApiClient.objects.create(name="keep-alive merchant")
        _, self.key = ApiKey.objects.create_key(name="keep-alive", client=client)

    def tearDown(self) -> None:
        self.print_logs_if_failed()

    def head(self, method: str, path: str, *lines: str, auth: bool = True) -> bytes:
        request = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *lines]
        if auth:
            request.append(f"Authorization: Bearer {self.key}")
        return ("\r\n".join(request) + "\r\n\r\n").encode()

    def list_request(self) -> bytes:
        return self.head("GET", "/api/v1/payout-requests/")

    def post(self, body: bytes, *lines: str, auth: bool = True) -> bytes:
        return (
            self.head(
                "POST",
                "/api/v1/payout-requests/",
                f"Content-Length: {len(body)}",
                *lines,
                auth=auth,
            )
            + body
        )

    def next_request_like_a_client(self, conn: RawConnection, first: HttpResponse) -> int:
        """What an HTTP client does next: reuse the connection if invited, else open another."""
        if not first.keeps_alive:
            self.assertEqual(conn.ending(), "eof", "the server must close cleanly, not reset")
            conn.close()
            conn = RawConnection(self.port)
        try:
            conn.send(self.list_request())
            return conn.read_response().status
        finally:
            conn.close()

    def test_a_refused_large_body_closes_the_connection_cleanly(self) -> None:
        json_body = ["Content-Type: application/json"]
        cases = {
            "413, body over 64 KiB": (self.post(b"x" * ONE_MB, *json_body), 413),
            "401 before the body is read": (
                self.post(b"x" * ONE_MB, *json_body, auth=False),
                401,
            ),
            "415 before the body is read": (
                self.post(b"x" * ONE_MB, "Content-Type: text/plain"),
                415,
            ),
            "404, a body to an unknown URL": (
                self.head("POST", "/nowhere/", f"Content-Length: {ONE_MB}") + b"x" * ONE_MB,
                404,
            ),
            "411, a chunked body": (
                self.head(
                    "POST", "/api/v1/payout-requests/", *json_body, "Transfer-Encoding: chunked"
                )
                + b"".join(b"10000\r\n" + b"x" * 0x10000 + b"\r\n" for _ in range(16))
                + b"0\r\n\r\n",
                411,
            ),
        }
        # Ten times each: before the fix the reused connection failed 10 of 10 times.
        for name, (request, status) in cases.items():
            for attempt in range(10):
                with self.subTest(name, attempt=attempt):
                    conn = RawConnection(self.port)
                    conn.send(request)
                    first = conn.read_response()
                    self.assertEqual(first.status, status, first.body[:300])
                    self.assertEqual(first.headers.get("connection"), "close")
                    self.assertEqual(self.next_request_like_a_client(conn, first), 200)

    def test_a_request_whose_body_was_read_keeps_the_connection(self) -> None:
        conn = RawConnection(self.port)
        body = json.dumps(
            {
                "client_reference": "keep-1",
                "amount": "10.00",
                "currency": "EUR",
                "destination": "sandbox:success",
            }
        ).encode()
        conn.send(self.post(body, "Content-Type: application/json"))
        first = conn.read_response()
        self.assertEqual(first.status, 201, first.body[:300])
        self.assertTrue(first.keeps_alive, first.headers)
        # Invalid input that was read in full is no reason to close either.
        conn.send(self.post(b'{"amount": "x"}', "Content-Type: application/json"))
        second = conn.read_response()
        self.assertEqual(second.status, 400)
        self.assertTrue(second.keeps_alive, second.headers)
        # A small body left unread (401 before parsing) is drained by gunicorn: still reusable.
        conn.send(self.post(b"{}" + b" " * 10_000, "Content-Type: application/json", auth=False))
        third = conn.read_response()
        self.assertEqual(third.status, 401)
        self.assertTrue(third.keeps_alive, third.headers)
        conn.send(self.list_request())
        self.assertEqual(conn.read_response().status, 200)
        conn.close()
