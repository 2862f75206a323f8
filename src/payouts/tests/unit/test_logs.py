"""The log formats and the log context (config/logs.py), and gunicorn's lines in them."""

import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from unittest import mock

from celery import signals
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

from config import logs, task_logs
from config.celery import app as celery_app
from config.request_id import request_id_or_new
from payouts.tasks import process_payout
from webhooks.tasks import dispatch_event

SRC_DIR = Path(settings.BASE_DIR)
BIN_DIR = Path(sys.executable).parent
CONSOLE_LINE = re.compile(
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<level>[A-Z]+) (?P<logger>\S+) (?P<rest>.*)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def context(**values: str) -> Iterator[None]:
    """The log context set as a request or a task sets it, and reset after."""
    tokens = [(variable, variable.set(values.get(name))) for name, variable in logs.CONTEXT]
    try:
        yield
    finally:
        for variable, token in reversed(tokens):
            variable.reset(token)


class FormatTestCase(SimpleTestCase):
    log_format = "json"

    def setUp(self) -> None:
        self.stream = io.StringIO()
        handler = logging.StreamHandler(self.stream)
        handler.setFormatter(logs.make_formatter(self.log_format))
        handler.addFilter(logs.ContextFilter())
        self.logger = logging.getLogger(f"payouts.tests.logs.{self.log_format}")
        self.logger.addHandler(handler)
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.addCleanup(self.logger.removeHandler, handler)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()


class JsonFormatTests(FormatTestCase):
    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines()]

    def test_a_line_is_one_json_object_with_timestamp_level_logger_and_message(self) -> None:
        self.logger.info("payout %s: %s", "p-1", 'quotes " and\nnewlines')
        [record] = self.records()
        self.assertEqual(
            {key: record[key] for key in ("level", "logger", "message")},
            {
                "level": "INFO",
                "logger": self.logger.name,
                "message": 'payout p-1: quotes " and\nnewlines',
            },
        )
        stamp = datetime.fromisoformat(record["timestamp"])
        self.assertEqual(stamp.utcoffset(), timedelta(0))  # ISO 8601, UTC
        self.assertLess(abs(datetime.now(timezone.utc) - stamp), timedelta(minutes=1))

    def test_context_fields_appear_only_when_set(self) -> None:
        self.logger.warning("outside any request")
        with context(request_id="req-1"):
            self.logger.warning("in a request")
        with context(request_id="req-1", task_id="task-9", payout_id="p-7"):
            self.logger.warning("in a task")
        outside, request, task = self.records()
        self.assertFalse({"request_id", "task_id", "payout_id"} & set(outside))
        self.assertEqual(request["request_id"], "req-1")
        self.assertFalse({"task_id", "payout_id"} & set(request))
        self.assertEqual(
            (task["request_id"], task["task_id"], task["payout_id"]), ("req-1", "task-9", "p-7")
        )

    def test_an_explicit_extra_is_not_overwritten_by_the_context(self) -> None:
        with context(request_id="the-request"):
            self.logger.info("access line", extra={"request_id": "from-the-header"})
        self.assertEqual(self.records()[0]["request_id"], "from-the-header")

    def test_a_traceback_is_a_field_of_the_same_line(self) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            self.logger.exception("attempt failed")
        [record] = self.records()
        self.assertEqual(record["message"], "attempt failed")
        self.assertIn("ValueError: boom", record["exc_info"])

    def test_a_line_logged_after_the_request_finds_the_id_on_the_request(self) -> None:
        # django.request's "Conflict: /path" is logged once every middleware has returned.
        request = mock.Mock(spec=["request_id"], request_id="req-late")
        self.logger.warning("Conflict: /x", extra={"request": request, "status_code": 409})
        [record] = self.records()
        self.assertEqual((record["request_id"], record["status_code"]), ("req-late", 409))


