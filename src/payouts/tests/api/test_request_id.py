"""The request id (config/request_id.py) and the log context it starts, from the API to the
worker: echoed, present on the request's lines, carried into the tasks the request queues
(config/task_logs.py), and never the full destination anywhere in the logs.
"""

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from celery.worker.request import Request
from django.conf import settings
from django.test import override_settings
from rest_framework.test import APIClient, APITransactionTestCase

from config import logs
from config.celery import app as celery_app
from payouts.models import PayoutRequest, PayoutStatus

from .helpers import LIST_URL, ApiTestCase, payout_body

NEW_ID = r"^[0-9a-f]{32}$"
# A real-looking account number, in no sandbox test case and in no other field of the payout.
DESTINATION = "40817810099910004312"


@contextmanager
def captured_logs() -> Iterator[io.StringIO]:
    """Every record of every logger at DEBUG, written as production writes them: JSON lines
    through the handler filter and formatter of config/logs.py."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.make_formatter("json"))
    handler.addFilter(logs.ContextFilter())
    root = logging.getLogger()
    loggers = [
        root,
        *(x for x in root.manager.loggerDict.values() if isinstance(x, logging.Logger)),
    ]
    levels = [(logger, logger.level) for logger in loggers]
    islands = [logger for logger in loggers if not logger.propagate]  # gunicorn's, celery.task
    console = root.handlers[:]  # the run's own handler: not a screenful of DEBUG lines
    for logger in loggers:
        logger.setLevel(logging.DEBUG)
    root.handlers = [handler]
    for logger in islands:
        logger.addHandler(handler)
    try:
        yield stream
    finally:
        root.handlers = console
        for logger in islands:
            logger.removeHandler(handler)
        for logger, level in levels:
            logger.setLevel(level)


def records(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


class RequestIdTests(ApiTestCase):
    def get(self, request_id: str | None = None) -> Any:
        headers = {} if request_id is None else {"X-Request-ID": request_id}
        return self.client.get(LIST_URL, headers=headers)

    def test_a_valid_incoming_id_is_echoed(self) -> None:
        for valid in ("abc", "req_1.2:3-x", "a" * 128, "4bf92f3577b34da6a3ce929d0e0e4736"):
            response = self.get(valid)
            self.assertEqual(response.status_code, 200)
            self.assertEqual(response["X-Request-ID"], valid)

    def test_an_invalid_or_overlong_id_is_replaced_and_never_echoed_or_logged(self) -> None:
        invalid = ["", "a" * 129, "two words", "x\r\nSet-Cookie: a=b", "é", "a/b", "{json}"]
        for value in invalid:
            with captured_logs() as stream:
                response = self.get(value)
            self.assertRegex(response["X-Request-ID"], NEW_ID)
            if value:
                self.assertNotIn(value, stream.getvalue())

    def test_an_id_is_generated_when_absent_and_differs_per_request(self) -> None:
        first, second = self.get()["X-Request-ID"], self.get()["X-Request-ID"]
        self.assertRegex(first, NEW_ID)
        self.assertRegex(second, NEW_ID)
        self.assertNotEqual(first, second)

    def test_error_answers_carry_it_too(self) -> None:
        anonymous = APIClient().get(LIST_URL, HTTP_X_REQUEST_ID="anon-1")
        self.assertProblem(anonymous, 401, "not_authenticated")
        self.assertEqual(anonymous["X-Request-ID"], "anon-1")
        missing = self.client.get("/no/such/page", HTTP_X_REQUEST_ID="lost-1")
        self.assertEqual((missing.status_code, missing["X-Request-ID"]), (404, "lost-1"))

    def test_lines_of_a_request_carry_its_id_and_it_does_not_leak_into_the_next(self) -> None:
        self.assertEqual(self.create().status_code, 201)
        with captured_logs() as stream:
            # The same client_reference with another amount: 409, which django.request logs
            # once the response is complete.
            conflict = self.client.post(
                LIST_URL, payout_body(amount="1.00"), format="json", HTTP_X_REQUEST_ID="req-409"
            )
            self.assertIsNone(logs.request_id.get())  # reset once the request is over
            listed = self.get()
        self.assertEqual(conflict.status_code, 409)
        lines = records(stream)
        [logged] = [line for line in lines if line["logger"] == "django.request"]
        self.assertEqual((logged["request_id"], logged["status_code"]), ("req-409", 409))
        self.assertNotIn("req-409", json.dumps([line for line in lines if line is not logged]))
        self.assertNotEqual(listed["X-Request-ID"], "req-409")


@override_settings(PAYOUTS_SANDBOX_LATENCY_MS=0)
class LogContextFromRequestToWorkerTests(APITransactionTestCase):
    """A payout created over HTTP and processed by the worker's own code, on the real broker.

    A TransactionTestCase: the task is published on commit, and only a real commit runs that
    inside the request (a TestCase's transaction would defer it past the request's end). The
    worker's part runs here: each message is taken off the broker and executed as the worker
    executes it (celery.worker.request.Request), so task_prerun and task_postrun run for real.
    """

    def setUp(self) -> None:
        self.merchant, self.key = ApiTestCase.make_merchant("merchant-logs")
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {self.key}")
        celery_app.control.purge()  # messages earlier tests left on this run's queues
        self.addCleanup(celery_app.control.purge)

    @staticmethod
    def take(queue: str) -> list[Any]:
        """Take every message now on `queue` off the broker (acknowledged: gone)."""
        with celery_app.connection_for_read() as connection:
            channel: Any = connection.default_channel  # kombu's stubs lack basic_get
            messages = []
            while (message := channel.basic_get(queue)) is not None:
                message.ack()
                messages.append(message)
        return messages

    @staticmethod
    def execute_as_worker(messages: list[Any]) -> list[dict[str, Any]]:
        """Execute each message as the worker does; return their headers."""
        for message in messages:
            task = celery_app.tasks[message.headers["task"]]
            task.__trace__ = None  # the worker builds it once, at the log level of the moment
            Request(message, app=celery_app, task=task).execute()
        return [dict(message.headers) for message in messages]

    def test_the_request_id_follows_the_payout_into_the_worker_and_the_destination_never_shows(
        self,
    ) -> None:
        layout = settings.CELERY_QUEUE_LAYOUT
        with captured_logs() as stream:
            hook = self.client.post(
                "/api/v1/webhook-endpoints/", {"url": "http://127.0.0.1:9/hooks"}, format="json"
            )
            self.assertEqual(hook.status_code, 201, hook.content)
            created = self.client.post(
                LIST_URL,
                payout_body(client_reference="logs-1", destination=DESTINATION),
                format="json",
                HTTP_X_REQUEST_ID="req-create-1",
            )
            self.assertEqual(created.status_code, 201, created.content)
            self.assertEqual(created["X-Request-ID"], "req-create-1")
            payout_id = created.json()["id"]
            # A conflicting retry of the create with another destination: django.request logs
            # the 409, and neither destination may show.
            conflict = self.client.post(
                LIST_URL,
                payout_body(client_reference="logs-1", destination="GB33BUKB20201555555555"),
                format="json",
                HTTP_X_REQUEST_ID="req-create-2",
            )
            self.assertEqual(conflict.status_code, 409, conflict.content)

            [processed] = self.execute_as_worker(self.take(layout.payouts))
            dispatches = self.execute_as_worker(self.take(layout.webhooks))
            deliveries = [dict(message.headers) for message in self.take(layout.webhooks)]
            self.assertIsNone(logs.request_id.get())  # the worker's context was reset

        self.assertEqual(PayoutRequest.objects.get(pk=payout_id).status, PayoutStatus.PAID)
        # Published by the request: its id in the message headers.
        self.assertEqual(processed["task"], "payouts.tasks.process_payout")
        self.assertEqual(processed["request_id"], "req-create-1")
        # payout.created (published by the request), processing and paid (by the worker, in the
        # payout's context): each dispatch and delivery carries what its publisher knew.
        self.assertEqual(len(dispatches), 3, dispatches)
        self.assertEqual({d["request_id"] for d in dispatches}, {"req-create-1"})
        self.assertEqual([d.get("payout_id") for d in dispatches].count(payout_id), 2)
        self.assertTrue(deliveries)
        self.assertEqual({d["request_id"] for d in deliveries}, {"req-create-1"})

        lines = records(stream)
        text = stream.getvalue()
        self.assertNotIn(DESTINATION, text)
        self.assertNotIn("GB33BUKB20201555555555", text)
        [rejected] = [line for line in lines if line["logger"] == "django.request"]
        self.assertEqual(rejected["request_id"], "req-create-2")
        # The worker's lines: the task's id, its payout and the request that queued it.
        task_lines = [line for line in lines if line.get("task_id") == processed["id"]]
        succeeded = f"Task payouts.tasks.process_payout[{processed['id']}] succeeded"
        self.assertTrue(any(succeeded in line["message"] for line in task_lines), lines)
        for line in task_lines:
            self.assertEqual((line["request_id"], line["payout_id"]), ("req-create-1", payout_id))
