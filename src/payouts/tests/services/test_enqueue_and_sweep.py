"""Queueing payouts: what a failed publish means, and what the recovery sweep re-queues.

The broker publish (process_payout.apply_async) is replaced by a stand-in that records each call
and can fail the way kombu does; the e2e suite covers the real broker.
"""

import itertools
import logging
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from unittest import mock

import redis.exceptions
from django.conf import settings
from django.db import IntegrityError, connection, connections, transaction
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteDatabaseWrapper
from django.test import SimpleTestCase, TestCase, override_settings
from django.utils import timezone
from kombu.exceptions import OperationalError as KombuOperationalError

from config.celery import app as celery_app
from payouts import services
from payouts.models import ApiClient, PayoutRequest, PayoutStatus
from payouts.tasks import process_payout
from payouts.transitions import transition

LEASE_SECONDS = 180
SWEEP_SECONDS = 30


class StandInBroker:
    """Records every publish (payout id, task id); raises `failure` instead while it is set."""

    def __init__(self) -> None:
        self.published: list[tuple[str, str]] = []
        self.attempts = 0
        self.failure: BaseException | None = None

    def __call__(
        self, args: tuple[str, ...] = (), kwargs: dict | None = None, **options: object
    ) -> None:
        self.attempts += 1
        if self.failure is not None:
            raise self.failure
        self.published.append((args[0], str(options["task_id"])))

    def count(self, payout_id: object) -> int:
        return sum(1 for published, _ in self.published if published == str(payout_id))


