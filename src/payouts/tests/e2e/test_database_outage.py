"""End to end: PostgreSQL stops under gunicorn, and starts again.

While the database is down every request that needs it must answer 503 service_unavailable
within about a second (the pool's wait and the connect timeout are bounded), not hold a web
thread for the pool's old 10 s; once it is back, requests succeed again without a restart.
"""

import time
import unittest
from typing import Any

from django.db import InterfaceError, OperationalError, connection
from django.test import TransactionTestCase

from payouts.models import ApiClient, ApiKey, PayoutRequest

from .base import PAYOUTS_URL
from .support import (
    E2E_AVAILABLE,
    E2E_SKIP_REASON,
    PG_CTL,
    PG_CTL_SKIP_REASON,
    ServiceLogsOnFailure,
    ServiceProcess,
    free_port,
    start_gunicorn,
    start_postgres,
    stop_postgres,
    timed_request,
    wait_for,
)

ANSWER_BUDGET_SECONDS = 1.5
# psycopg_pool's default backoff could keep a process answering 503 this long and longer.
RECOVERY_SECONDS = 10.0


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
@unittest.skipUnless(PG_CTL, PG_CTL_SKIP_REASON)
class DatabaseOutageEndToEndTests(ServiceLogsOnFailure, TransactionTestCase):
    def setUp(self) -> None:
        client = ApiClient.objects.create(name="merchant-database-outage")
        _, self.key = ApiKey.objects.create_key(name="e2e", client=client)
        port = free_port()
        self.base_url = f"http://127.0.0.1:{port}"
        self.web = start_gunicorn(port)
        self.addCleanup(self.web.remove_log)
        self.addCleanup(self.web.stop)
        self.database_stopped = False
        self.addCleanup(self._restart_database_if_stopped)

    def _restart_database_if_stopped(self) -> None:
        if self.database_stopped:
            start_postgres()
            self.database_stopped = False
        self.wait_for_own_connection()

    def wait_for_own_connection(self) -> None:
        """This process's connections died with the server too: wait until it has a fresh one.

        (The flush after each test, and the tests after this one, need it.)
        """

        def reconnected() -> bool:
            connection.close()  # hand back the dead one; the pool checks what it gives out
            try:
                with connection.cursor() as cursor:
                    cursor.execute("SELECT 1")
            except (OperationalError, InterfaceError):
                return False
            return True

        wait_for(reconnected, "this process to reconnect to PostgreSQL", interval=0.2)

    def tearDown(self) -> None:
        self.print_logs_if_failed()

    def service_processes(self) -> list[ServiceProcess]:
        return [self.web]

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        return timed_request(self.base_url, self.key, method, path, body)

    def create_body(self, reference: str) -> dict[str, Any]:
        return {
            "client_reference": reference,
            "amount": "10.00",
            "currency": "RUB",
            "destination": "sandbox:success",
        }

    def test_requests_answer_503_fast_while_the_database_is_down_and_succeed_after(self) -> None:
        # Both gunicorn workers hold pooled connections before the server goes away.
        for _ in range(4):
            status, body, _ = self.request("GET", PAYOUTS_URL)
            self.assertEqual(status, 200, body)

        stop_postgres()
        self.database_stopped = True
        answers = []
        for n in range(4):
            answers.append(self.request("GET", PAYOUTS_URL))
            answers.append(self.request("POST", PAYOUTS_URL, self.create_body(f"db-down-{n}")))
        for status, body, _seconds in answers:
            self.assertEqual(status, 503, body)
            self.assertEqual(body["code"], "service_unavailable", body)
        latencies = [seconds for _, _, seconds in answers]
        self.assertLessEqual(max(latencies), ANSWER_BUDGET_SECONDS, latencies)

        start_postgres()
        self.database_stopped = False
        restarted = time.monotonic()
        while True:
            status, body, _ = self.request("POST", PAYOUTS_URL, self.create_body("db-back"))
            if status == 201:
                break
            self.assertEqual(status, 503, body)
            if time.monotonic() - restarted > RECOVERY_SECONDS:
                self.fail(f"still {status} {RECOVERY_SECONDS:.0f} s after the restart: {body}")
            time.sleep(0.2)
        recovered_after = time.monotonic() - restarted
        for _ in range(4):
            status, body, _ = self.request("GET", PAYOUTS_URL)
            self.assertEqual(status, 200, body)

        self.wait_for_own_connection()
        # Nothing was stored while the database was down; the create after it was.
        self.assertEqual(
            list(PayoutRequest.objects.values_list("client_reference", flat=True)), ["db-back"]
        )
        print(
            f"\ndatabase outage: answers {', '.join(f'{s:.2f}' for s in latencies)} s; "
            f"serving again {recovered_after:.1f} s after the restart"
        )
