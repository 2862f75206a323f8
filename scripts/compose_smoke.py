#!/usr/bin/env python3
"""Run docker-compose.yml's services the way the image would, with no container engine.

    scripts/test_services.sh .venv/bin/python scripts/compose_smoke.py      (make compose-smoke)

test_services.sh provides a throwaway PostgreSQL and Redis (DATABASE_URL, CELERY_BROKER_URL);
they stand in for the compose `db` and `redis` services. The check then:

1. resolves docker-compose.yml as Compose does with an empty host environment and no .env file
   (YAML anchors and merge keys, then `${VAR}`, `${VAR:-default}`, `${VAR-default}`,
   `${VAR:?error}`, `${VAR:+alt}`, `$$`) and validates the result against the Compose
   Specification schema that check-jsonschema vendors;
2. builds the image's file system from the Dockerfile's final stage in a temporary root: only
   what it COPYs (src/ filtered by .dockerignore, and a virtualenv made from requirements.txt
   alone, cached under .cache/ by the requirements' hash), then its RUN steps (collectstatic;
   user creation and chown need root and are skipped). Paths inside the image (/app, /opt/venv,
   /tmp, /home/app) are mapped into that root; nothing else is changed;
3. runs each app service's exact entrypoint + command with exactly its environment (the image's
   ENV, then the service's `environment`; the base image's PATH holds only the host's system
   tools, without Redis or PostgreSQL programs, which the image does not ship). Only the host and
   port of `db` and `redis` in DATABASE_URL / CELERY_BROKER_URL are pointed at the throwaway
   servers; the `db` service's user, password and database are created there as the postgres
   image would. If port 8000 is taken, PORT alone is changed (and said so);
4. passes when: migrate exits 0 and leaves a generated secret key (0600, never printed) that every
   service then uses; `check --deploy --fail-level WARNING` passes as configured (only the TLS-only
   checks silenced) and with DJANGO_BEHIND_TLS_PROXY=1 (nothing silenced); web answers /readyz
   200; its /metrics answers the metrics token migrate generated, asked as the monitoring
   profile's Prometheus asks; a payout created over HTTP with a key from `create_api_client` is
   PAID by the worker; beat starts and sends the recovery sweep, which the worker runs; every
   service's own health check (and the Dockerfile's HEALTHCHECK) succeeds in that service's
   environment; and the brief's in-container test command, `python manage.py test -v 2`, passes
   in the web service's environment (broker database 15, as tasks.ps1 test uses).

What it cannot prove without an engine: that the image builds (the base image, apt, pip on its
Python), the non-root user and file ownership, the stock postgres and redis images and their
health checks, container networking, published ports, restart policies, depends_on ordering
as the engine applies it, init, and stop_grace_period. Services in a profile (`monitoring`: the
third-party Prometheus and Grafana images) are not run: scripts/check_monitoring.py checks
their files.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema.validators import validator_for

REPO_DIR = Path(__file__).resolve().parent.parent
CACHE_DIR = REPO_DIR / ".cache" / "compose-smoke"
APP_SERVICES = ("migrate", "web", "worker", "webhooks-worker", "beat")
# Directories that exist inside the image and are mapped into the temporary root.
IMAGE_ROOTS = ("/app", "/opt/venv", "/tmp", "/home/app")
# The base image's own ENV (python:3.11-slim-bookworm): the Dockerfile's ENV builds on it.
BASE_IMAGE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
# Host programs the image does not ship, hidden from the services' PATH.
NOT_IN_IMAGE = re.compile(
    r"^(redis-.*|postgres|postmaster|pg_.*|initdb|psql|createdb|dropdb|createuser|dropuser)$"
)
# Dockerfile RUN commands that need root and a user database: the smoke check skips them.
ROOT_ONLY_COMMANDS = {"groupadd", "useradd", "chown"}
# Checks that need HTTPS to pass (settings.TLS_ONLY_CHECKS): the only ones that may be silenced.
TLS_ONLY_CHECKS = {"security.W004", "security.W008", "security.W012", "security.W016"}
# tasks.ps1 test runs the suite with this broker (its own Redis database).
TEST_BROKER_URL = "redis://redis:6379/15"


class SmokeFailure(Exception):
    pass


def say(message: str) -> None:
    print(f"compose-smoke: {message}", flush=True)


# --- Compose: interpolation and resolution ----------------------------------------------------

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def interpolate(text: str, env: Mapping[str, str], where: str = "") -> str:
    """Compose's variable substitution (compose-spec "Interpolation"), nested defaults included."""
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "$":
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1 : i + 2]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "{":
            depth, j = 1, i + 2
            while j < len(text) and depth:
                if text[j] == "$" and text[j + 1 : j + 2] == "{":
                    depth += 1
                    j += 1
                elif text[j] == "}":
                    depth -= 1
                j += 1
            if depth:
                raise SmokeFailure(f"{where}: unclosed ${{ in {text!r}")
            out.append(_substitute(text[i + 2 : j - 1], env, where))
            i = j
        elif match := NAME.match(text, i + 1):
            out.append(env.get(match.group(), ""))
            i = match.end()
        else:
            raise SmokeFailure(f"{where}: invalid interpolation format in {text!r}")
    return "".join(out)


