"""Run a function from many threads at once, each with its own database connection."""

import threading
import unittest
from collections.abc import Callable
from typing import TypeVar
from unittest import mock

from django.db import connection
from django.test import TransactionTestCase

from payouts.models import ApiClient

T = TypeVar("T")

POSTGRESQL = connection.vendor == "postgresql"
POSTGRESQL_SKIP_REASON = (
    "concurrency tests need PostgreSQL (DATABASE_URL=postgres://...): SQLite serializes all "
    "writers, so races cannot happen; run them with `make test`"
)
requires_postgresql = unittest.skipUnless(POSTGRESQL, POSTGRESQL_SKIP_REASON)

JOIN_SECONDS = 60.0


def run_concurrently(func: Callable[[int], T], count: int) -> list[T | BaseException]:
    """Call func(0..count-1) from `count` threads released together; results in index order.

    An exception raised by a call is returned in its place. Each thread closes its database
    connection, or the test database could not be dropped at the end of the run.
    """
    barrier = threading.Barrier(count)
    results: list[T | BaseException | None] = [None] * count

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=JOIN_SECONDS)
            results[index] = func(index)
        except BaseException as exc:
            results[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_SECONDS)
    if any(thread.is_alive() for thread in threads):
        raise AssertionError(f"threads still running after {JOIN_SECONDS:.0f} s")
    return results  # type: ignore[return-value]


class CountingEnqueue:
    """Stands in for process_payout.apply_async (no worker runs here): counts each payout id."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def __call__(
        self, args: tuple[str, ...] = (), kwargs: dict | None = None, **options: object
    ) -> None:
        with self._lock:
            self.calls.append(args[0])

    def count(self, payout_id: object) -> int:
        return self.calls.count(str(payout_id))


@requires_postgresql
class ConcurrencyTestCase(TransactionTestCase):
    """Threads racing on PostgreSQL for one merchant; no worker runs, so publishes are counted."""

    def setUp(self) -> None:
        self.merchant = ApiClient.objects.create(name="racing merchant")
        self.enqueued = CountingEnqueue()
        patcher = mock.patch("payouts.tasks.process_payout.apply_async", new=self.enqueued)
        patcher.start()
        self.addCleanup(patcher.stop)
