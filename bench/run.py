"""`make bench`: the service's throughput against a bare Django view on the same machine.

    scripts/test_services.sh .venv/bin/python bench/run.py     (what `make bench` runs)

On a throwaway PostgreSQL and Redis (scripts/test_services.sh) it serves the service as the image
does (gunicorn with src/gunicorn.conf.py, production settings) and a bare Django JSON view
(bench/bare/bare_app.py) under the same gunicorn settings, and loads both with wrk (32
keep-alive connections, as many threads as cores, on the same cores: compare runs on one
machine only). Every HTTP scenario runs right after a bare-view run, over BENCH_ROUNDS rounds;
the table shows medians, the spread (min-max) and the median of the per-round ratios.

The drain scenarios start the Celery worker as compose does (default pool and concurrency) on
an empty queue holding only their own payouts, and time the first claim to the last PAID
from the payouts' own history; afterwards the sandbox ledger must show every payout executed
exactly once. No worker runs during the HTTP scenarios.

Environment: BENCH_SECONDS (per run, 8), BENCH_ROUNDS (3), BENCH_DRAIN_1S (payouts per drain
at 1 s latency, 600; two workers drain twice as many), BENCH_DRAIN_0 (at latency 0, 600),
BENCH_LIST_ROWS (1000000), BENCH_OUT (the JSON, bench/results/latest.json), BENCH_ONLY
(comma-separated scenario names), BENCH_KEEP=1 (keep the processes' logs), BENCH_STATEMENTS=1
(print each drain's SQL statements per payout, from pg_stat_statements), BENCH_BASELINE
(a git ref, e.g. the commit before a change: its code is served too, from `git archive`, and
each HTTP scenario also runs against it in every round, so a change's overhead is measured in
the same run, as the median of the per-round ratios).

The service runs with its metrics token set and its rate limits so high they never refuse: what
every request pays for them (the Redis check, the metrics) is in the figures.
"""

import json
import os
import platform
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SRC = REPO / "src"
BIN = Path(sys.executable).parent
LUA = REPO / "bench" / "wrk" / "scenario.lua"

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
DRAIN_1S = int(os.environ.get("BENCH_DRAIN_1S", "600"))
DRAIN_0 = int(os.environ.get("BENCH_DRAIN_0", "600"))
LIST_ROWS = int(os.environ.get("BENCH_LIST_ROWS", "1000000"))
OUT = Path(os.environ.get("BENCH_OUT", REPO / "bench" / "results" / "latest.json"))
STATEMENTS = os.environ.get("BENCH_STATEMENTS") == "1"
BASELINE = os.environ.get("BENCH_BASELINE", "").strip()
ONLY = {name for name in os.environ.get("BENCH_ONLY", "").split(",") if name}
CONNECTIONS = 32
WRK_THREADS = os.cpu_count() or 2

if not os.environ.get("DATABASE_URL", "").startswith("postgres"):
    sys.exit("bench/run.py needs PostgreSQL: run it as `make bench` (scripts/test_services.sh).")

# The service's settings, production as deployed, with a throwaway key.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("PAYOUTS_METRICS_TOKEN", secrets.token_urlsafe(32))
# Checked on every request, never refusing: wrk sends thousands per second with one key.
os.environ.setdefault("PAYOUTS_RATE_LIMIT_READS_PER_SECOND", "1000000")
os.environ.setdefault("PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND", "1000000")
sys.path.insert(0, str(SRC))

import django  # noqa: E402

django.setup()

from django.db import connection  # noqa: E402

from config.celery import app as celery_app  # noqa: E402
from payouts.models import (  # noqa: E402
    ApiClient,
    ApiKey,
    PayoutEvent,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    ProviderCallKind,
    SandboxLedgerEntry,
    SandboxOutcome,
)
from payouts.services import payout_create  # noqa: E402