def _substitute(expression: str, env: Mapping[str, str], where: str) -> str:
    match = NAME.match(expression)
    if not match:
        raise SmokeFailure(f"{where}: invalid interpolation ${{{expression}}}")
    name, rest = match.group(), expression[match.end() :]
    value = env.get(name)
    if not rest:
        return value or ""
    for operator in (":-", ":?", ":+", "-", "?", "+"):
        if rest.startswith(operator):
            word = rest[len(operator) :]
            break
    else:
        raise SmokeFailure(f"{where}: invalid interpolation ${{{expression}}}")
    present = bool(value) if operator.startswith(":") else value is not None
    if operator.endswith("-"):
        return value if present and value is not None else interpolate(word, env, where)
    if operator.endswith("+"):
        return interpolate(word, env, where) if present else ""
    if not present:  # ? and :?
        raise SmokeFailure(f"{where}: required variable {name}: {interpolate(word, env, where)}")
    return value or ""


def interpolate_tree(node: Any, env: Mapping[str, str], where: str = "$") -> Any:
    if isinstance(node, str):
        return interpolate(node, env, where)
    if isinstance(node, dict):
        return {key: interpolate_tree(value, env, f"{where}.{key}") for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate_tree(value, env, f"{where}[{n}]") for n, value in enumerate(node)]
    return node


def resolve_compose(path: Path, host_env: Mapping[str, str]) -> dict[str, Any]:
    """The compose file after YAML anchors/merge keys and interpolation, schema-validated."""
    document = yaml.safe_load(path.read_text("utf-8"))
    resolved: dict[str, Any] = interpolate_tree(document, host_env)
    vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema = json.loads(vendor.joinpath("compose-spec.json").read_text("utf-8"))
    validator = validator_for(schema)(schema)
    errors = [f"{e.json_path}: {e.message}" for e in validator.iter_errors(resolved)]
    if errors:
        raise SmokeFailure("resolved compose file is invalid:\n  " + "\n  ".join(errors))
    return resolved


