"""What a hostile review of the webhooks found, each kept as a test: signatures an independent
verifier accepts, no SSRF by DNS rebinding, a deadline a trickling receiver cannot stretch,
sequences that survive retention, and no endpoint disabled for a quiet week."""

import base64
import hashlib
import hmac
import socket
import threading
import time
from datetime import timedelta
from typing import Any
from unittest import mock

from django.db import IntegrityError
from django.test import TestCase, override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from payouts.models import EventActor, PayoutStatus
from payouts.transitions import transition
from webhooks.delivery import delivery_attempt
from webhooks.models import Event, WebhookEndpoint
from webhooks.retention import events_prune
from webhooks.services import endpoint_rotate_secret

from .receiver import Receiver
from .test_delivery import LOCAL, DeliveryFixtures

_real_getaddrinfo = socket.getaddrinfo


@override_settings(**LOCAL, PAYOUTS_WEBHOOK_RETRY_SCHEDULE=(0, 5, 300))
class DeliveryGuardTests(DeliveryFixtures, TestCase):
    def setUp(self) -> None:
        self.setUpAccount()

    # --- checks that pass: the signature is what an independent verifier expects --------------
    def test_the_signature_verifies_by_hand_and_with_the_library_after_a_rotation(self) -> None:
        with Receiver() as receiver:
            endpoint = self.make_endpoint(receiver.url)
            old = endpoint.secret
            new = endpoint_rotate_secret(endpoint)
            delivery = self.delivery_to(endpoint)
            delivery_attempt(delivery.pk)
            (got,) = receiver.requests()
        headers = {k.lower(): v for k, v in got.headers.items()}
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + got.body
        sigs = headers["webhook-signature"].split(" ")
        for secret in (new, old):
            key = base64.b64decode(secret.removeprefix("whsec_"))
            mac = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
            self.assertIn(f"v1,{mac}", sigs)
            Webhook(secret).verify(got.body, got.headers)
        self.assertEqual(headers["webhook-id"], str(delivery.event_id))

    # --- findings ---------------------------------------------------------------------------
    @override_settings(PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=False)
    def test_dns_rebinding_after_the_check_cannot_reach_loopback(self) -> None:
        """check_destination resolves the name, then urllib3 resolves it again to connect."""
        calls: list[str] = []

        def rebinding(host: str, port: int, *args: Any, **kwargs: Any) -> Any:
            if host == "rebind.test":
                calls.append(host)
                ip = "93.184.216.34" if len(calls) == 1 else "127.0.0.1"
                return _real_getaddrinfo(ip, port, *args, **kwargs)
            return _real_getaddrinfo(host, port, *args, **kwargs)

        with Receiver() as receiver:
            port = receiver.server.server_address[1]
            endpoint = self.make_endpoint(f"http://rebind.test:{port}/hooks")
            delivery = self.delivery_to(endpoint)
            with mock.patch("socket.getaddrinfo", rebinding):
                delivery_attempt(delivery.pk)
            self.assertEqual(receiver.count(), 0, "the POST reached 127.0.0.1 (SSRF)")

    @override_settings(PAYOUTS_WEBHOOK_TIMEOUT_SECONDS=1.0)
    def test_a_trickling_receiver_cannot_hold_an_attempt_past_its_deadline(self) -> None:
        """urllib3's Timeout(total=) bounds each recv, not the request: 1 byte/0.4 s never ends."""
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        self.addCleanup(server.close)

        def trickle() -> None:
            conn, _ = server.accept()
            conn.recv(65536)
            conn.sendall(b"HTTP/1.1 200 OK\r\n")
            for i in range(10):  # 4 s of headers
                time.sleep(0.4)
                conn.sendall(b"X-%d: a\r\n" % i)
            conn.sendall(b"Content-Length: 0\r\n\r\n")
            conn.close()

        threading.Thread(target=trickle, daemon=True).start()
        endpoint = self.make_endpoint(f"http://127.0.0.1:{server.getsockname()[1]}/hooks")
        delivery = self.delivery_to(endpoint)
        started = time.monotonic()
        delivery_attempt(delivery.pk)
        self.assertLess(time.monotonic() - started, 2.0, "attempt outlived its 1 s deadline")

    def test_sequences_survive_retention_of_an_unfinished_payouts_events(self) -> None:
        """sequence = count()+1: after a prune, a long-PROCESSING payout's final event is #1."""
        endpoint = self.make_endpoint("https://shop.example.com/hooks")
        payout = self.new_event().payout
        transition(payout.pk, to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).delete()  # nothing pending: prunable
        Event.objects.filter(payout=payout).update(
            created_at=timezone.now() - timedelta(days=31), dispatched_at=timezone.now()
        )
        self.assertEqual(events_prune(), 0)  # its payout is not final: its history stays whole
        try:
            transition(payout.pk, to=PayoutStatus.PAID, actor=EventActor.WORKER)
        except IntegrityError:
            self.fail("the PAID move itself failed")
        self.assertEqual(Event.objects.get(payout=payout, type="payout.paid").sequence, 3)

    def test_one_500_after_a_quiet_week_does_not_disable_the_endpoint(
        self,
    ) -> None:
        """failing_since is never reset by a quiet spell: "failing for 5 days" counts idle days."""
        with Receiver(answers=[500]) as receiver:
            endpoint = self.make_endpoint(
                receiver.url,
                failure_streak=8,  # one event's schedule, spent a week ago; nothing since
                failing_since=timezone.now() - timedelta(days=7),
                last_failure_at=timezone.now() - timedelta(days=6),
            )
            delivery = self.delivery_to(endpoint, "r2")
            delivery_attempt(delivery.pk)  # a single 500; the 5 s retry would have got a 200
        endpoint.refresh_from_db()
        self.assertTrue(endpoint.enabled, endpoint.disabled_reason)
