"""The project's test runner: Django's DiscoverRunner plus a few things.

- Without test labels it discovers the tests under src/, from any working directory.
- With no CELERY_BROKER_URL in the environment, Celery uses its in-memory transport for the run,
  so `python src/manage.py test` needs no servers (tests that need a real broker skip themselves).
- Webhooks may go to http://127.0.0.1, where the tests' receivers listen
  (PAYOUTS_WEBHOOKS_ALLOW_HTTP and _ALLOW_PRIVATE on, for the run and the processes it starts).
- It ends with one plain summary line, `N passed, N failed, N skipped`, for people and CI logs.
"""

from __future__ import annotations

import os
import unittest
from typing import Any

from django.conf import settings
from django.test.runner import DiscoverRunner

IN_MEMORY_BROKER = "memory://localhost/"


class PayoutsTestRunner(DiscoverRunner):
    _last_result: unittest.TestResult | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Discover from src/ whatever the working directory (`python src/manage.py test` is run
        # from the repository root, where unittest would find no packages).
        if self.top_level is None:
            self.top_level = str(settings.BASE_DIR)

    def build_suite(self, test_labels: Any = None, *args: Any, **kwargs: Any) -> Any:
        return super().build_suite(test_labels or [str(settings.BASE_DIR)], *args, **kwargs)

    def setup_test_environment(self, **kwargs: Any) -> None:
        super().setup_test_environment(**kwargs)
        from config.celery import app

        if not os.environ.get("CELERY_BROKER_URL"):
            settings.CELERY_BROKER_URL = IN_MEMORY_BROKER
            app.conf.update(broker_url=IN_MEMORY_BROKER)
            if self.verbosity >= 1:
                print("CELERY_BROKER_URL is not set: using Celery's in-memory broker.")
        # Tests' webhook receivers listen on http://127.0.0.1: allow them, here and in the
        # workers and servers the e2e tests start (they inherit the environment). Tests of the
        # refusals turn these off with override_settings or their process's environment.
        for relaxation in ("PAYOUTS_WEBHOOKS_ALLOW_HTTP", "PAYOUTS_WEBHOOKS_ALLOW_PRIVATE"):
            os.environ[relaxation] = "1"
            setattr(settings, relaxation, True)
        # A queue of this run's own: the workers the e2e tests start inherit it through the
        # environment, and purging it cannot touch a live deployment on the same Redis.
        # The sweep's and the webhooks' queues are named after it (config/queues.py).
        from .queues import QueueLayout

        queue = f"payouts-test-{os.getpid()}"
        os.environ["CELERY_TASK_QUEUE"] = queue
        layout = QueueLayout.named_after(queue)
        settings.CELERY_TASK_DEFAULT_QUEUE = queue
        settings.CELERY_QUEUE_LAYOUT = layout
        settings.PAYOUTS_SWEEP_QUEUE = layout.sweep
        settings.PAYOUTS_WEBHOOKS_QUEUE = layout.webhooks
        settings.CELERY_TASK_QUEUES = layout.queues
        settings.CELERY_TASK_ROUTES = layout.routes
        app.conf.update(
            task_default_queue=queue,
            task_queues=settings.CELERY_TASK_QUEUES,
            task_routes=settings.CELERY_TASK_ROUTES,
        )

    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> Any:
        result = super().run_suite(suite, **kwargs)
        self._last_result = result
        return result

    def run_tests(self, test_labels: Any, **kwargs: Any) -> int:
        self._last_result = None
        try:
            failures = super().run_tests(test_labels, **kwargs)
        except BaseException:
            # Setup failed (database, import error, Ctrl-C): still end with the summary line.
            print(self._summary(self._last_result, 1), flush=True)
            raise
        print(self._summary(self._last_result, failures), flush=True)
        return failures

    @staticmethod
    def _summary(result: unittest.TestResult | None, failures: int) -> str:
        if result is not None:
            failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
            skipped = len(result.skipped)
            passed = max(result.testsRun - failed - skipped, 0)  # expected failures pass
        else:
            # The run stopped before any test ran (e.g. a system check or database error).
            passed, failed, skipped = 0, max(failures, 1), 0
        return f"\n{passed} passed, {failed} failed, {skipped} skipped"