WORK = Path(tempfile.mkdtemp(prefix="payouts-bench."))


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- processes --------------------------------------------------------------------------------


@contextmanager
def process(name: str, argv: list[str], *, cwd: Path, env: dict[str, str]) -> Iterator[None]:
    """Run argv for the block (its output in WORK/<name>.log); SIGTERM and wait at the end."""
    logfile = (WORK / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=os.environ | env,
        stdout=logfile,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        logfile.close()


def gunicorn(name: str, port: int, app: str, *, chdir: Path, src: Path = SRC) -> Any:
    """gunicorn with the service's own settings file, as the image runs it."""
    argv = [
        str(BIN / "gunicorn"),
        "-c",
        str(src / "gunicorn.conf.py"),
        "--chdir",
        str(chdir),
        "--worker-tmp-dir",
        "/dev/shm",
        app,
    ]
    return process(name, argv, cwd=chdir, env={"HOST": "127.0.0.1", "PORT": str(port)})


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: {url} did not answer 200 within {timeout} s (see {WORK})")
        time.sleep(0.2)


# --- HTTP scenarios ---------------------------------------------------------------------------


@dataclass
class Load:
    """What one wrk run sends."""

    path: str
    method: str = "GET"
    key: str = ""
    body: str = ""
    unique: bool = False


@dataclass
class Run:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int


def wrk(base: str, load: Load, seconds: int, prefix: str = "bench") -> Run:
    out = WORK / f"wrk-{uuid.uuid4().hex}.json"
    env = {
        "BENCH_METHOD": load.method,
        "BENCH_PATH": load.path,
        "BENCH_OUT": str(out),
        "BENCH_REF_PREFIX": prefix,
    }
    if load.key:
        env["BENCH_AUTH"] = load.key
    if load.body:
        env["BENCH_BODY"] = load.body
    if load.unique:
        env["BENCH_UNIQUE"] = "1"
    argv = [
        "wrk",
        f"-t{WRK_THREADS}",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        base,
    ]
    result = subprocess.run(argv, env=os.environ | env, capture_output=True, text=True)
    if result.returncode != 0 or not out.exists():
        raise SystemExit(f"bench: wrk failed: {result.stdout}\n{result.stderr}")
    figures = json.loads(out.read_text())
    out.unlink()
    errors = {k: v for k, v in figures.items() if k.endswith(("_errors", "timeouts")) and v}
    if errors:
        raise SystemExit(f"bench: {load.method} {load.path}: errors {errors}\n{result.stdout}")
    return Run(
        rps=figures["requests"] / (figures["duration_us"] / 1e6),
        p50_ms=figures["latency_p50_us"] / 1000,
        p99_ms=figures["latency_p99_us"] / 1000,
        requests=figures["requests"],
    )


@dataclass
class Row:
    name: str
    what: str
    unit: str = "req/s"
    runs: list[Run] = field(default_factory=list)
    bare: list[Run] = field(default_factory=list)
    baseline: list[Run] = field(default_factory=list)  # BENCH_BASELINE's code, same rounds
    note: str = ""
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def median(self) -> float:
        return statistics.median(run.rps for run in self.runs)

    @property
    def ratio(self) -> float | None:
        if not self.bare:
            return None
        return statistics.median(r.rps / b.rps for r, b in zip(self.runs, self.bare, strict=True))

    @property
    def vs_baseline(self) -> float | None:
        if not self.baseline:
            return None
        pairs = zip(self.runs, self.baseline, strict=True)
        return statistics.median(r.rps / b.rps for r, b in pairs)

    def summary(self) -> dict[str, Any]:
        rates = [run.rps for run in self.runs]
        return {
            "name": self.name,
            "what": self.what,
            "unit": self.unit,
            "median": round(self.median, 1),
            "min": round(min(rates), 1),
            "max": round(max(rates), 1),
            "p99_ms_median": round(statistics.median(run.p99_ms for run in self.runs), 2),
            "ratio_to_bare": None if self.ratio is None else round(self.ratio, 3),
            "ratio_to_baseline": None if self.vs_baseline is None else round(self.vs_baseline, 3),
            "runs": [asdict(run) for run in self.runs],
            "bare_runs": [asdict(run) for run in self.bare],
            "baseline_runs": [asdict(run) for run in self.baseline],
            "cost_per_payout": self.cost or None,
            "note": self.note,
        }


def body(reference: str, destination: str = "FR7630006000011234567890189") -> str:
    return json.dumps(
        {
            "client_reference": reference,
            "amount": "125.50",
            "currency": "EUR",
            "destination": destination,
            "metadata": {"order": "bench"},
        }
    )


def api_client(name: str) -> tuple[ApiClient, str]:
    client = ApiClient.objects.create(name=f"{name}-{uuid.uuid4().hex[:8]}")
    _, key = ApiKey.objects.create_key(name=name, client=client)
    return client, key


def seed_paid(client: ApiClient, rows: int) -> None:
    """`rows` PAID payouts of the client, written by PostgreSQL itself (a million in seconds)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"""
            INSERT INTO {PayoutRequest._meta.db_table}
                (id, client_id, client_reference, amount, currency, destination, metadata,
                 status, failure_code, failure_reason, provider_reference, created_at,
                 updated_at, processed_at, lease_owner, attempts, review_reason)
            SELECT gen_random_uuid(), %s, 'seed-' || n, 10 + n %% 1000, 'EUR',
                   'FR7630006000011234567890189', '{{}}', 'PAID', '', '', 'sbx_seed_' || n,
                   now() - make_interval(secs => n), now() - make_interval(secs => n),
                   now() - make_interval(secs => n), '', 1, ''
            FROM generate_series(1, %s) AS n
            """,
            [client.pk, rows],
        )
        cursor.execute(f"ANALYZE {PayoutRequest._meta.db_table}")


HTTP_SCENARIOS = {"healthz", "create", "create_repeat", "get", "list_1k", "list_1m"}


def http_rows(service: str, bare: str, baseline: str | None) -> list[Row]:
    if ONLY and not ONLY & HTTP_SCENARIOS:
        return []
    creator, create_key = api_client("bench-create")
    reader, read_key = api_client("bench-read")
    big, big_key = api_client("bench-list-1m")
    one = payout_create(
        client=reader,
        client_reference="bench-repeat",
        amount=Decimal("125.50"),
        currency="EUR",
        destination="FR7630006000011234567890189",
        metadata={"order": "bench"},
    ).payout
    log(f"seeding 1,000 and {LIST_ROWS:,} paid payouts")
    started = time.monotonic()
    seed_paid(reader, 999)
    seed_paid(big, LIST_ROWS)
    log(f"seeded in {time.monotonic() - started:.0f} s")

    api = "/api/v1/payout-requests/"
    scenarios: list[tuple[Row, Load]] = [
        (Row("healthz", "our `/healthz` (no DB, no DRF)"), Load("/healthz")),
        (
            Row("create", "create (new reference)"),
            Load(api, "POST", create_key, body("{ref}"), unique=True),
        ),
        (
            Row("create_repeat", "create repeat (200 path)"),
            Load(api, "POST", read_key, body("bench-repeat")),
        ),
        (Row("get", "get one"), Load(f"{api}{one.pk}/", key=read_key)),
        (Row("list_1k", "list, page of 50 (1,000 rows)"), Load(f"{api}?limit=50", key=read_key)),
        (
            Row("list_1m", f"list, page of 50, after {LIST_ROWS:,} rows"),
            Load(f"{api}?limit=50", key=big_key),
        ),
    ]
    scenarios = [(row, load) for row, load in scenarios if not ONLY or row.name in ONLY]
    bare_row = Row("bare", "bare Django JSON view, same gunicorn settings, no DB")
    created_before = PayoutRequest.objects.filter(client=creator).count()
    created_requests = 0
    for round_no in range(1, ROUNDS + 1):
        for row, load in scenarios:
            wrk(bare, Load("/"), 1)  # warm-up, not counted
            bare_run = wrk(bare, Load("/"), SECONDS)
            prefix = f"r{round_no}-{row.name}"
            if baseline:
                wrk(baseline, load, 1, prefix=f"{prefix}-base-warm")
                row.baseline.append(wrk(baseline, load, SECONDS, prefix=f"{prefix}-base"))
            wrk(service, load, 1, prefix=f"{prefix}-warm")
            run = wrk(service, load, SECONDS, prefix=prefix)
            if row.name == "create":
                created_requests += run.requests
            row.runs.append(run)
            row.bare.append(bare_run)
            bare_row.runs.append(bare_run)
            versus = f", baseline {row.baseline[-1].rps:,.0f}" if baseline else ""
            log(
                f"round {round_no} {row.name}: {run.rps:,.0f} req/s (bare {bare_run.rps:,.0f},"
                f" ratio {run.rps / bare_run.rps:.3f}{versus}), p99 {run.p99_ms:.1f} ms"
            )
    if any(row.name == "create" for row, _ in scenarios):
        # Every 201 wrk counted is a stored payout (the warm-ups add a few more).
        stored = PayoutRequest.objects.filter(client=creator).count() - created_before
        if stored < created_requests:
            raise SystemExit(f"bench: {created_requests} creates answered, {stored} stored")
    rows = [row for row, _ in scenarios]
    return [bare_row, *rows] if rows else []


# --- drain ------------------------------------------------------------------------------------


def purge_queues() -> None:
    with celery_app.connection_for_write() as conn:
        for queue in celery_app.amqp.queues:
            conn.default_channel.queue_purge(queue)


def worker_argv(name: str) -> list[str]:
    """The payouts worker exactly as compose starts it (pool and concurrency from settings)."""
    queue = os.environ.get("CELERY_TASK_QUEUE", "payouts")
    return [
        str(BIN / "celery"),
        "-A",
        "config",
        "worker",
        "--loglevel",
        "INFO",
        "-Q",
        f"{queue},{queue}.sweep",
        "-n",
        f"{name}@%h",
    ]


def drain(workers: int, latency_ms: int, count: int) -> tuple[float, dict[str, float]]:
    """Queue `count` payouts, start the workers, return payouts/s and the cost per payout."""
    purge_queues()
    client, _ = api_client(f"bench-drain-{workers}x-{latency_ms}ms")
    for n in range(count):
        payout_create(
            client=client,
            client_reference=f"drain-{n}",
            amount=Decimal("125.50"),
            currency="EUR",
            destination="FR7630006000011234567890189",
            metadata={},
        )
    payouts = PayoutRequest.objects.filter(client=client)
    if STATEMENTS:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_statements_reset()")
    before = Counters.read()
    env = {"PAYOUTS_SANDBOX_LATENCY_MS": str(latency_ms), "PAYOUTS_SANDBOX_FAILURE_RATE": "0"}
    deadline = time.monotonic() + 120 + count / 20
    with ExitStack() as stack:
        for n in range(workers):
            stack.enter_context(process(f"worker{n}", worker_argv(f"w{n}"), cwd=SRC, env=env))
        while payouts.exclude(status=PayoutStatus.PAID).exists():
            if time.monotonic() > deadline:
                raise SystemExit(f"bench: drain did not finish (see {WORK})")
            time.sleep(0.5)
    spent = Counters.read() - before
    events = PayoutEvent.objects.filter(payout__client=client)
    first = events.filter(to_status=PayoutStatus.PROCESSING).earliest("created_at").created_at
    last = events.filter(to_status=PayoutStatus.PAID).latest("created_at").created_at
    executed_once(client, count)
    if STATEMENTS:
        statements_show(count)
    rate = count / (last - first).total_seconds()
    return rate, {
        "sql_statements": round(spent.statements / count, 1),
        "transactions": round(spent.transactions / count, 1),
        "redis_commands": round(spent.redis_commands / count, 1),
    }


def statements_show(count: int) -> None:
    """BENCH_STATEMENTS=1: what the drain ran, per payout, most frequent first."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT calls, left(regexp_replace(query, '\\s+', ' ', 'g'), 150)"
            " FROM pg_stat_statements s JOIN pg_database d ON d.oid = s.dbid"
            " WHERE d.datname = current_database() ORDER BY calls DESC LIMIT 40"
        )
        for calls, query in cursor.fetchall():
            log(f"  {calls / count:5.2f}  {query}")