@override_settings(PAYOUTS_LEASE_SECONDS=LEASE_SECONDS)
class EnqueueAndSweepTests(TestCase):
    def setUp(self) -> None:
        self.merchant = ApiClient.objects.create(name="merchant")
        self.broker = StandInBroker()
        patcher = mock.patch.object(process_payout, "apply_async", new=self.broker)
        patcher.start()
        self.addCleanup(patcher.stop)

    def create(self, reference: str) -> PayoutRequest:
        with self.captureOnCommitCallbacks(execute=True):
            return services.payout_create(
                client=self.merchant,
                client_reference=reference,
                amount=Decimal("5.00"),
                currency="EUR",
                destination="sandbox:success",
                metadata={},
            ).payout

    def expire(self, *payouts: PayoutRequest) -> None:
        PayoutRequest.objects.filter(pk__in=[p.pk for p in payouts]).update(
            lease_expires_at=timezone.now() - timedelta(seconds=1)
        )

    # --- payout_enqueue -------------------------------------------------------------------------

    def test_create_publishes_the_task_that_holds_the_new_payouts_lease(self) -> None:
        payout = self.create("leased")
        payout.refresh_from_db()
        self.assertEqual(self.broker.published, [(str(payout.pk), payout.lease_owner)])
        assert payout.lease_expires_at is not None
        self.assertGreater(payout.lease_expires_at, timezone.now())

    def test_a_broker_outage_is_answered_false_and_the_lease_expired_for_the_next_sweep(
        self,
    ) -> None:
        payout = self.create("outage")
        outages = [
            KombuOperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused."),
            redis.exceptions.ConnectionError("Connection closed by server."),
            redis.exceptions.TimeoutError("Timeout reading from socket"),
            ConnectionRefusedError(111, "Connection refused"),
            TimeoutError("timed out"),  # socket.timeout
        ]
        for outage in outages:
            with self.subTest(outage=type(outage).__name__):
                deadline = timezone.now() + timedelta(minutes=3)
                PayoutRequest.objects.filter(pk=payout.pk).update(
                    lease_owner="task-x", lease_expires_at=deadline
                )
                self.broker.failure = outage
                with self.assertLogs("payouts.services", "WARNING") as logs:
                    published = services.payout_enqueue(
                        payout.pk, task_id="task-x", lease_expires_at=deadline
                    )
                self.assertIs(published, False)
                self.assertIn("could not queue payout", logs.output[0])
                payout.refresh_from_db()
                assert payout.lease_expires_at is not None
                self.assertLessEqual(payout.lease_expires_at, timezone.now())

    def test_a_publish_reported_failed_whose_message_arrived_keeps_the_claims_lease(
        self,
    ) -> None:
        # A timeout after Redis took the message: its delivery claimed the payout (renewing the
        # lease under the same task id) before the publisher gave up.
        self.broker.failure = None
        payout = self.create("arrived")
        task_id, create_lease = payout.lease_owner, payout.lease_expires_at
        assert create_lease is not None
        claimed_lease = timezone.now() + timedelta(minutes=3, seconds=7)
        transition(
            payout.pk,
            to=PayoutStatus.PROCESSING,
            actor=services.EventActor.WORKER,
            lease_owner=task_id,
            lease_expires_at=claimed_lease,
        )
        self.broker.failure = redis.exceptions.TimeoutError("Timeout reading from socket")
        with self.assertLogs("payouts.services", "WARNING"):
            self.assertFalse(
                services.payout_enqueue(payout.pk, task_id=task_id, lease_expires_at=create_lease)
            )
        payout.refresh_from_db()
        self.assertEqual(payout.lease_expires_at, claimed_lease)

    def test_a_programming_error_in_the_publish_propagates_and_is_not_called_an_outage(
        self,
    ) -> None:
        payout = self.create("bug")
        self.broker.failure = TypeError("a bug in the publish path")
        with (
            self.assertNoLogs("payouts.services", "WARNING"),
            self.assertRaisesRegex(TypeError, "^a bug in the publish path$"),
        ):
            services.payout_enqueue(
                payout.pk, task_id=payout.lease_owner, lease_expires_at=timezone.now()
            )

    def test_a_programming_error_after_commit_keeps_the_payout_and_is_logged_as_an_error(
        self,
    ) -> None:
        self.broker.failure = TypeError("a bug in the publish path")
        with (
            self.assertLogs(level="ERROR") as logs,
            self.assertNoLogs("payouts.services", "WARNING"),
        ):
            payout = self.create("bug-at-create")
        self.assertEqual(PayoutRequest.objects.filter(pk=payout.pk).count(), 1)
        # Django's robust on-commit logs the exception with its traceback.
        self.assertEqual(len(logs.records), 1, logs.output)
        record = logs.records[0]
        self.assertEqual(record.levelno, logging.ERROR)
        assert record.exc_info is not None
        self.assertIs(record.exc_info[0], TypeError)

    # --- the recovery sweep ---------------------------------------------------------------------

    def test_sweep_counts_only_the_publishes_the_broker_took_and_retries_a_failed_one(
        self,
    ) -> None:
        payout = self.create("sweep-failure")
        self.expire(payout)
        self.broker.failure = KombuOperationalError("connection refused")

        with self.assertLogs("payouts.services", "WARNING"):
            self.assertEqual(services.payouts_recover_stale(), 0)

        # The failed publish left the lease expired: the very next sweep tries again.
        payout.refresh_from_db()
        assert payout.lease_expires_at is not None
        self.assertLessEqual(payout.lease_expires_at, timezone.now())
        self.broker.failure = None
        self.assertEqual(services.payouts_recover_stale(), 1)
        payout.refresh_from_db()
        self.assertEqual(self.broker.published[-1], (str(payout.pk), payout.lease_owner))
        self.assertEqual(services.payouts_recover_stale(), 0)

    def test_a_create_whose_publish_failed_is_queued_by_the_next_sweep(self) -> None:
        self.broker.failure = KombuOperationalError("connection refused")
        with self.assertLogs("payouts.services", "WARNING"):
            payout = self.create("create-failure")
        self.broker.failure = None
        # No need to wait out the lease: the failed publish expired it.
        self.assertEqual(services.payouts_recover_stale(), 1)
        self.assertEqual(self.broker.count(payout.pk), 1)

    def test_sweep_stops_at_the_first_failed_publish(self) -> None:
        payouts = [self.create(f"down-{n}") for n in range(5)]
        self.expire(*payouts)
        attempts_before = self.broker.attempts
        self.broker.failure = redis.exceptions.TimeoutError("Timeout reading from socket")

        with self.assertLogs("payouts.services", "WARNING"):
            self.assertEqual(services.payouts_recover_stale(), 0)

        # One timeout, not five: the rest stay expired for the next sweep.
        self.assertEqual(self.broker.attempts - attempts_before, 1)
        self.broker.failure = None
        self.assertEqual(services.payouts_recover_stale(), 5)

    def test_a_failed_sweep_publish_leaves_the_payout_due_for_the_very_next_sweep(self) -> None:
        """Even a payout the backoff would next re-queue in an hour: the publish never happened."""
        payout = self.create("waited-long")
        start = timezone.now()
        with self.at_time(start + timedelta(hours=2)) as travel:
            self.broker.failure = KombuOperationalError("connection refused")
            with self.assertLogs("payouts.services", "WARNING"):
                self.assertEqual(services.payouts_recover_stale(), 0)
            payout.refresh_from_db()
            assert payout.lease_expires_at is not None
            self.assertLessEqual(payout.lease_expires_at, timezone.now())

            self.broker.failure = None
            travel(start + timedelta(hours=2, seconds=SWEEP_SECONDS))
            self.assertEqual(services.payouts_recover_stale(), 1)
        self.assertEqual(self.broker.count(payout.pk), 2)  # the create's and the next sweep's

    def test_a_sweep_that_dies_before_its_publish_leaves_the_payout_due_for_the_next_sweep(
        self,
    ) -> None:
        """The worker running the sweep is killed between the re-lease and the publish."""

        class WorkerKilled(BaseException):
            pass

        payout = self.create("killed-mid-sweep")
        start = timezone.now()
        with self.at_time(start + timedelta(hours=2)) as travel:
            self.broker.failure = WorkerKilled()
            with self.assertRaises(WorkerKilled):
                services.payouts_recover_stale()
            payout.refresh_from_db()
            # Held for one sweep interval, not for the hour of backoff a waited payout gets.
            assert payout.lease_expires_at is not None
            self.assertLessEqual(
                payout.lease_expires_at, timezone.now() + timedelta(seconds=SWEEP_SECONDS)
            )

            self.broker.failure = None
            travel(start + timedelta(hours=2, seconds=SWEEP_SECONDS + 1))
            self.assertEqual(services.payouts_recover_stale(), 1)

    def test_after_its_publish_a_swept_payout_keeps_the_backed_off_lease(self) -> None:
        payout = self.create("swept")
        start = timezone.now()
        with self.at_time(start + timedelta(hours=2)):
            self.assertEqual(services.payouts_recover_stale(), 1)
            payout.refresh_from_db()
            self.assertEqual(payout.lease_owner, self.broker.published[-1][1])
            self.assertEqual(payout.lease_expires_at, timezone.now() + services.REQUEUE_BACKOFF_MAX)

    def test_a_delivery_that_claims_before_the_sweep_records_its_lease_keeps_its_own(
        self,
    ) -> None:
        payout = self.create("claimed-at-once")
        self.expire(payout)
        claimed_lease = timezone.now() + timedelta(minutes=3, seconds=7)

        def publish_and_claim_at_once(
            args: tuple[str, ...] = (), kwargs: dict | None = None, **options: object
        ) -> None:
            self.broker(args, kwargs, **options)
            # A fast worker: the delivery claims the payout before the sweep's next statement.
            transition(
                payout.pk,
                to=PayoutStatus.PROCESSING,
                actor=services.EventActor.WORKER,
                lease_owner=str(options["task_id"]),
                lease_expires_at=claimed_lease,
            )

        with mock.patch.object(process_payout, "apply_async", new=publish_and_claim_at_once):
            self.assertEqual(services.payouts_recover_stale(), 1)
        payout.refresh_from_db()
        self.assertEqual(payout.status, PayoutStatus.PROCESSING)
        self.assertEqual(payout.lease_expires_at, claimed_lease)

    def test_a_backlog_is_not_republished_every_lease_period(self) -> None:
        """Payouts whose messages wait behind a backlog for an hour, sweeps every 30 s.

        Without backoff each is published again once per lease (about 18 times in an hour);
        with it the gaps double: 180, 360, 720, 1440, 2880 s.
        """
        payouts = [self.create(f"backlog-{n}") for n in range(20)]
        start = timezone.now()
        republished_at: dict[str, list[datetime]] = {str(p.pk): [] for p in payouts}
        sweeps_that_published = 0
        hour = 3600
        with self.at_time(start) as travel:
            for elapsed in range(SWEEP_SECONDS, hour + 1, SWEEP_SECONDS):
                travel(start + timedelta(seconds=elapsed))
                before = len(self.broker.published)
                queued = services.payouts_recover_stale()
                self.assertEqual(queued, len(self.broker.published) - before)
                for payout_id, _ in self.broker.published[before:]:
                    republished_at[payout_id].append(timezone.now())
                sweeps_that_published += bool(queued)

        expected_max = math.ceil(math.log2(hour / LEASE_SECONDS))  # 5
        for payout_id, times in republished_at.items():
            with self.subTest(payout=payout_id):
                # A lost message would still be re-queued: the first re-queue comes after a lease.
                self.assertGreaterEqual(len(times), 1)
                self.assertLessEqual(len(times), expected_max, times)
                gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
                self.assertEqual(gaps, sorted(gaps))  # never closer together than before
        self.assertLessEqual(sweeps_that_published, expected_max)

    def test_a_payout_waiting_for_long_is_still_re_queued_at_least_hourly(self) -> None:
        payout = self.create("lost-long-ago")
        start = timezone.now()
        with self.at_time(start) as travel:
            times = []
            for elapsed in range(SWEEP_SECONDS, 6 * 3600 + 1, SWEEP_SECONDS):
                travel(start + timedelta(seconds=elapsed))
                if services.payouts_recover_stale():
                    times.append(elapsed)
        gaps = [b - a for a, b in itertools.pairwise(times)]
        self.assertTrue(gaps)
        self.assertLessEqual(max(gaps), services.REQUEUE_BACKOFF_MAX.total_seconds() + 60)
        self.assertEqual(self.broker.count(payout.pk), 1 + len(times))

    @contextmanager
    def at_time(self, moment: datetime) -> Iterator[Callable[[datetime], None]]:
        """Pretend the clock reads `moment` (and whatever the yielded function sets later)."""
        now = [moment]

        def travel(to: datetime) -> None:
            now[0] = to

        with mock.patch("django.utils.timezone.now", side_effect=lambda: now[0]):
            yield travel


