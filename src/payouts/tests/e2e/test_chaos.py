"""Chaos, end to end: 300 payouts over every sandbox destination, cancels at random moments, the
worker SIGKILLed twice and Redis SIGKILLed and restarted while they are processed.

gunicorn, a worker and beat use a private Redis (append-only file, so a restart brings back
what it had written; a SIGKILL may lose the last second of it, which the recovery sweep must
make good). Short leases, sweep interval and backoffs (CHAOS_ENV) let everything settle within
two minutes of the last fault. Then: nothing stuck (unless flagged for review, with a reason),
nothing executed twice, the money invariant checker clean, and `manage.py reconcile` exits 0.
The figures are printed for the issue's closing note.
"""

import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.core.management import get_commands
from django.db.models import Count, Q
from django.test import TransactionTestCase

from payouts.models import ApiClient, ApiKey, PayoutEvent, PayoutRequest, SandboxLedgerEntry

from ..invariant import check_money_invariant
from .base import PAYOUTS_URL, MoneyInvariantAfterEachTest
from .support import (
    BIN_DIR,
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    REDIS_BINARY_AVAILABLE,
    REDIS_BINARY_SKIP_REASON,
    SRC_DIR,
    ServiceProcess,
    free_port,
    purge_queue,
    service_env,
    start_beat,
    start_gunicorn,
    start_redis,
    start_worker,
    timed_request,
)

PAYOUTS = 300
# Every deterministic sandbox destination, and an ordinary account the random failure rate
# declines now and then.
DESTINATIONS = (
    "sandbox:success",
    "sandbox:decline:insufficient_funds",
    "sandbox:transient:2",
    "sandbox:unreachable",
    "sandbox:hang",
    "sandbox:lost",
    "sandbox:lost-lookup-down:2",
    "sandbox:cancel-refused",
    "sandbox:slow:1500",
    "sandbox:error",
    "40817810099910004312",
)
CANCEL_SHARE = 0.5
CANCEL_DELAY_MAX = 4.0
SETTLE_SECONDS = 120.0