@dataclass(frozen=True)
class Counters:
    """What PostgreSQL and Redis have done so far. Statements come from pg_stat_statements
    (`make bench` loads it); the bench's own polling adds a few per second."""

    statements: int
    transactions: int
    redis_commands: int

    @classmethod
    def read(cls) -> "Counters":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_statements s"
                " JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = current_database()"
            )
            statements = int(cursor.fetchone()[0])
            cursor.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database"
                " WHERE datname = current_database()"
            )
            transactions = int(cursor.fetchone()[0])
        with celery_app.connection_for_write() as conn:
            info = conn.default_channel.client.info("stats")
        return cls(statements, transactions, int(info["total_commands_processed"]))

    def __sub__(self, other: "Counters") -> "Counters":
        return Counters(
            self.statements - other.statements,
            self.transactions - other.transactions,
            self.redis_commands - other.redis_commands,
        )


def executed_once(client: ApiClient, count: int) -> None:
    """The ledger: every payout PAID once, one execute call, one ledger entry called once."""
    payouts = PayoutRequest.objects.filter(client=client)
    keys = [str(pk) for pk in payouts.values_list("pk", flat=True)]
    entries = SandboxLedgerEntry.objects.filter(idempotency_key__in=keys)
    checks = {
        "payouts PAID": payouts.filter(status=PayoutStatus.PAID).count(),
        "ledger entries PAID": entries.filter(outcome=SandboxOutcome.PAID).count(),
        "ledger entries called once": entries.filter(calls=1).count(),
        "execute calls": ProviderCall.objects.filter(
            payout__client=client, kind=ProviderCallKind.EXECUTE
        ).count(),
        "PAID events": PayoutEvent.objects.filter(
            payout__client=client, to_status=PayoutStatus.PAID
        ).count(),
    }
    wrong = {what: n for what, n in checks.items() if n != count}
    if wrong:
        raise SystemExit(f"bench: at-most-once broken for {count} payouts: {wrong}")


