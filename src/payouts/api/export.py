"""The CSV export of a client's payouts: its query and its rows, streamed in constant memory.

Rows come from a PostgreSQL server-side cursor (`QuerySet.iterator`), `FETCH_ROWS` at a time,
and leave as CSV chunks of about `CHUNK_BYTES`: the process holds one chunk, whatever the row
count. Outside a transaction (as in a request: no ATOMIC_REQUESTS) Django declares the cursor
WITH HOLD, so PostgreSQL keeps the result of the query from the moment it runs (in a temporary
file past work_mem) and the export is one consistent snapshot. A server-side cursor needs the
same database session for the whole stream: the per-process psycopg pool keeps the request's
connection until the response is closed; behind a transaction-pooling PgBouncer it would need
DISABLE_SERVER_SIDE_CURSORS, which fetches the whole result into memory instead.
"""

import csv
import io
from collections.abc import Generator, Iterator
from datetime import datetime, timezone
from typing import Any

from django.db.models import QuerySet

from .. import money
from ..models import PayoutRequest
from .serializers import PayoutListQuerySerializer

CONTENT_TYPE = "text/csv; charset=utf-8"
COLUMNS = (
    "id",
    "client_reference",
    "amount",
    "currency",
    "status",
    "failure_code",
    "provider_reference",
    "created_at",
    "processed_at",
)
# Oldest first, like a statement; (created_at, id) is a total order, served backwards by the
# index payout_client_created (client, -created_at, -id).
ORDERING = ("created_at", "id")
# Rows per round trip to the database.
FETCH_ROWS = 2000
# CSV gathered before a chunk goes to the server: a chunk per row would cost a write (and an
# HTTP chunk header) per row.
CHUNK_BYTES = 64 * 1024
# A spreadsheet runs a cell that begins with one of these as a formula (CSV injection). OWASP's
# advice is a leading single quote, which spreadsheets show as text; a value that already begins
# with a quote gets one too, so dropping one leading quote always restores the stored value.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r", "'")


class PayoutExportQuerySerializer(PayoutListQuerySerializer):
    """The list's filters and their 400s; paging parameters are unknown here (the export is
    every matching payout), so `?limit=10` is refused rather than silently ignored."""

    limit = None  # type: ignore[assignment]
    cursor = None  # type: ignore[assignment]


def as_text_cell(value: str) -> str:
    """A free-text value that a spreadsheet shows as text, never runs as a formula."""
    return "'" + value if value.startswith(FORMULA_TRIGGERS) else value


def _timestamp(value: datetime | None) -> str:
    """The JSON API's format (DRF's with TIME_ZONE = UTC): 2026-01-10T12:00:00.123456Z.

    Written out because DRF's field looks the current time zone up per call, which was half
    the export's time.
    """
    if value is None:
        return ""
    return value.astimezone(timezone.utc).isoformat().removesuffix("+00:00") + "Z"


def payout_rows(payouts: QuerySet[PayoutRequest]) -> Generator[tuple[str, ...], None, None]:
    """One tuple of strings per payout, in COLUMNS order, read through a server-side cursor."""
    results: Iterator[Any] = (
        payouts.order_by(*ORDERING).values_list(*COLUMNS).iterator(chunk_size=FETCH_ROWS)
    )
    try:
        for (
            payout_id,
            client_reference,
            amount,
            currency,
            status,
            failure_code,
            provider_reference,
            created_at,
            processed_at,
        ) in results:
            yield (
                str(payout_id),
                as_text_cell(client_reference),
                money.format_amount(amount, currency),
                currency,
                status,
                as_text_cell(failure_code),
                as_text_cell(provider_reference),
                _timestamp(created_at),
                _timestamp(processed_at),
            )
    finally:
        # Closing Django's iterator closes the cursor now, not whenever it is collected.
        close = getattr(results, "close", None)
        if close is not None:
            close()


def payout_csv(payouts: QuerySet[PayoutRequest]) -> Generator[bytes, None, None]:
    """The export as UTF-8 CSV chunks (RFC 4180: CRLF, quoted where needed), header first.

    The query runs before this returns: an unreachable database is the caller's exception (a
    503 problem), not a 200 that breaks off after its headers.
    """
    rows = payout_rows(payouts)
    first = next(rows, None)
    return _chunks(first, rows)


def _chunks(
    first: tuple[str, ...] | None, rows: Generator[tuple[str, ...], None, None]
) -> Generator[bytes, None, None]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    try:
        if first is not None:
            writer.writerow(first)
            for row in rows:
                if buffer.tell() >= CHUNK_BYTES:
                    yield buffer.getvalue().encode("utf-8")
                    buffer.seek(0)
                    buffer.truncate()
                writer.writerow(row)
        yield buffer.getvalue().encode("utf-8")
    finally:
        # A client that goes away mid-download closes the response, and with it this
        # generator: the cursor is closed before the connection goes back to the pool.
        rows.close()


def attachment_filename(exported_at: datetime) -> str:
    """payouts-20260110T120000Z.csv: the moment of the export, in UTC."""
    return f"payouts-{exported_at.astimezone(timezone.utc):%Y%m%dT%H%M%SZ}.csv"