CHAOS_ENV = {
    "PAYOUTS_SANDBOX_LATENCY_MS": "200",
    "PAYOUTS_SANDBOX_FAILURE_RATE": "0.2",
    "PAYOUTS_PROVIDER_TIMEOUT_SECONDS": "1",
    "PAYOUTS_PROVIDER_CANCEL_TIMEOUT_SECONDS": "1",
    "PAYOUTS_RETRY_BACKOFF_SECONDS": "1",
    "PAYOUTS_RETRY_BACKOFF_MAX_SECONDS": "2",
    "PAYOUTS_MAX_RETRIES": "2",
    "PAYOUTS_RECHECK_MAX_SECONDS": "3",
    "PAYOUTS_LEASE_SECONDS": "6",
    "PAYOUTS_SWEEP_INTERVAL_SECONDS": "1",
    "CELERY_WORKER_CONCURRENCY": "8",
}
FINAL = ("PAID", "FAILED", "CANCELED")


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
@unittest.skipUnless(REDIS_BINARY_AVAILABLE, REDIS_BINARY_SKIP_REASON)
class ChaosEndToEndTests(MoneyInvariantAfterEachTest, TransactionTestCase):
    def setUp(self) -> None:
        self.services: list[ServiceProcess] = []
        self.redis_dir = tempfile.mkdtemp(prefix="payouts-e2e-chaos-redis-")
        self.addCleanup(shutil.rmtree, self.redis_dir, ignore_errors=True)
        self.redis_port = free_port()
        self.env = {**CHAOS_ENV, "CELERY_BROKER_URL": f"redis://127.0.0.1:{self.redis_port}/0"}
        self.redis = self._track(start_redis(self.redis_port, self.redis_dir))
        purge_queue()  # the shared broker: nothing of this test's goes there, but be tidy
        self.worker = self._track(start_worker(**self.env))
        self._track(start_beat(self.redis_dir, **self.env))
        web_port = free_port()
        self.base_url = f"http://127.0.0.1:{web_port}"
        self._track(start_gunicorn(web_port, **self.env))
        client = ApiClient.objects.create(name="merchant-chaos")
        _, self.key = ApiKey.objects.create_key(name="e2e", client=client)

    def _track(self, service: ServiceProcess) -> ServiceProcess:
        self.services.append(service)
        self.addCleanup(service.remove_log)
        self.addCleanup(service.stop)
        return service

    def service_processes(self) -> list[ServiceProcess]:
        return list(self.services)

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        status, payload, _ = timed_request(self.base_url, self.key, method, path, body)
        return status, payload

    # --- the faults -----------------------------------------------------------------------

    def kill_and_restart_worker(self) -> None:
        self.worker.kill()
        self.worker = self._track(start_worker(**self.env))

    def kill_and_restart_redis(self, down_seconds: float) -> None:
        self.redis.kill()
        time.sleep(down_seconds)
        self.redis = self._track(start_redis(self.redis_port, self.redis_dir))

    # --- the test ---------------------------------------------------------------------------

    def test_payouts_settle_true_to_the_ledger_through_worker_kills_and_a_redis_restart(
        self,
    ) -> None:
        rng = random.Random(2026)
        plan = [
            (
                DESTINATIONS[index % len(DESTINATIONS)],
                rng.uniform(0, CANCEL_DELAY_MAX) if rng.random() < CANCEL_SHARE else None,
            )
            for index in range(PAYOUTS)
        ]
        lock = threading.Lock()
        created: list[str] = []
        cancels: list[tuple[str, int, Any]] = []
        create_failures: list[tuple[int, Any]] = []

        def one_payout(index: int) -> None:
            destination, cancel_after = plan[index]
            status, body = self.request(
                "POST",
                PAYOUTS_URL,
                {
                    "client_reference": f"chaos-{index}",
                    "amount": f"{10 + index}.50",
                    "currency": "RUB",
                    "destination": destination,
                },
            )
            if status != 201:
                with lock:
                    create_failures.append((status, body))
                return
            with lock:
                created.append(body["id"])
            if cancel_after is not None:
                time.sleep(cancel_after)
                answer = self.request("POST", f"{PAYOUTS_URL}{body['id']}/cancel/")
                with lock:
                    cancels.append((body["id"], *answer))

        kills = redis_restarts = 0
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=6) as pool:
            load = [pool.submit(one_payout, index) for index in range(PAYOUTS)]
            # The faults, at moments spread over the load.
            time.sleep(6)
            self.kill_and_restart_worker()
            kills += 1
            time.sleep(4)
            self.kill_and_restart_redis(down_seconds=2)
            redis_restarts += 1
            time.sleep(4)
            self.kill_and_restart_worker()
            kills += 1
            last_fault = time.monotonic()
            for future in load:
                future.result()
        load_seconds = time.monotonic() - started

        self.assertEqual(create_failures, [])
        self.assertEqual(len(created), PAYOUTS)

        def settled() -> bool:
            # Final, or flagged for review with a reason: nothing left to the worker.
            return not PayoutRequest.objects.filter(
                Q(status__in=("NEW", "PROCESSING"))
                & (Q(review_reason="") | Q(review_flagged_at=None))
            ).exists()

        deadline = last_fault + SETTLE_SECONDS
        while not settled():
            if time.monotonic() > deadline:
                stuck = PayoutRequest.objects.exclude(status__in=FINAL).values_list(
                    "pk", "destination", "status", "attempts", "lease_expires_at", "review_reason"
                )
                self.fail(f"not settled {SETTLE_SECONDS:.0f} s after the last fault: {list(stuck)}")
            time.sleep(0.5)
        settle_seconds = time.monotonic() - last_fault

        # Every cancel's answer held: a 200 stayed CANCELED and was never executed.
        answered = {200: 0, 400: 0, 503: 0}
        canceled_ids = []
        for payout_id, status, body in cancels:
            self.assertIn(status, answered, body)
            answered[status] += 1
            payout = PayoutRequest.objects.get(pk=payout_id)
            if status == 200:
                canceled_ids.append(payout_id)
                self.assertEqual(payout.status, "CANCELED", body)
            elif status == 400:
                self.assertEqual(body["code"], "payout_not_cancelable", body)
                self.assertEqual(payout.status, body["payout_status"], body)
            else:
                self.assertEqual(body["code"], "provider_unavailable", body)

        # Nothing executed twice: one ledger row per payout, one applied final event each, and
        # no outcome the worker had to refuse because the payout said otherwise.
        doubled = (
            SandboxLedgerEntry.objects.values("idempotency_key")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
        )
        self.assertFalse(doubled.exists(), list(doubled))
        finals = (
            PayoutEvent.objects.filter(applied=True, to_status__in=FINAL)
            .values("payout_id")
            .annotate(n=Count("id"))
            .filter(n__gt=1)
        )
        self.assertFalse(finals.exists(), list(finals))
        refused = PayoutEvent.objects.filter(applied=False)
        self.assertFalse(refused.exists(), list(refused.values()))

        report = check_money_invariant(created)
        by_status = dict(
            PayoutRequest.objects.values_list("status").annotate(n=Count("id")).order_by()
        )
        flagged = PayoutRequest.objects.filter(review_flagged_at__isnull=False).count()
        sys.stderr.write(
            f"\nchaos: {PAYOUTS} payouts over {len(DESTINATIONS)} destinations in "
            f"{load_seconds:.0f} s; statuses {by_status}; {len(cancels)} cancels: "
            f"{answered[200]} x 200, {answered[400]} x 400, {answered[503]} x 503; "
            f"{kills} worker SIGKILLs, {redis_restarts} Redis restarts (SIGKILL); settled "
            f"{settle_seconds:.1f} s after the last fault; {flagged} flagged for review; "
            f"{len(report.violations)} invariant violations\n"
        )
        self.assertMoneyInvariant(created, finished=True)

        # The provider's records agree (reconcile asks its lookup for every payout).
        with self.subTest("manage.py reconcile"):
            if "reconcile" not in get_commands():
                self.skipTest(
                    "manage.py reconcile is not on this branch yet (branch `reconcile`): the "
                    "lead re-enables this check once it is merged"
                )
            # Exit 2 is "the provider did not answer for some payouts: run again later": a
            # sandbox:lost-lookup-down:2 payout settled by a cancel or an execute has its two
            # refused lookups still to come. A mismatch (exit 1) is never run again.
            for run in range(1, 4):
                result = subprocess.run(
                    [str(BIN_DIR / "python"), "manage.py", "reconcile"],
                    cwd=SRC_DIR,
                    env=service_env(**self.env),
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                summary = result.stdout.strip().splitlines()[-1:] or [result.stderr[-500:]]
                sys.stderr.write(f"reconcile run {run}: exit {result.returncode}: {summary[0]}\n")
                if result.returncode != 2:
                    break
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
