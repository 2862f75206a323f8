"""The operations page's reads: is the service healthy, is anything stuck, who must look.

Every query is bounded and served by an index: the 24 h window reads the events outbox through
`event_created` (every status move writes one event, the creation included, and retention keeps
at least a day of them), the unfinished payouts come from their partial indexes, latency from
the newest provider calls by primary key. The chart's geometry is computed here, in Python, so
the template only prints numbers into SVG attributes (no JavaScript, nothing from a CDN).
"""

import math
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

from django.db import connection
from django.db.models import Count, F, Q
from django.db.models.functions import TruncHour
from django.utils import timezone

from webhooks.models import Event, EventType, WebhookEndpoint

from .models import UNFINISHED_STATUSES, PayoutRequest, PayoutStatus, ProviderCall

HOURS = 24
# Lists a person reads on one page; the admin's own lists hold the rest.
LIST_LIMIT = 50
# Latency percentiles come from at most this many of the newest calls (a primary-key index
# scan), so a busy day costs the same read as a quiet one.
LATENCY_SAMPLE = 10_000
# An unfinished payout older than this is shown as an alert: with the default lease (20 s) and
# retry backoff a healthy payout finishes within a minute or two; an older one is waiting on
# something (an unknown outcome, a stopped worker, a backlog).
LATE_AFTER = timedelta(minutes=5)
# A failure rate above this is shown as an alert: declines are normal, a tenth of payouts is not.
FAILURE_RATE_ALERT_PERCENT = 5.0

# Bottom to top in each bar: settled, then the ones still waiting. Okabe-Ito colours, told apart
# with the common colour-vision deficiencies.
STATUS_ORDER = (
    PayoutStatus.PAID,
    PayoutStatus.FAILED,
    PayoutStatus.CANCELED,
    PayoutStatus.PROCESSING,
    PayoutStatus.NEW,
)
STATUS_COLOURS = {
    PayoutStatus.PAID: "#009e73",
    PayoutStatus.FAILED: "#d55e00",
    PayoutStatus.CANCELED: "#999999",
    PayoutStatus.PROCESSING: "#0072b2",
    PayoutStatus.NEW: "#e69f00",
}


@dataclass(frozen=True)
class HourCounts:
    """Payouts created in one hour, by the status each has now."""

    start: datetime
    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class KindLatency:
    kind: str
    calls: int
    p50_ms: float
    p99_ms: float


@dataclass(frozen=True)
class Segment:
    status: str
    count: int
    x: float
    y: float
    width: float
    height: float
    colour: str
    title: str


@dataclass(frozen=True)
class Tick:
    label: str
    x: float
    y: float


@dataclass(frozen=True)
class LegendItem:
    status: str
    total: int
    colour: str
    x: float


@dataclass
class StatusChart:
    """A stacked bar per hour, in SVG user units (the template scales the viewBox)."""

    width: int = 960
    height: int = 300
    left: int = 56
    right: int = 16
    top: int = 40
    bottom: int = 44
    segments: list[Segment] = field(default_factory=list)
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    legend: list[LegendItem] = field(default_factory=list)

    @property
    def plot_right(self) -> int:
        return self.width - self.right

    @property
    def plot_bottom(self) -> int:
        return self.height - self.bottom


@dataclass(frozen=True)
class Overview:
    now: datetime
    since: datetime
    hours: list[HourCounts]
    chart: StatusChart
    totals: dict[str, int]
    failure_codes: list[tuple[str, int]]
    oldest_unprocessed: PayoutRequest | None
    under_review: list[PayoutRequest]
    latency: list[KindLatency]
    failing_endpoints: list[WebhookEndpoint]

    @property
    def created(self) -> int:
        return sum(self.totals.values())

    @property
    def failure_rate(self) -> float | None:
        """Percent failed of the window's payouts that paid or failed (None when none did)."""
        finished = sum(self.totals[s] for s in (PayoutStatus.PAID, PayoutStatus.FAILED))
        return 100 * self.totals[PayoutStatus.FAILED] / finished if finished else None

    @property
    def failure_rate_high(self) -> bool:
        return self.failure_rate is not None and self.failure_rate > FAILURE_RATE_ALERT_PERCENT

    @property
    def oldest_unprocessed_late(self) -> bool:
        payout = self.oldest_unprocessed
        return payout is not None and self.now - payout.created_at > LATE_AFTER