class SweepQueueTests(SimpleTestCase):
    """The sweep has a queue of its own, so a backlog of payouts cannot hold it past its expiry."""

    def test_the_sweep_is_routed_to_its_own_queue_and_payouts_to_theirs(self) -> None:
        router = celery_app.amqp.router
        sweep = router.route({}, "payouts.tasks.recover_stale_payouts")["queue"]
        payouts = router.route({}, process_payout.name)["queue"]
        self.assertEqual(sweep.name, settings.PAYOUTS_SWEEP_QUEUE)
        self.assertEqual(payouts.name, settings.CELERY_TASK_DEFAULT_QUEUE)
        # Distinct bindings: a payout's message is never delivered to the sweep's queue too.
        self.assertNotEqual(
            (sweep.exchange.name, sweep.routing_key), (payouts.exchange.name, payouts.routing_key)
        )

    def test_a_worker_started_without_queue_options_consumes_every_queue(self) -> None:
        self.assertEqual(
            set(celery_app.amqp.queues.consume_from),
            {
                settings.CELERY_TASK_DEFAULT_QUEUE,
                settings.PAYOUTS_SWEEP_QUEUE,
                settings.PAYOUTS_WEBHOOKS_QUEUE,
            },
        )

    def test_beat_sends_the_sweep_with_an_expiry_of_one_interval(self) -> None:
        entry: dict[str, Any] = settings.CELERY_BEAT_SCHEDULE["payouts-recovery-sweep"]
        self.assertEqual(entry["task"], "payouts.tasks.recover_stale_payouts")
        self.assertEqual(entry["schedule"], settings.PAYOUTS_SWEEP_INTERVAL_SECONDS)
        self.assertEqual(entry["options"]["expires"], settings.PAYOUTS_SWEEP_INTERVAL_SECONDS)