def service_environment(service: dict[str, Any], host_env: Mapping[str, str]) -> dict[str, str]:
    """`env_file` (optional files that are absent add nothing) then `environment`."""
    env: dict[str, str] = {}
    env_files = service.get("env_file") or []
    for entry in [env_files] if isinstance(env_files, (str, dict)) else env_files:
        spec = {"path": entry} if isinstance(entry, str) else entry
        if spec.get("required", True):
            raise SmokeFailure(f"required env_file {spec['path']!r}: a fresh clone has none")
    raw = service.get("environment") or {}
    items = raw.items() if isinstance(raw, dict) else (item.partition("=")[::2] for item in raw)
    for key, value in items:
        if value is None:  # `KEY:` alone takes the host's value; the host environment is empty
            if key in host_env:
                env[key] = host_env[key]
            continue
        env[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


# --- Dockerfile -------------------------------------------------------------------------------


@dataclass
class Stage:
    base: str
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    entrypoint: list[str] = field(default_factory=list)
    cmd: list[str] = field(default_factory=list)
    healthcheck: list[str] = field(default_factory=list)
    # In order: ("COPY", [args...], env, workdir) and ("RUN", command, env, workdir).
    steps: list[tuple[str, Any, dict[str, str], str]] = field(default_factory=list)


def dockerfile_instructions(path: Path) -> Iterator[tuple[str, str]]:
    logical = ""
    for line in path.read_text("utf-8").splitlines():
        stripped = line.strip()
        if stripped.startswith("#") or (not stripped and logical):
            continue
        if stripped.endswith("\\"):
            logical += stripped[:-1] + " "
            continue
        logical += stripped
        if logical.strip():
            keyword, _, rest = logical.strip().partition(" ")
            yield keyword.upper(), rest.strip()
        logical = ""


def expand_build_vars(text: str, env: Mapping[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: env.get(m.group(1) or m.group(2), ""), text)


def runtime_stage(path: Path) -> Stage:
    """The Dockerfile's final stage: what the image contains and how it starts."""
    stage: Stage | None = None
    for keyword, rest in dockerfile_instructions(path):
        if keyword == "FROM":
            stage = Stage(base=rest.split()[0], env=dict(BASE_IMAGE_ENV))
            continue
        if stage is None:
            continue
        if keyword == "ENV":
            for pair in shlex.split(rest):
                key, _, value = pair.partition("=")
                stage.env[key] = expand_build_vars(value, stage.env)
        elif keyword == "WORKDIR":
            stage.workdir = rest
        elif keyword == "USER":
            stage.user = rest
        elif keyword == "ENTRYPOINT":
            stage.entrypoint = json.loads(rest)
        elif keyword == "CMD":
            stage.cmd = json.loads(rest)
        elif keyword == "HEALTHCHECK":
            stage.healthcheck = json.loads(rest[rest.index("CMD") + 3 :].strip())
            stage.healthcheck.insert(0, "CMD")
        elif keyword == "COPY":
            stage.steps.append(("COPY", shlex.split(rest), dict(stage.env), stage.workdir))
        elif keyword == "RUN":
            stage.steps.append(("RUN", rest, dict(stage.env), stage.workdir))
    if stage is None:
        raise SmokeFailure(f"{path}: no FROM")
    return stage


def dockerignore_patterns(context: Path) -> list[tuple[bool, re.Pattern[str]]]:
    """.dockerignore as (exclude?, regex) pairs; the last matching pattern wins."""
    patterns = []
    path = context / ".dockerignore"
    for line in path.read_text("utf-8").splitlines() if path.exists() else []:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exclude = not line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = ""
        k = 0
        while k < len(glob):
            if glob.startswith("**/", k):
                regex, k = regex + "(?:.*/)?", k + 3
            elif glob.startswith("**", k):
                regex, k = regex + ".*", k + 2
            elif glob[k] == "*":
                regex, k = regex + "[^/]*", k + 1
            elif glob[k] == "?":
                regex, k = regex + "[^/]", k + 1
            else:
                regex, k = regex + re.escape(glob[k]), k + 1
        # A pattern naming a directory excludes everything in it.
        patterns.append((exclude, re.compile(f"^{regex}(?:/.*)?$")))
    return patterns


def copy_context(context: Path, source: str, target: Path) -> None:
    patterns = dockerignore_patterns(context)

    def ignored(relative: str) -> bool:
        verdict = False
        for exclude, regex in patterns:
            if regex.match(relative):
                verdict = exclude
        return verdict

    source_path = context / source
    for path in sorted(source_path.rglob("*")):
        relative = path.relative_to(context).as_posix()
        if path.is_dir() or ignored(relative):
            continue
        destination = target / path.relative_to(source_path)
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, destination)


# --- The image's file system in a temporary root -----------------------------------------------


class Image:
    """The image's layout under `root`; `host()` maps an in-image path (or text) into it."""

    def __init__(self, root: Path, stage: Stage, venv: Path) -> None:
        self.root = root
        self.stage = stage
        self.venv = venv
        self.system_bin = root.parent / "system-bin"
        pattern = "|".join(re.escape(prefix) for prefix in IMAGE_ROOTS)
        self._paths = re.compile(rf"(?<![\w./-])({pattern})(?=/|$|[^\w.-])")

    def host(self, text: str) -> str:
        return self._paths.sub(lambda m: str(self.root) + m.group(1), text)

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """A container's environment mapped into the root; the base PATH is the system-bin."""
        mapped = {key: self.host(value) for key, value in env.items()}
        base_path = BASE_IMAGE_ENV["PATH"]
        mapped["PATH"] = mapped["PATH"].replace(base_path, str(self.system_bin))
        return mapped

    def build(self, context: Path) -> None:
        self._make_system_bin()
        for directory in IMAGE_ROOTS:
            if directory != "/opt/venv":
                Path(self.host(directory)).mkdir(parents=True, exist_ok=True)
        for kind, spec, env, workdir in self.stage.steps:
            if kind == "COPY":
                sources, target = [a for a in spec if not a.startswith("--")], None
                *sources, target = sources
                if any(a.startswith("--from=") for a in spec):
                    if target != "/opt/venv":
                        raise SmokeFailure(f"COPY {spec}: only the builder's venv is known")
                    Path(self.host(target)).parent.mkdir(parents=True, exist_ok=True)
                    Path(self.host(target)).symlink_to(self.venv, target_is_directory=True)
                    say(f"COPY --from=builder /opt/venv: {self.venv} (requirements.txt only)")
                    continue
                for source in sources:
                    copy_context(context, source, Path(self.host(target)))
                    say(f"COPY {source} {target}: (.dockerignore applied)")
            else:
                self._run(spec, env, workdir)

    def _make_system_bin(self) -> None:
        self.system_bin.mkdir(parents=True)
        for directory in BASE_IMAGE_ENV["PATH"].split(":"):
            for program in sorted(Path(directory).glob("*")) if Path(directory).is_dir() else []:
                link = self.system_bin / program.name
                hidden = NOT_IN_IMAGE.match(program.name)
                if not hidden and not link.exists() and os.access(program, os.X_OK):
                    link.symlink_to(program)

    def _run(self, command: str, env: dict[str, str], workdir: str) -> None:
        for segment in re.split(r"\s&&\s", command):
            words = shlex.split(segment)
            program = next((w for w in words if not re.match(r"^\w+=", w)), "")
            if program in ROOT_ONLY_COMMANDS:
                say(f"RUN {segment.strip()}: skipped (needs root and the image's users)")
                continue
            say(f"RUN {segment.strip()}")
            result = subprocess.run(
                ["/bin/sh", "-c", self.host(segment)],
                env=self.environment(env),
                cwd=self.host(workdir),
                capture_output=True,
                text=True,
                timeout=300,
            )
            if result.returncode:
                raise SmokeFailure(f"RUN {segment!r} failed:\n{result.stdout}{result.stderr}")


@contextmanager
def runtime_venv() -> Iterator[Path]:
    """A virtualenv with requirements.txt alone, cached by its hash and this Python."""
    requirements = (REPO_DIR / "requirements.txt").read_bytes()
    digest = hashlib.sha256(requirements + sys.version.encode()).hexdigest()[:16]
    venv = CACHE_DIR / f"venv-{digest}"
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (venv / ".complete").exists():
            shutil.rmtree(venv, ignore_errors=True)
            say(f"creating the runtime virtualenv {venv} (cached for later runs)")
            # Built in place: a moved virtualenv's scripts would point at the old path.
            base_python = getattr(sys, "_base_executable", sys.executable)
            for step in (
                [base_python, "-m", "venv", str(venv)],
                [
                    str(venv / "bin" / "python"),
                    *("-m", "pip", "install", "--quiet", "--disable-pip-version-check"),
                    *("--require-virtualenv", "-r", str(REPO_DIR / "requirements.txt")),
                ],
            ):
                result = subprocess.run(step, capture_output=True, text=True)
                if result.returncode:
                    raise SmokeFailure(f"{shlex.join(step)}:\n{result.stdout}{result.stderr}")
            (venv / ".complete").touch()
        for stale in CACHE_DIR.glob("venv-*"):
            if stale != venv:
                shutil.rmtree(stale, ignore_errors=True)
    yield venv


# --- Throwaway servers --------------------------------------------------------------------------


@dataclass
class Servers:
    postgres: str  # host:port
    redis: str
    admin_url: str

    @classmethod
    def from_environment(cls) -> Servers:
        database_url = os.environ.get("DATABASE_URL", "")
        broker_url = os.environ.get("CELERY_BROKER_URL", "")
        if not database_url.startswith("postgres") or not broker_url.startswith("redis://"):
            raise SmokeFailure(
                "needs a throwaway PostgreSQL and Redis: run it as "
                "scripts/test_services.sh .venv/bin/python scripts/compose_smoke.py"
            )
        return cls(
            postgres=urllib.parse.urlsplit(database_url).netloc.rpartition("@")[2],
            redis=urllib.parse.urlsplit(broker_url).netloc.rpartition("@")[2],
            admin_url=database_url,
        )

    def point_at_servers(self, env: dict[str, str]) -> dict[str, str]:
        """Only the host:port of the compose `db` and `redis` services is changed."""
        targets = {"db": self.postgres, "redis": self.redis}
        for name in ("DATABASE_URL", "CELERY_BROKER_URL"):
            if name not in env:
                continue
            parts = urllib.parse.urlsplit(env[name])
            userinfo, _, hostport = parts.netloc.rpartition("@")
            host = hostport.rsplit(":", 1)[0]
            if host not in targets:
                raise SmokeFailure(f"{name}={env[name]!r} names no compose service")
            netloc = f"{userinfo}@{targets[host]}" if userinfo else targets[host]
            env[name] = urllib.parse.urlunsplit(parts._replace(netloc=netloc))
        return env

    def create_database(self, db_env: Mapping[str, str]) -> None:
        """What the postgres image does on first start with its POSTGRES_* variables."""
        import psycopg
        from psycopg import sql

        user = db_env.get("POSTGRES_USER", "postgres")
        database = db_env.get("POSTGRES_DB", user)
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone()
            if not exists:
                conn.execute(
                    sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD {}").format(
                        sql.Identifier(user), sql.Literal(db_env.get("POSTGRES_PASSWORD", ""))
                    )
                )
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", [database]
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(database), sql.Identifier(user)
                    )
                )


