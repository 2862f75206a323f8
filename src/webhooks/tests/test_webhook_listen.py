"""`make webhook-listen` (scripts/webhook_listen.py): the real script, over real HTTP.

The deliveries are signed with the `standardwebhooks` package's own `sign`, so these tests check
the listener against the reference implementation, not against our signing code.
"""

import contextlib
import json
import queue
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase
from standardwebhooks.webhooks import Webhook

from payouts.tests.e2e.support import free_port

LISTENER = Path(settings.REPO_DIR) / "scripts" / "webhook_listen.py"
README = Path(settings.REPO_DIR) / "README.md"
SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
OTHER_SECRET = "whsec_c29tZW9uZS1lbHNlcy1zZWNyZXQtaGVyZQ=="


def payload(sequence: int, status: str, payout_id: str) -> bytes:
    event = {
        "id": str(uuid.uuid4()),
        "type": f"payout.{status.lower()}",
        "created_at": "2026-01-10T12:00:00.000000Z",
        "sequence": sequence,
        "data": {"id": payout_id, "status": status, "client_reference": "invoice-42"},
    }
    return json.dumps(event).encode()


def signed_headers(
    body: bytes, secret: str = SECRET, webhook_id: str = "", at: datetime | None = None
) -> dict[str, str]:
    webhook_id = webhook_id or f"msg_{uuid.uuid4().hex}"
    at = at or datetime.now(tz=timezone.utc)
    signature = Webhook(secret).sign(webhook_id, at, body.decode())
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
    }