class UnfinishedPayoutNeedsLeaseTests(TestCase):
    """The database itself refuses a NEW or PROCESSING payout that the sweep could never find."""

    def test_the_database_rejects_an_unfinished_payout_without_a_lease(self) -> None:
        merchant = ApiClient.objects.create(name="merchant")
        for status in (PayoutStatus.NEW, PayoutStatus.PROCESSING):
            with (
                self.subTest(status=status, database=connection.vendor),
                self.assertRaises(IntegrityError),
                transaction.atomic(),
            ):
                PayoutRequest.objects.create(
                    client=merchant,
                    client_reference=f"no-lease-{status}",
                    amount="1",
                    currency="EUR",
                    destination="sandbox:success",
                    status=status,
                    lease_expires_at=None,
                )

    def test_a_lease_can_be_cleared_only_together_with_a_final_status(self) -> None:
        merchant = ApiClient.objects.create(name="merchant")
        payout = services.payout_create(
            client=merchant,
            client_reference="clear",
            amount=Decimal("1"),
            currency="EUR",
            destination="sandbox:success",
            metadata={},
        ).payout
        with self.assertRaises(IntegrityError), transaction.atomic():
            PayoutRequest.objects.filter(pk=payout.pk).update(lease_expires_at=None)
        transition(payout.pk, to=PayoutStatus.CANCELED, actor=services.EventActor.API)
        payout.refresh_from_db()
        self.assertIsNone(payout.lease_expires_at)