def window_start(now: datetime) -> datetime:
    """The start of the window: the current hour and the 23 whole hours before it."""
    return now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)


def payouts_by_hour(*, since: datetime) -> list[HourCounts]:
    """Payouts created since `since`, per hour, by their current status (every hour listed)."""
    rows = (
        Event.objects.filter(type=EventType.PAYOUT_CREATED, created_at__gte=since)
        # Whole UTC hours whatever TIME_ZONE says: the window is counted in UTC.
        .annotate(hour=TruncHour("created_at", tzinfo=dt_timezone.utc))
        .values_list("hour", "payout__status")
        .annotate(n=Count("id"))
        .order_by()
    )
    by_hour: dict[datetime, dict[str, int]] = {
        since + timedelta(hours=h): dict.fromkeys(STATUS_ORDER, 0) for h in range(HOURS)
    }
    for hour, status, n in rows:
        by_hour.setdefault(hour, dict.fromkeys(STATUS_ORDER, 0))[status] += n
    return [HourCounts(start=hour, counts=counts) for hour, counts in sorted(by_hour.items())]


def failure_codes(*, since: datetime) -> list[tuple[str, int]]:
    """Failure codes of the payouts that failed since `since`, most frequent first."""
    rows = (
        Event.objects.filter(type=EventType.PAYOUT_FAILED, created_at__gte=since)
        .values_list("payout__failure_code")
        .annotate(n=Count("id"))
        .order_by("-n", "payout__failure_code")
    )
    return [(code or "(none)", n) for code, n in rows[:LIST_LIMIT]]


def oldest_unprocessed() -> PayoutRequest | None:
    """The NEW or PROCESSING payout created first (one probe of payout_open_created)."""
    return (
        PayoutRequest.objects.filter(status__in=UNFINISHED_STATUSES)
        .select_related("client")
        .order_by("created_at")
        .first()
    )


def payouts_under_review() -> list[PayoutRequest]:
    """Payouts flagged for a person and still unanswered, longest waiting first.

    Only PROCESSING payouts are ever flagged: the filter is the partial index
    payout_under_review's own condition, so it serves the query.
    """
    return list(
        PayoutRequest.objects.filter(
            review_flagged_at__isnull=False, status=PayoutStatus.PROCESSING
        )
        .select_related("client")
        .order_by("review_flagged_at")[:LIST_LIMIT]
    )


LATENCY_SQL = """
SELECT kind, count(*),
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms),
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms)
FROM (SELECT kind, latency_ms, started_at FROM {table} ORDER BY id DESC LIMIT %s) AS recent
WHERE started_at >= %s AND latency_ms IS NOT NULL
GROUP BY kind
ORDER BY kind
"""


def provider_latency(*, since: datetime) -> list[KindLatency]:
    """p50 and p99 of the finished provider calls since `since`, per kind.

    Over the newest LATENCY_SAMPLE calls: the time filter applies after the LIMIT, so the scan
    stops there however many calls are older. PostgreSQL computes the percentiles itself
    (percentile_cont, linear interpolation); elsewhere the same definition runs in Python.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                LATENCY_SQL.format(table=connection.ops.quote_name(ProviderCall._meta.db_table)),
                [LATENCY_SAMPLE, since],
            )
            return [KindLatency(kind, n, p50, p99) for kind, n, p50, p99 in cursor.fetchall()]
    return provider_latency_in_python(since=since)


def provider_latency_in_python(*, since: datetime) -> list[KindLatency]:
    """provider_latency where the database has no percentile_cont: the sample, sorted here."""
    recent = ProviderCall.objects.order_by("-id").values_list("kind", "latency_ms", "started_at")
    samples: dict[str, list[int]] = {}
    for kind, latency_ms, started_at in recent[:LATENCY_SAMPLE]:
        if latency_ms is not None and started_at >= since:
            samples.setdefault(kind, []).append(latency_ms)
    return [
        KindLatency(kind, len(values), percentile_cont(values, 0.5), percentile_cont(values, 0.99))
        for kind, values in sorted(samples.items())
    ]


def percentile_cont(values: list[int], fraction: float) -> float:
    """PostgreSQL's percentile_cont: linear interpolation between the closest ranks."""
    if len(values) == 1:
        return float(values[0])
    # statistics' "inclusive" method is the same interpolation; cut point k is at k/1000.
    return statistics.quantiles(values, n=1000, method="inclusive")[round(fraction * 1000) - 1]