# --- Running services ---------------------------------------------------------------------------


@dataclass
class Service:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: str
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        say(f"start {self.name}: {shlex.join(self.argv)}")
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=self.cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def output(self) -> str:
        return self.log.read_text("utf-8", errors="replace") if self.log.exists() else ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def wait_for(what: str, condition: Callable[[], bool], timeout: float, service: Service) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if not service.alive():
            raise SmokeFailure(f"{service.name} exited while waiting for {what}")
        time.sleep(0.5)
    raise SmokeFailure(f"timed out after {timeout:.0f} s waiting for {what}")


def http(method: str, url: str, body: Any = None, key: str = "") -> tuple[int, Any]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def seconds(duration: str | int | float | None, default: float) -> float:
    """A compose duration ("10s", "1m30s") in seconds."""
    if duration is None:
        return default
    if isinstance(duration, (int, float)):
        return float(duration)
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 1e-6}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|us|h|m|s)", duration))


def healthcheck_argv(test: list[str] | str) -> list[str]:
    if isinstance(test, str):
        return ["/bin/sh", "-c", test]
    if test[0] == "CMD":
        return list(test[1:])
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", test[1]]
    raise SmokeFailure(f"unknown health check form {test[0]!r}")


# --- The check ----------------------------------------------------------------------------------


