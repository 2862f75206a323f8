"""The project's test runner: Django's DiscoverRunner plus two things.

- With no CELERY_BROKER_URL in the environment, Celery uses its in-memory transport for the run,
  so `python src/manage.py test` needs no servers (tests that need a real broker skip themselves).
- It ends with one plain summary line, `N passed, N failed, N skipped`, for people and CI logs.
"""

from __future__ import annotations

import os
import unittest
from typing import Any

from django.conf import settings
from django.test.runner import DiscoverRunner

IN_MEMORY_BROKER = "memory://"


class PayoutsTestRunner(DiscoverRunner):
    def setup_test_environment(self, **kwargs: Any) -> None:
        super().setup_test_environment(**kwargs)
        if not os.environ.get("CELERY_BROKER_URL"):
            from config.celery import app

            settings.CELERY_BROKER_URL = IN_MEMORY_BROKER
            app.conf.broker_url = IN_MEMORY_BROKER
            if self.verbosity >= 1:
                print("CELERY_BROKER_URL is not set: using Celery's in-memory broker.")

    def run_suite(self, suite: unittest.TestSuite, **kwargs: Any) -> unittest.TestResult:
        result = super().run_suite(suite, **kwargs)
        self._last_result = result
        return result

    def run_tests(self, test_labels: Any, **kwargs: Any) -> int:
        self._last_result: unittest.TestResult | None = None
        failures = super().run_tests(test_labels, **kwargs)
        result = self._last_result
        if result is not None:
            failed = len(result.failures) + len(result.errors) + len(result.unexpectedSuccesses)
            skipped = len(result.skipped)
            passed = max(result.testsRun - failed - skipped - len(result.expectedFailures), 0)
            passed += len(result.expectedFailures)
        else:
            # The run stopped before any test ran (e.g. a system check or database error).
            passed, failed, skipped = 0, max(failures, 1), 0
        print(f"\n{passed} passed, {failed} failed, {skipped} skipped", flush=True)
        return failures