class UnfinishedPayoutNeedsLeaseOnSQLiteTests(SimpleTestCase):
    """The same rule on SQLite (the embedded mode), whatever database this run uses."""

    def test_sqlite_rejects_an_unfinished_payout_without_a_lease(self) -> None:
        sqlite = SQLiteDatabaseWrapper(
            {
                **connection.settings_dict,
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": ":memory:",
                "OPTIONS": {},
            },
            alias="sqlite-check",
        )
        # The schema editor looks its connection up by alias.
        connections["sqlite-check"] = sqlite
        self.addCleanup(connections.__delitem__, "sqlite-check")
        self.addCleanup(sqlite.close)
        with sqlite.schema_editor() as editor:
            editor.create_model(ApiClient)
            editor.create_model(PayoutRequest)
        with sqlite.cursor() as cursor:
            cursor.execute(
                "INSERT INTO payouts_apiclient (name, is_active, created_at) "
                "VALUES ('m', 1, '2026-01-01')"
            )
            insert = (
                "INSERT INTO payouts_payoutrequest (id, client_id, client_reference, amount,"
                " currency, destination, metadata, status, failure_code, failure_reason,"
                " provider_reference, created_at, updated_at, lease_expires_at, lease_owner,"
                " attempts, review_reason) VALUES (%s, 1, %s, 1, 'EUR', 'd', '{}', %s, '', '', '',"
                " '2026-01-01', '2026-01-01', %s, '', 0, '')"
            )
            cursor.execute(insert, ["a" * 32, "paid", "PAID", None])  # final: no lease needed
            cursor.execute(insert, ["b" * 32, "leased", "NEW", "2026-01-01"])
            for n, status in enumerate(("NEW", "PROCESSING")):
                with self.subTest(status=status), self.assertRaises(IntegrityError):
                    cursor.execute(insert, [f"{n}" * 32, f"bad-{n}", status, None])