class Smoke:
    def __init__(self, args: argparse.Namespace, work: Path, venv: Path) -> None:
        self.args = args
        self.work = work
        self.servers = Servers.from_environment()
        self.stage = runtime_stage(args.dockerfile)
        self.image = Image(work / "root", self.stage, venv)
        self.compose = resolve_compose(args.compose, {})
        self.services: dict[str, Service] = {}
        self.web_port = "8000"
        self.secret = ""
        self.logs: list[str] = []  # every one-shot command's output, searched for the secret
        self.worker_metrics_ports: dict[str, str] = {}  # each worker's own :9100

    def env_for(self, name: str, compose: dict[str, Any] | None = None) -> dict[str, str]:
        """The container's environment: image ENV, then the service's, then Docker's own."""
        service = (compose or self.compose)["services"][name]
        env = dict(self.stage.env)
        env.update(service_environment(service, {}))
        # Docker sets HOSTNAME to the container's host name and HOME from the user's entry.
        env.setdefault("HOSTNAME", socket.gethostname())
        env.setdefault("HOME", "/home/app")
        if name == "web" and env.get("PORT") != self.web_port:
            env["PORT"] = self.web_port
        return self.image.environment(self.servers.point_at_servers(env))

    def container_env(self, name: str) -> dict[str, str]:
        """A long-running service's environment, with what Docker gives each container to
        itself made separate on this one host: its /tmp, where the entrypoint keeps the metric
        samples (each entrypoint empties that directory), and its network namespace, where
        both workers serve their /metrics on the same port."""
        env = self.env_for(name)
        env["PROMETHEUS_MULTIPROC_DIR"] = self.image.host(f"/tmp/prometheus-metrics-{name}")
        if env.get("PAYOUTS_WORKER_METRICS_PORT", "0") != "0":
            port = self.worker_metrics_ports.setdefault(name, str(free_port()))
            env["PAYOUTS_WORKER_METRICS_PORT"] = port
        return env

    def argv_for(self, name: str) -> list[str]:
        service = self.compose["services"][name]
        entrypoint = service.get("entrypoint", self.stage.entrypoint)
        command = service.get("command", self.stage.cmd)
        return [self.image.host(part) for part in [*entrypoint, *command]]

    def run(self, name: str, argv: list[str], env: dict[str, str], timeout: float) -> str:
        """A one-shot command (exec: no entrypoint unless argv has it); its output."""
        result = subprocess.run(
            argv,
            env=env,
            cwd=self.image.host(self.stage.workdir),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        output = result.stdout + result.stderr
        self.logs.append(output)
        if result.returncode:
            raise SmokeFailure(f"{name}: {shlex.join(argv)} exited {result.returncode}:\n{output}")
        return result.stdout

    def main(self) -> None:
        say(f"{self.args.compose.name}: resolved with an empty environment, schema-valid")
        for name, service in self.compose["services"].items():
            if service.get("profiles"):
                say(
                    f"{name}: profile {', '.join(service['profiles'])}, not run here (a "
                    "third-party image): scripts/check_monitoring.py validates its files"
                )
        if (self.args.compose.parent / ".env").exists():
            say(".env ignored: the check resolves the file as a fresh clone has it")
        self.image.build(REPO_DIR)
        self.servers.create_database(self.compose["services"]["db"].get("environment") or {})
        if not port_is_free(8000):
            self.web_port = str(free_port())
            say(f"port 8000 is taken on this machine: web gets PORT={self.web_port} (only change)")

        self.migrate()
        self.deploy_checks()
        for name in ("web", "worker", "webhooks-worker", "beat"):
            service = Service(
                name, self.argv_for(name), self.container_env(name), self.cwd, self.log(name)
            )
            self.services[name] = service
            service.start()
        self.web_ready()
        self.metrics_scrape()
        self.payout_is_paid()
        self.worker_metrics()
        self.health_checks()
        self.beat_sweeps()
        self.secret_stays_secret()
        for name, service in self.services.items():
            if not service.alive():
                raise SmokeFailure(f"{name} exited:\n{service.output()[-3000:]}")
            say(f"stop {name}: exit {service.stop()}")
        if not self.args.skip_tests:
            self.test_suite()
        self.secret_stays_secret()

    def key_file(self) -> Path:
        return Path(self.env_for("migrate")["DJANGO_SECRET_KEY_FILE"])

    @property
    def cwd(self) -> str:
        return self.image.host(self.stage.workdir)

    def log(self, name: str) -> Path:
        return self.work / f"{name}.log"

    def migrate(self) -> None:
        key_file = self.key_file()
        if key_file.exists():
            raise SmokeFailure(f"{key_file} exists before the first start")
        migrate = Service(
            "migrate",
            self.argv_for("migrate"),
            self.env_for("migrate"),
            self.cwd,
            self.log("migrate"),
        )
        migrate.start()
        assert migrate.process is not None
        status = migrate.process.wait(timeout=180)
        self.logs.append(migrate.output())
        if status:
            raise SmokeFailure(f"migrate exited {status}:\n{migrate.output()[-5000:]}")
        say("migrate: exit 0")
        mode = key_file.stat().st_mode & 0o777
        self.secret = key_file.read_text("utf-8").strip()
        if mode != 0o600 or len(self.secret) < 50:
            raise SmokeFailure(
                f"secret key file {key_file}: mode {oct(mode)}, {len(self.secret)} chars"
            )
        say(f"secret key generated on first start: {key_file} (0600, {len(self.secret)} chars)")

    def deploy_checks(self) -> None:
        check = ["python", "manage.py", "check", "--deploy", "--fail-level", "WARNING"]
        silenced = [
            "python",
            "manage.py",
            "shell",
            "--no-imports",
            "-c",
            "from django.conf import settings; print(','.join(settings.SILENCED_SYSTEM_CHECKS))",
        ]
        tls_compose = resolve_compose(self.args.compose, {"DJANGO_BEHIND_TLS_PROXY": "1"})
        for label, env, allowed in (
            ("as configured (plain http on loopback)", self.env_for("web"), TLS_ONLY_CHECKS),
            ("with DJANGO_BEHIND_TLS_PROXY=1", self.env_for("web", tls_compose), set()),
        ):
            self.run("check --deploy", check, env, timeout=120)
            names = set(filter(None, self.run("settings", silenced, env, 60).strip().split(",")))
            if not names <= allowed:
                raise SmokeFailure(f"check --deploy {label}: silenced {sorted(names - allowed)}")
            say(
                f"check --deploy --fail-level WARNING {label}: passes, silenced: "
                f"{', '.join(sorted(names)) or 'nothing'}"
            )

    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def web_ready(self) -> None:
        def ready() -> bool:
            try:
                return http("GET", f"{self.base_url()}/readyz") == (200, {"status": "ok"})
            except OSError:
                return False

        wait_for("web /readyz 200", ready, 90, self.services["web"])
        say(f'web: GET /readyz -> 200 {{"status": "ok"}} on port {self.web_port}')

    def metrics_scrape(self) -> None:
        """/metrics as the monitoring profile's Prometheus scrapes it, with the generated token.

        Prometheus reaches web:8000 as an HTTP proxy for http://localhost:8000/metrics
        (deploy/monitoring/prometheus/prometheus.yml), so Django sees a loopback Host.
        """
        token_file = Path(self.env_for("web")["PAYOUTS_METRICS_TOKEN_FILE"])
        mode = token_file.stat().st_mode & 0o777
        token = token_file.read_text("utf-8").strip()
        if mode != 0o600 or len(token) < 16:
            raise SmokeFailure(f"metrics token file {token_file}: mode {oct(mode)}, {len(token)}")
        proxy = urllib.request.ProxyHandler({"http": self.base_url()})
        opener = urllib.request.build_opener(proxy)
        url = "http://localhost:8000/metrics"
        for header, expected in ((f"Bearer {token}", 200), ("Bearer not-the-token", 401)):
            request = urllib.request.Request(url, headers={"Authorization": header})
            try:
                with opener.open(request, timeout=10) as response:
                    status, body = response.status, response.read().decode()
            except urllib.error.HTTPError as exc:
                status, body = exc.code, exc.read().decode(errors="replace")
            if status != expected or (expected == 200 and "payouts_unfinished{" not in body):
                raise SmokeFailure(f"GET {url} via web as a proxy: {status}\n{body[:2000]}")
        say(
            f"web: /metrics with the generated token ({token_file.name}, 0600) as Prometheus "
            "scrapes it -> 200, a wrong token -> 401"
        )

    def payout_is_paid(self) -> None:
        create = [
            "python",
            "manage.py",
            "create_api_client",
            f"compose-smoke-{uuid.uuid4().hex[:8]}",
        ]
        key = (
            self.run("create_api_client", create, self.env_for("web"), 60).strip().splitlines()[-1]
        )
        url = f"{self.base_url()}/api/v1/payout-requests/"
        body = {
            "client_reference": f"smoke-{uuid.uuid4()}",
            "amount": "10.00",
            "currency": "RUB",
            "destination": "sandbox:success",
        }
        status, created = http("POST", url, body, key)
        if status != 201:
            raise SmokeFailure(f"POST {url}: {status} {created}")
        detail = f"{url}{created['id']}/"
        state: dict[str, Any] = {}

        def paid() -> bool:
            state.update(http("GET", detail, key=key)[1])
            return state.get("status") == "PAID"

        wait_for("the payout to be PAID", paid, 60, self.services["worker"])
        say(f"worker: payout {created['id']} created over HTTP, PAID")

    def worker_metrics(self) -> None:
        """Each worker's own /metrics (compose: :9100) with the token; the payouts worker's
        shows the payout it just paid."""
        token = Path(self.env_for("web")["PAYOUTS_METRICS_TOKEN_FILE"]).read_text().strip()
        for name, port in self.worker_metrics_ports.items():
            url = f"http://127.0.0.1:{port}/metrics"
            bodies: list[str] = []

            def served(url: str = url, bodies: list[str] = bodies) -> bool:
                request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"})
                try:
                    with urllib.request.urlopen(request, timeout=5) as response:
                        bodies.append(response.read().decode())
                except OSError:
                    return False
                return True

            wait_for(f"{name} /metrics", served, 30, self.services[name])
            paid = 'payouts_finished_total{failure_code="",status="PAID"}'
            if name == "worker" and paid not in bodies[-1]:
                raise SmokeFailure(f"{name}: {url} has no {paid}:\n{bodies[-1][:2000]}")
            say(
                f"{name}: its own /metrics with the token -> 200"
                + (f", {paid}" if name == "worker" else "")
            )

    def health_checks(self) -> None:
        checks = [
            (name, service.get("healthcheck") or {})
            for name, service in self.compose["services"].items()
            if name in APP_SERVICES
        ]
        checks.append(("Dockerfile HEALTHCHECK (web)", {"test": self.stage.healthcheck}))
        for name, healthcheck in checks:
            if healthcheck.get("disable") or not healthcheck.get("test"):
                say(f"{name}: health check disabled")
                continue
            service_name = name if name in APP_SERVICES else "web"
            argv = [self.image.host(part) for part in healthcheck_argv(healthcheck["test"])]
            timeout = seconds(healthcheck.get("timeout"), 30)
            last = ""
            for _ in range(int(healthcheck.get("retries", 3))):
                result = subprocess.run(
                    argv,
                    env=self.env_for(service_name),
                    cwd=self.cwd,
                    capture_output=True,
                    text=True,
                    timeout=timeout + 5,
                    stdin=subprocess.DEVNULL,
                )
                self.logs.append(result.stdout + result.stderr)
                if result.returncode == 0:
                    say(f"{name}: health check passes: {' '.join(argv)[-100:]}")
                    break
                last = result.stdout + result.stderr
                time.sleep(2)
            else:
                raise SmokeFailure(f"{name}: health check fails: {argv}\n{last}")

    def beat_sweeps(self) -> None:
        beat, worker = self.services["beat"], self.services["worker"]
        interval = float(self.env_for("beat").get("PAYOUTS_SWEEP_INTERVAL_SECONDS", "30"))
        wait_for("beat to start", lambda: "beat: Starting" in beat.output(), 60, beat)
        wait_for(
            "beat to send the recovery sweep",
            lambda: "Sending due task payouts-recovery-sweep" in beat.output(),
            interval + 30,
            beat,
        )
        wait_for(
            "the worker to run the sweep",
            lambda: (
                re.search(r"recover_stale_payouts\[[^\]]+\] succeeded", worker.output()) is not None
            ),
            30,
            worker,
        )
        say("beat: started, sent payouts-recovery-sweep; the worker ran it")
        webhooks = self.services["webhooks-worker"]
        interval = float(self.env_for("beat").get("PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS", "10"))
        wait_for(
            "beat to send the webhooks sweep",
            lambda: "Sending due task webhooks-sweep" in beat.output(),
            interval + 30,
            beat,
        )
        wait_for(
            "the webhooks worker to run the webhooks sweep",
            lambda: re.search(r"sweep_webhooks\[[^\]]+\] succeeded", webhooks.output()) is not None,
            30,
            webhooks,
        )
        # The banner lists every registered task; only a received one counts.
        if re.search(r"Task webhooks\.tasks\.\w+\[[^\]]+\] received", worker.output()):
            raise SmokeFailure("the payouts worker ran a webhooks task: its queues are not split")
        say("beat: sent webhooks-sweep; the webhooks worker (alone) ran it")

    def secret_stays_secret(self) -> None:
        key_file = self.key_file()
        if key_file.read_text("utf-8").strip() != self.secret:
            raise SmokeFailure("the secret key changed after the first start")
        outputs = self.logs + [service.output() for service in self.services.values()]
        if any(self.secret in output for output in outputs):
            raise SmokeFailure("the secret key appears in a service's output")
        generated = sum(output.count("generated a secret key") for output in outputs)
        if generated != 1:
            raise SmokeFailure(f"a secret key was generated {generated} times, not once")

    def test_suite(self) -> None:
        argv = ["python", "manage.py", "test", "-v", "2"]
        env = self.env_for("web")
        env["CELERY_BROKER_URL"] = self.servers.point_at_servers(
            {"CELERY_BROKER_URL": TEST_BROKER_URL}
        )["CELERY_BROKER_URL"]
        say(f"in-image test suite: {shlex.join(argv)} (web's environment, broker database 15)")
        started = time.monotonic()
        result = subprocess.run(
            argv,
            env=env,
            cwd=self.cwd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=900,
        )
        output = result.stdout + result.stderr
        self.logs.append(output)
        (self.work / "tests.log").write_text(output)
        summary = [line for line in output.splitlines() if re.match(r"^\d+ passed, ", line)]
        skipped = sorted({m[1] for m in re.findall(r"skipped (['\"])(.*?)\1$", output, re.M)})
        if result.returncode:
            raise SmokeFailure(f"in-image test suite failed:\n{output[-8000:]}")
        say(
            f"in-image test suite: {summary[-1] if summary else '?'} "
            f"in {time.monotonic() - started:.0f} s"
        )
        for reason in skipped:
            say(f"  skipped: {reason}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--compose", type=Path, default=REPO_DIR / "docker-compose.yml")
    parser.add_argument("--dockerfile", type=Path, default=REPO_DIR / "Dockerfile")
    parser.add_argument("--skip-tests", action="store_true", help="skip the in-image test suite")
    parser.add_argument("--keep", action="store_true", help="keep the temporary root and logs")
    args = parser.parse_args(argv)
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="payouts-compose-smoke-"))
    smoke: Smoke | None = None
    try:
        with runtime_venv() as venv:
            smoke = Smoke(args, work, venv)
            smoke.main()
    except (SmokeFailure, subprocess.TimeoutExpired) as exc:
        print(f"compose-smoke: FAILED: {exc}", file=sys.stderr, flush=True)
        if smoke:
            for name, service in smoke.services.items():
                print(
                    f"----- {name} (last lines) -----\n{service.output()[-3000:]}", file=sys.stderr
                )
        return 1
    finally:
        for service in smoke.services.values() if smoke else []:
            service.stop(timeout=10)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    say(f"passed in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
