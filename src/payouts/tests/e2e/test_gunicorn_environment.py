"""The gunicorn the e2e tests start honours "empty means the default" for WEB_CONCURRENCY.

`docker compose exec web python manage.py test` skips the image's entrypoint (which drops an
empty WEB_CONCURRENCY), so an `.env` line `WEB_CONCURRENCY=` reaches the tests' gunicorn, which
parses the variable itself with int() before gunicorn.conf.py runs.
"""

import os
import unittest
import urllib.request
from unittest import mock

from django.test import TransactionTestCase

from .support import E2E_AVAILABLE, E2E_SKIP_REASON, free_port, start_gunicorn


@unittest.skipUnless(E2E_AVAILABLE, E2E_SKIP_REASON)
class GunicornEnvironmentTests(TransactionTestCase):
    def test_an_empty_web_concurrency_in_the_environment_is_the_default(self) -> None:
        port = free_port()
        with mock.patch.dict(os.environ, {"WEB_CONCURRENCY": ""}):
            web = start_gunicorn(port)
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
                self.assertEqual(reply.status, 200)
        finally:
            web.stop()