class ConsoleFormatTests(FormatTestCase):
    log_format = "console"

    def test_a_line_reads_time_level_logger_message_then_the_context(self) -> None:
        self.logger.info("no context")
        with context(request_id="req-1", task_id="task-9"):
            self.logger.warning("payout %s queued", "p-1")
        plain, with_context = (CONSOLE_LINE.fullmatch(line) for line in self.lines())
        assert plain is not None and with_context is not None, self.lines()
        self.assertEqual((plain["level"], plain["logger"]), ("INFO", self.logger.name))
        self.assertEqual(plain["rest"], "no context")
        self.assertEqual(with_context["rest"], "payout p-1 queued request_id=req-1 task_id=task-9")

    def test_the_context_comes_before_a_traceback(self) -> None:
        with context(payout_id="p-7"):
            try:
                raise ValueError("boom")
            except ValueError:
                self.logger.exception("attempt failed")
        first, *traceback = self.lines()
        self.assertTrue(first.endswith("attempt failed payout_id=p-7"), first)
        self.assertEqual(traceback[-1], "ValueError: boom")


class LogFormatSettingTests(SimpleTestCase):
    def log_format(self, **env: str) -> str:
        """log_format_from_env() with only `env` of DJANGO_ENV and LOG_FORMAT set."""
        rest = {k: v for k, v in os.environ.items() if k not in ("DJANGO_ENV", "LOG_FORMAT")}
        with mock.patch.dict(os.environ, {**rest, **env}, clear=True):
            return logs.log_format_from_env()

    def test_json_in_production_and_console_locally_by_default(self) -> None:
        self.assertEqual(self.log_format(DJANGO_ENV="production"), "json")
        self.assertEqual(self.log_format(DJANGO_ENV="local"), "console")
        self.assertEqual(self.log_format(DJANGO_ENV="local", LOG_FORMAT=""), "console")

    def test_log_format_overrides_the_default(self) -> None:
        self.assertEqual(self.log_format(DJANGO_ENV="production", LOG_FORMAT="console"), "console")
        self.assertEqual(self.log_format(DJANGO_ENV="local", LOG_FORMAT="JSON"), "json")

    def test_an_unknown_log_format_is_refused(self) -> None:
        with self.assertRaisesMessage(ImproperlyConfigured, "LOG_FORMAT must be json or console"):
            self.log_format(LOG_FORMAT="xml")

    def test_the_configured_handler_adds_the_context(self) -> None:
        # This run's logging is settings.LOGGING's: the root handler has the filter.
        [handler] = logging.getLogger().handlers
        self.assertTrue(any(isinstance(f, logs.ContextFilter) for f in handler.filters))
        self.assertIsInstance(handler.formatter, logs.ConsoleFormatter)  # DJANGO_ENV=local


class RequestIdValidationTests(SimpleTestCase):
    def test_valid_ids_are_kept(self) -> None:
        for valid in ("a", "A-z_0.9:x", "x" * 128, "4bf92f3577b34da6a3ce929d0e0e4736"):
            self.assertEqual(request_id_or_new(valid), valid)

    def test_anything_else_is_replaced_by_a_new_uuid4_hex(self) -> None:
        for invalid in (None, "", "x" * 129, "two words", "a\nforged line", "é", "a/b", "a\x00"):
            new = request_id_or_new(invalid)
            self.assertRegex(new, r"^[0-9a-f]{32}$")
            self.assertNotEqual(new, invalid)
        self.assertNotEqual(request_id_or_new(None), request_id_or_new(None))