def drain_rows() -> list[Row]:
    plans = [
        ("drain_1s", "drain, provider latency 1 s, one worker", 1, 1000, DRAIN_1S),
        ("drain_0", "drain, provider latency 0, one worker", 1, 0, DRAIN_0),
        ("drain_1s_x2", "drain, provider latency 1 s, two workers", 2, 1000, 2 * DRAIN_1S),
    ]
    rows: list[Row] = []
    for name, what, workers, latency, count in plans:
        if ONLY and name not in ONLY:
            continue
        row = Row(name, what, unit="payouts/s")
        costs: list[dict[str, float]] = []
        for round_no in range(1, ROUNDS + 1):
            rate, cost = drain(workers, latency, count)
            costs.append(cost)
            row.runs.append(Run(rps=rate, p50_ms=0, p99_ms=0, requests=count))
            log(f"round {round_no} {name}: {count} payouts at {rate:,.1f}/s, per payout {cost}")
        row.cost = {what: statistics.median(c[what] for c in costs) for what in costs[0]}
        row.note = f"{count} payouts per run; per payout (medians): " + ", ".join(
            f"{n:g} {what.replace('_', ' ')}" for what, n in row.cost.items()
        )
        rows.append(row)
    return rows


# --- the table --------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    versus = any(row.baseline for row in rows)
    lines = [
        "| what | median | spread (min-max) | p99 ms | ratio to the bare view |"
        + (f" ratio to {BASELINE} |" if versus else ""),
        "|---|---|---|---|---|" + ("---|" if versus else ""),
    ]
    for row in rows:
        rates = [run.rps for run in row.runs]
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}"
        if row.name == "bare":
            ratio = "1"
        p99 = "-" if row.unit != "req/s" else f"{statistics.median(r.p99_ms for r in row.runs):.1f}"
        line = (
            f"| {row.what} | {row.median:,.0f} {row.unit} | {min(rates):,.0f}-{max(rates):,.0f}"
            f" | {p99} | {ratio} |"
        )
        if versus:
            line += " - |" if row.vs_baseline is None else f" {row.vs_baseline:.3f} |"
        lines.append(line)
    return "\n".join(lines)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def checkout(ref: str) -> Path:
    """The src/ of `ref`, unpacked from `git archive` into the bench's directory."""
    target = WORK / "baseline"
    target.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, "src"], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"bench: BENCH_BASELINE={ref}: {archive.stderr.decode().strip()}")
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive.stdout, check=True)
    return target / "src"