def webhook_endpoints_failing() -> list[WebhookEndpoint]:
    """Endpoints in a run of failed deliveries, or disabled: failing longest first.

    A handful of endpoints per client: no index is needed to read them all.
    """
    return list(
        WebhookEndpoint.objects.filter(Q(failing_since__isnull=False) | Q(enabled=False))
        .select_related("client")
        .order_by(F("failing_since").asc(nulls_last=True), "url")[:LIST_LIMIT]
    )


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above `value` (at least 1)."""
    if value <= 1:
        return 1
    power = 10 ** math.floor(math.log10(value))
    return next(step * power for step in (1, 2, 5, 10) if step * power >= value)


def status_chart(hours: list[HourCounts], totals: dict[str, int]) -> StatusChart:
    """Lay the hours out as stacked bars: one rectangle per non-empty (hour, status)."""
    chart = StatusChart()
    plot_width = chart.plot_right - chart.left
    plot_height = chart.plot_bottom - chart.top
    y_max = nice_ceiling(max((hour.total for hour in hours), default=0))
    scale = plot_height / y_max
    slot = plot_width / max(len(hours), 1)
    bar_width = slot * 0.75

    steps = 4 if y_max % 4 == 0 or y_max < 4 else 5
    for i in range(steps + 1):
        value = y_max * i / steps
        label = f"{value:g}" if value == int(value) else f"{value:.1f}"
        chart.y_ticks.append(Tick(label, chart.left, chart.plot_bottom - value * scale))

    for index, hour in enumerate(hours):
        x = chart.left + index * slot + (slot - bar_width) / 2
        if index % 3 == 0:
            chart.x_ticks.append(Tick(f"{hour.start:%H}:00", x + bar_width / 2, chart.plot_bottom))
        base = float(chart.plot_bottom)
        for status in STATUS_ORDER:
            count = hour.counts.get(status, 0)
            if not count:
                continue
            height = count * scale
            base -= height
            end = hour.start + timedelta(hours=1)
            chart.segments.append(
                Segment(
                    status=status,
                    count=count,
                    x=round(x, 2),
                    y=round(base, 2),
                    width=round(bar_width, 2),
                    height=round(height, 2),
                    colour=STATUS_COLOURS[status],
                    title=f"{hour.start:%H:%M}-{end:%H:%M} UTC: {count} {status}",
                )
            )

    for index, status in enumerate(STATUS_ORDER):
        chart.legend.append(
            LegendItem(status, totals[status], STATUS_COLOURS[status], chart.left + index * 150)
        )
    return chart


def operations_overview(*, now: datetime | None = None) -> Overview:
    """Everything the operations page shows, read at one moment."""
    now = now or timezone.now()
    since = window_start(now)
    hours = payouts_by_hour(since=since)
    totals: Counter[str] = Counter(dict.fromkeys(STATUS_ORDER, 0))
    for hour in hours:
        totals.update(hour.counts)
    return Overview(
        now=now,
        since=since,
        hours=hours,
        chart=status_chart(hours, totals),
        totals=dict(totals),
        failure_codes=failure_codes(since=since),
        oldest_unprocessed=oldest_unprocessed(),
        under_review=payouts_under_review(),
        latency=provider_latency(since=since),
        failing_endpoints=webhook_endpoints_failing(),
    )
