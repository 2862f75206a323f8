"""Webhooks end to end: a real payouts worker, webhooks worker and beat, a real HTTP receiver."""

import subprocess
import sys
import tempfile
import textwrap
import time
import unittest
from decimal import Decimal
from typing import Any, ClassVar

from django.test import TransactionTestCase, override_settings
from standardwebhooks.webhooks import Webhook

from payouts import services
from payouts.models import ApiClient
from payouts.tests.e2e.base import FAST_WORKER_ENV, MoneyInvariantAfterEachTest
from payouts.tests.e2e.support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    SRC_DIR,
    ServiceProcess,
    purge_queue,
    service_env,
    start_beat,
    start_webhooks_worker,
    start_worker,
    wait_for,
    wait_for_status,
)
from webhooks.delivery import delivery_replay
from webhooks.models import DeliveryStatus, Event, WebhookAttempt, WebhookDelivery, WebhookEndpoint

from ..receiver import Receiver
from ..test_delivery import new_secret

WEBHOOKS_ENV = {
    **FAST_WORKER_ENV,
    "PAYOUTS_WEBHOOKS_ALLOW_HTTP": "1",
    "PAYOUTS_WEBHOOKS_ALLOW_PRIVATE": "1",
    "PAYOUTS_WEBHOOK_RETRY_SCHEDULE": "0,1,1,1,1",
    "PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS": "1",
    "PAYOUTS_WEBHOOK_TIMEOUT_SECONDS": "5",
}
PAID = ["payout.created", "payout.processing", "payout.paid"]


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
@override_settings(PAYOUTS_WEBHOOKS_ALLOW_HTTP=True, PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=True)
class WebhooksEndToEndTests(MoneyInvariantAfterEachTest, TransactionTestCase):
    services: ClassVar[list[ServiceProcess]]
    beat_dir: ClassVar[tempfile.TemporaryDirectory[str]]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.services = []
        cls.beat_dir = tempfile.TemporaryDirectory(prefix="webhooks-e2e-beat-")
        try:
            purge_queue()
            cls.services.append(start_worker(**WEBHOOKS_ENV))
            # One delivery thread: the webhooks queue is FIFO, so one endpoint's deliveries
            # arrive in the order of their events (with more threads the sequence tells).
            cls.services.append(
                start_webhooks_worker(**WEBHOOKS_ENV, CELERY_WORKER_CONCURRENCY="1")
            )
            cls.services.append(start_beat(cls.beat_dir.name, **WEBHOOKS_ENV))
        except BaseException:
            cls.tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls) -> None:
        try:
            for service in reversed(cls.services):
                service.stop()
                service.remove_log()
            cls.beat_dir.cleanup()
        finally:
            super().tearDownClass()

    def service_processes(self) -> list[ServiceProcess]:
        return list(self.services)

    def setUp(self) -> None:
        self.account = ApiClient.objects.create(name=f"merchant-{self.id()[-40:]}")

    def endpoint(self, receiver: Receiver, events: list[str] | None = None) -> WebhookEndpoint:
        return WebhookEndpoint.objects.create(
            client=self.account, url=receiver.url, secret=new_secret(), events=events or []
        )

    def pay(self, reference: str) -> Any:
        payout = services.payout_create(
            client=self.account,
            client_reference=reference,
            amount=Decimal("10.00"),
            currency="RUB",
            destination="sandbox:success",
            metadata={},
        ).payout
        return wait_for_status(payout.pk, "PAID")

    def test_created_processing_paid_arrive_in_order_with_valid_signatures(self) -> None:
        with Receiver() as receiver:
            endpoint = self.endpoint(receiver)
            payout = self.pay("in-order")
            wait_for(lambda: receiver.count() >= 3, "three deliveries")
            bodies = [
                Webhook(endpoint.secret).verify(r.body, r.headers) for r in receiver.requests()
            ]
        self.assertEqual([b["type"] for b in bodies], PAID)
        self.assertEqual([b["sequence"] for b in bodies], [1, 2, 3])
        self.assertEqual([b["data"]["status"] for b in bodies], ["NEW", "PROCESSING", "PAID"])
        self.assertEqual({b["data"]["id"] for b in bodies}, {str(payout.pk)})
        ids = [
            str(e)
            for e in Event.objects.filter(payout=payout)
            .order_by("sequence")
            .values_list("pk", flat=True)
        ]
        self.assertEqual([b["id"] for b in bodies], ids)
        deliveries = WebhookDelivery.objects.filter(endpoint=endpoint)
        wait_for(
            lambda: all(d.status == DeliveryStatus.SUCCEEDED for d in deliveries.all()),
            "the deliveries to be recorded",
        )
        self.assertEqual(sorted(d.attempts for d in deliveries), [1, 1, 1])

    def test_a_receiver_answering_500_twice_gets_the_event_on_the_third_try(self) -> None:
        with Receiver(answers=[500, 500]) as receiver:
            endpoint = self.endpoint(receiver, events=["payout.paid"])
            self.pay("third-try")
            wait_for(lambda: receiver.count() >= 3, "three attempts", timeout=30)
            time.sleep(1.5)  # a fourth would come within a sweep interval: there is none
            requests = receiver.requests()
        self.assertEqual(len(requests), 3)
        self.assertEqual(len({r.headers["webhook-id"] for r in requests}), 1)
        for request in requests:
            Webhook(endpoint.secret).verify(request.body, request.headers)
        delivery = WebhookDelivery.objects.get(endpoint=endpoint)
        wait_for(
            lambda: WebhookDelivery.objects.get(pk=delivery.pk).status == DeliveryStatus.SUCCEEDED,
            "the success to be recorded",
        )
        self.assertEqual(
            list(
                WebhookAttempt.objects.filter(delivery=delivery)
                .order_by("number")
                .values_list("status_code", flat=True)
            ),
            [500, 500, 200],
        )
        endpoint.refresh_from_db()
        self.assertEqual((endpoint.failure_streak, endpoint.failing_since), (0, None))

    def test_410_disables_the_endpoint_and_nothing_more_is_sent(self) -> None:
        with Receiver(then=410) as receiver:
            endpoint = self.endpoint(receiver)
            self.pay("gone")
            wait_for(lambda: not WebhookEndpoint.objects.get(pk=endpoint.pk).enabled, "the disable")
            time.sleep(2.5)  # sweeps run meanwhile
            self.assertEqual(receiver.count(), 1)
        endpoint.refresh_from_db()
        self.assertIn("410", endpoint.disabled_reason)
        self.assertEqual(
            set(WebhookDelivery.objects.filter(endpoint=endpoint).values_list("status", flat=True)),
            {DeliveryStatus.FAILED},
        )

    def test_replay_sends_the_same_event_again(self) -> None:
        with Receiver() as receiver:
            endpoint = self.endpoint(receiver, events=["payout.paid"])
            self.pay("replayed")
            wait_for(lambda: receiver.count() == 1, "the delivery")
            delivery = wait_for(
                lambda: WebhookDelivery.objects.filter(
                    endpoint=endpoint, status=DeliveryStatus.SUCCEEDED
                ).first(),
                "the success to be recorded",
            )
            delivery_replay(delivery)
            wait_for(lambda: receiver.count() == 2, "the replay")
            first, second = receiver.requests()
        self.assertEqual(first.headers["webhook-id"], second.headers["webhook-id"])
        self.assertEqual(first.body, second.body)
        Webhook(endpoint.secret).verify(second.body, second.headers)

    def test_a_process_killed_between_the_change_and_the_dispatch_loses_no_event(self) -> None:
        """The outbox: SIGKILL after the commit, before on-commit publishes; the sweep delivers."""
        with Receiver() as receiver:
            endpoint = self.endpoint(receiver, events=["payout.created"])
            # A process creates a payout as the API does and is SIGKILLed by the first of its
            # on-commit hooks: after the commit, before the dispatch's (and the payout's) publish.
            script = textwrap.dedent(
                f"""
                import os, signal, django
                from decimal import Decimal
                django.setup()
                from django.db import transaction
                from payouts import services
                from payouts.models import ApiClient
                with transaction.atomic():
                    transaction.on_commit(lambda: os.kill(os.getpid(), signal.SIGKILL))
                    services.payout_create(
                        client=ApiClient.objects.get(pk={self.account.pk}),
                        client_reference="killed", amount=Decimal("10.00"), currency="RUB",
                        destination="sandbox:success", metadata={{}},
                    )
                """
            )
            done = subprocess.run(
                [sys.executable, "-c", script],
                cwd=SRC_DIR,
                env=service_env(**WEBHOOKS_ENV),
                capture_output=True,
                timeout=120,
            )
            self.assertEqual(done.returncode, -9, done.stderr.decode()[-3000:])
            event = Event.objects.get(client=self.account, type="payout.created")
            wait_for(lambda: receiver.count() == 1, "the sweep's delivery", timeout=30)
            request = receiver.requests()[0]
            body = Webhook(endpoint.secret).verify(request.body, request.headers)
        self.assertEqual(body["id"], str(event.pk))
        self.assertEqual(body["data"]["client_reference"], "killed")
        event.refresh_from_db()
        self.assertIsNotNone(event.dispatched_at)
        logs = "\n".join(service.output() for service in self.services)
        self.assertRegex(logs, r"webhooks sweep: [1-9]\d* events dispatched")