class ReceiverProcessTestCase(SimpleTestCase):
    """A receiver started as its own process on a free port, its output read line by line."""

    def command(self) -> list[str]:
        raise NotImplementedError

    def setUp(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            self.command(),
            env={"WEBHOOK_SECRET": SECRET, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.addCleanup(self.stop)
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self.read_output, daemon=True).start()
        self.wait_until_listening()

    def wait_until_listening(self) -> None:
        self.assertIn(f"verifying deliveries on http://127.0.0.1:{self.port}/", self.next_line())

    def read_output(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def next_line(self) -> str:
        return self.lines.get(timeout=10).rstrip("\n")

    def post(self, body: bytes, headers: dict[str, str]) -> int:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/",
            data=body,
            headers={"Content-Type": "application/json", **headers},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return error.code


@unittest.skipUnless(LISTENER.exists(), "scripts/ is not in the Docker image: run from a checkout")
class WebhookListenTests(ReceiverProcessTestCase):
    def command(self) -> list[str]:
        return [sys.executable, str(LISTENER), "--port", str(self.port)]

    def test_a_signed_delivery_is_answered_204_and_printed(self) -> None:
        payout_id = str(uuid.uuid4())
        body = payload(3, "PAID", payout_id)
        self.assertEqual(self.post(body, signed_headers(body)), 204)
        event = json.loads(body)
        self.assertEqual(
            self.next_line(),
            f"payout.paid  event {event['id']}  sequence 3  payout {payout_id} PAID  (verified)",
        )

    def test_a_bad_signature_is_answered_400_with_the_reason(self) -> None:
        body = payload(1, "NEW", str(uuid.uuid4()))
        cases = {
            "signed with another secret": (
                signed_headers(body, secret=OTHER_SECRET),
                "No matching signature found",
            ),
            "body changed after signing": (
                signed_headers(body.replace(b"NEW", b"PAID")),
                "No matching signature found",
            ),
            "no signature headers": ({}, "Missing required headers"),
            "an hour old": (
                signed_headers(body, at=datetime.now(tz=timezone.utc) - timedelta(hours=1)),
                "Message timestamp too old",
            ),
            "a malformed signature": (
                {**signed_headers(body), "webhook-signature": "garbage"},
                "malformed signature header or body",
            ),
        }
        for name, (headers, reason) in cases.items():
            with self.subTest(name):
                self.assertEqual(self.post(body, headers), 400)
                line = self.next_line()
                self.assertTrue(line.startswith("REJECTED (400): "), line)
                self.assertIn(reason, line)
        # Still serving after all of them.
        self.assertEqual(self.post(body, signed_headers(body)), 204)

    def test_during_a_rotation_either_of_two_signatures_verifies(self) -> None:
        body = payload(1, "NEW", str(uuid.uuid4()))
        old = signed_headers(body, secret=OTHER_SECRET, webhook_id="msg_rotating")
        new = signed_headers(body, webhook_id="msg_rotating")
        both = f"{old['webhook-signature']} {new['webhook-signature']}"
        self.assertEqual(self.post(body, {**new, "webhook-signature": both}), 204)
        self.assertIn("(verified)", self.next_line())

    def test_repeats_and_stale_events_are_pointed_out(self) -> None:
        payout_id = str(uuid.uuid4())
        paid = payload(3, "PAID", payout_id)
        headers = signed_headers(paid)
        self.assertEqual(self.post(paid, headers), 204)
        self.assertNotIn("skip it", self.next_line())
        self.assertEqual(self.post(paid, headers), 204)  # a retry: same webhook-id
        self.assertIn("a repeat of a webhook-id already received", self.next_line())
        processing = payload(2, "PROCESSING", payout_id)  # arrives after the newer one
        self.assertEqual(self.post(processing, signed_headers(processing)), 204)
        self.assertIn("stale: sequence 3 of this payout already received", self.next_line())


@unittest.skipUnless(LISTENER.exists(), "scripts/ is not in the Docker image: run from a checkout")
class WebhookListenStartTests(SimpleTestCase):
    def test_without_a_secret_it_says_where_the_secret_comes_from(self) -> None:
        result = subprocess.run(
            [sys.executable, str(LISTENER)],
            env={"PATH": "/usr/bin:/bin"},
            capture_output=True,
            text=True,
            timeout=30,
        )
        self.assertEqual(result.returncode, 2)
        self.assertIn("WEBHOOK_SECRET=whsec_", result.stderr)


@unittest.skipUnless(README.exists(), "README.md is not in the Docker image: run from a checkout")
class ReadmeReceiverTests(ReceiverProcessTestCase):
    """The README's dozen-line receiver, run exactly as printed there (on a free port)."""

    def command(self) -> list[str]:
        text = README.read_text("utf-8")
        start = text.index("```python\n# receiver.py") + len("```python\n")
        source = text[start : text.index("```", start)]
        self.assertIn('HTTPServer(("127.0.0.1", 8787), Receiver)', source)
        source = source.replace("8787", str(self.port))
        return [sys.executable, "-c", source]

    def next_line(self) -> str:
        line = super().next_line()
        while '"POST / HTTP/1.1"' in line:  # http.server's access log, on stderr
            line = super().next_line()
        return line

    def wait_until_listening(self) -> None:
        for _ in range(100):  # it prints nothing until the first delivery
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.05)
        self.fail("the README's receiver did not start listening")

    def test_a_signed_delivery_is_answered_204_and_printed(self) -> None:
        payout_id = str(uuid.uuid4())
        body = payload(3, "PAID", payout_id)
        self.assertEqual(self.post(body, signed_headers(body)), 204)
        self.assertEqual(self.next_line(), f"payout.paid 3 {payout_id} PAID")

    def test_a_bad_signature_is_answered_400_with_the_reason(self) -> None:
        body = payload(1, "NEW", str(uuid.uuid4()))
        self.assertEqual(self.post(body, signed_headers(body, secret=OTHER_SECRET)), 400)
        self.assertEqual(self.next_line(), "rejected: No matching signature found")
        self.assertEqual(self.post(body, {}), 400)
        self.assertEqual(self.next_line(), "rejected: Missing required headers")

    def test_during_a_rotation_either_of_two_signatures_verifies(self) -> None:
        body = payload(1, "NEW", str(uuid.uuid4()))
        old = signed_headers(body, secret=OTHER_SECRET, webhook_id="msg_rotating")
        new = signed_headers(body, webhook_id="msg_rotating")
        both = f"{old['webhook-signature']} {new['webhook-signature']}"
        self.assertEqual(self.post(body, {**new, "webhook-signature": both}), 204)
        self.assertIn("payout.new 1", self.next_line())