class TaskLogContextTests(SimpleTestCase):
    """config/task_logs.py in process; the request-to-worker path is in api/test_request_id."""

    def test_the_payout_id_comes_from_the_named_argument_of_the_task(self) -> None:
        self.assertEqual(task_logs.payout_id_of(process_payout, ("p-1",), {}), "p-1")
        self.assertEqual(task_logs.payout_id_of(process_payout, (), {"payout_id": "p-2"}), "p-2")
        self.assertIsNone(task_logs.payout_id_of(dispatch_event, ("event-1",), {}))
        with context(payout_id="p-3"):  # a task run in process (apply()) keeps the caller's
            self.assertEqual(task_logs.payout_id_of(dispatch_event, ("event-1",), {}), "p-3")

    def test_a_task_run_in_process_sets_its_context_and_restores_the_callers(self) -> None:
        seen: list[tuple[str | None, ...]] = []

        def record(**_: Any) -> None:
            seen.append(tuple(variable.get() for _, variable in logs.CONTEXT))

        signals.task_success.connect(record, weak=False)
        self.addCleanup(signals.task_success.disconnect, record)
        with context(request_id="req-1"):
            result = celery_app.tasks["celery.accumulate"].apply(args=(1,), task_id="task-1")
            after = tuple(variable.get() for _, variable in logs.CONTEXT)
        self.assertEqual(result.get(), (1,))
        self.assertEqual(seen, [("req-1", "task-1", None)])
        self.assertEqual(after, ("req-1", None, None))


class GunicornLogTests(SimpleTestCase):
    """gunicorn's own lines, in the application's format (gunicorn.conf.py's logconfig_dict)."""

    def serve_one_request(self, **env: str) -> tuple[str, str]:
        """gunicorn (one worker) answering GET /healthz once; its stdout and stderr."""
        port = free_port()
        with tempfile.TemporaryDirectory() as data_dir:
            environment = {
                "PATH": f"{BIN_DIR}{os.pathsep}/usr/bin:/bin",
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DJANGO_ENV": "local",
                "PAYOUTS_LOCAL_DATA_DIR": data_dir,
                "PORT": str(port),
                "WEB_CONCURRENCY": "1",
                **env,
            }
            with (
                tempfile.TemporaryFile("w+") as out,
                tempfile.TemporaryFile("w+") as err,
            ):
                process = subprocess.Popen(
                    [str(BIN_DIR / "gunicorn"), "config.wsgi"],
                    cwd=SRC_DIR,
                    env=environment,
                    stdout=out,
                    stderr=err,
                )
                try:
                    self.get_healthz(port, process)
                finally:
                    process.send_signal(signal.SIGTERM)
                    process.wait(timeout=30)
                out.seek(0)
                err.seek(0)
                return out.read(), err.read()

    def get_healthz(self, port: int, process: subprocess.Popen[Any]) -> None:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/healthz", headers={"X-Request-ID": "probe-42"}
        )
        deadline = time.monotonic() + 60
        while True:
            self.assertIsNone(process.poll(), "gunicorn exited")
            try:
                with urllib.request.urlopen(request, timeout=2) as response:
                    self.assertEqual(response.headers["X-Request-ID"], "probe-42")
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def test_json_access_lines_carry_method_path_status_duration_and_request_id(self) -> None:
        out, err = self.serve_one_request(LOG_FORMAT="json")
        access = [json.loads(line) for line in out.splitlines()]
        [line] = [line for line in access if line.get("path") == "/healthz"]
        self.assertEqual(line["logger"], "gunicorn.access")
        self.assertEqual(
            (line["method"], line["status"], line["request_id"]), ("GET", 200, "probe-42")
        )
        self.assertIsInstance(line["duration_ms"], int)
        self.assertIn('"GET /healthz HTTP/1.1" 200', line["message"])
        errors = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
        self.assertTrue(any(e["message"].startswith("Listening at") for e in errors), err)
        self.assertEqual({e["logger"] for e in errors}, {"gunicorn.error"}, err)

    def test_console_access_lines_read_like_the_application_lines(self) -> None:
        out, _ = self.serve_one_request()  # DJANGO_ENV=local: console
        [line] = [line for line in out.splitlines() if "/healthz" in line]
        match = CONSOLE_LINE.fullmatch(line)
        assert match is not None, line
        self.assertEqual(match["logger"], "gunicorn.access")
        self.assertRegex(
            match["rest"], r'"GET /healthz HTTP/1.1" 200 \d+ \d+ms .* request_id=probe-42$'
        )
