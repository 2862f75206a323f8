"""Lease heartbeat: a worker process keeps the leases of the payouts it is working on alive.

A lease must outlive the attempt that holds it, or the recovery sweep hands the payout to a
second delivery while the first still waits for the provider. Celery's time limits do not apply
to the threads pool, and a provider may be slow, so instead of a lease as long as the slowest
call, one daemon thread per process renews the leases of every attempt in flight each
PAYOUTS_LEASE_SECONDS / 3 (one UPDATE for all of them). The lease can then be short: a dead
worker's payouts are free again within one lease. A thread of our own because the renewal is
one query on a timer, which no library makes shorter.

A hold has a limit: an attempt that runs past it (an adapter ignoring its deadline hangs the
thread) is no longer renewed, so its lease runs out and the sweep hands the payout on.
"""

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

from .transitions import leases_renew

logger = logging.getLogger(__name__)


class LeaseHeartbeat:
    def __init__(self) -> None:
        # (payout id, owner) -> the monotonic instants until which each hold of it may renew.
        self._held: dict[tuple[uuid.UUID, str], list[float]] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, payout_id: uuid.UUID, owner: str, *, at_most: float) -> Iterator[None]:
        """Keep `owner`'s lease on the payout alive while the block runs, `at_most` seconds."""
        key, until = (payout_id, owner), time.monotonic() + at_most
        with self._lock:
            self._held.setdefault(key, []).append(until)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="payouts-lease-heartbeat", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held[key].remove(until)
                if not self._held[key]:
                    del self._held[key]

    def _run(self) -> None:
        interval = settings.PAYOUTS_LEASE_SECONDS / 3
        stop = threading.Event()
        while not stop.wait(interval):
            now = time.monotonic()
            with self._lock:
                held = [key for key, limits in self._held.items() if max(limits) > now]
                overdue = [key for key, limits in self._held.items() if max(limits) <= now]
            for payout_id, owner in overdue:
                logger.error(
                    "payout %s: attempt %s runs past every deadline; its lease is left to "
                    "expire so the sweep resumes the payout",
                    payout_id,
                    owner,
                )
            if not held:
                continue
            until = timezone.now() + timedelta(seconds=settings.PAYOUTS_LEASE_SECONDS)
            try:
                leases_renew(held, until=until)
            except DatabaseError as exc:
                # Our database is down: the attempts fail on their own; the leases run out and
                # the sweep resumes the payouts once it is back.
                logger.warning("lease heartbeat could not renew %d leases: %s", len(held), exc)
            finally:
                # Back to the pool between beats: the worker's threads need every connection.
                connection.close()


lease_heartbeat = LeaseHeartbeat()