def stop_on_sigterm(signum: int, frame: Any) -> None:
    """A killed bench (timeout, Ctrl-C from a wrapper) stops what it started, as on error."""
    raise SystemExit(128 + signum)


def main() -> None:
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    if shutil.which("wrk") is None:
        raise SystemExit("bench: wrk is not installed (apt-get install wrk)")
    subprocess.run([sys.executable, "manage.py", "migrate", "-v0"], cwd=SRC, check=True)
    with connection.cursor() as cursor:
        cursor.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
    started = datetime.now(UTC)
    service_port, bare_port = free_port(), free_port()
    service, bare = f"http://127.0.0.1:{service_port}", f"http://127.0.0.1:{bare_port}"
    rows: list[Row] = []
    with ExitStack() as servers:
        servers.enter_context(
            gunicorn("service", service_port, "config.wsgi:application", chdir=SRC)
        )
        servers.enter_context(
            gunicorn("bare", bare_port, "bare_app:application", chdir=REPO / "bench" / "bare")
        )
        baseline = None
        if BASELINE:
            baseline_src = checkout(BASELINE)
            baseline_port = free_port()
            baseline = f"http://127.0.0.1:{baseline_port}"
            servers.enter_context(
                gunicorn(
                    "baseline",
                    baseline_port,
                    "config.wsgi:application",
                    chdir=baseline_src,
                    src=baseline_src,
                )
            )
            wait_for(f"{baseline}/healthz")
            log(f"baseline {BASELINE} on {baseline}")
        wait_for(f"{service}/healthz")
        wait_for(f"{bare}/")
        log(f"service on {service}, bare view on {bare}; logs in {WORK}")
        rows += http_rows(service, bare, baseline)
    rows += drain_rows()
    report = {
        "date": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "seconds_per_run": SECONDS,
        "rounds": ROUNDS,
        "connections": CONNECTIONS,
        "wrk_threads": WRK_THREADS,
        "baseline": BASELINE or None,
        "rows": [row.summary() for row in rows],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")
    print(
        f"\n{started:%Y-%m-%d}, {machine()}; wrk {CONNECTIONS} connections, "
        f"{ROUNDS} rounds of {SECONDS} s, medians\n"
    )
    print(table(rows))
    for row in rows:
        if row.note:
            print(f"\n{row.what}: {row.note}")
    print(f"\nJSON: {OUT}")


if __name__ == "__main__":
    try:
        main()
    finally:
        if os.environ.get("BENCH_KEEP") != "1":
            shutil.rmtree(WORK, ignore_errors=True)
