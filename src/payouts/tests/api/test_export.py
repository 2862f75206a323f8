"""GET /payout-requests/export.csv: the list's filters and 400s, the client's payouts only, CSV
that spreadsheets cannot run, streamed from a server-side cursor in constant memory."""

import csv
import io
import time
import tracemalloc
import unittest
from datetime import datetime, timedelta, timezone
from typing import Any

try:
    import psutil  # requirements-local.txt: not in the image, whose suite skips the memory test
except ImportError:  # pragma: no cover
    psutil = None
from django.db import connection
from django.test import TransactionTestCase
from rest_framework.test import APIClient

from payouts.api import export
from payouts.models import ApiClient, ApiKey, PayoutRequest, PayoutStatus

from .helpers import LIST_URL, ApiTestCase

EXPORT_URL = f"{LIST_URL}export.csv"
T0 = datetime(2026, 1, 10, 12, 0, 0, tzinfo=timezone.utc)
POSTGRESQL = connection.vendor == "postgresql"


def read_csv(response: Any) -> list[list[str]]:
    """The rows of a streamed CSV answer, header included."""
    body = b"".join(response.streaming_content).decode("utf-8")
    return list(csv.reader(io.StringIO(body, newline="")))


def open_cursors() -> list[tuple[str, bool]]:
    """(name, WITH HOLD) of the server-side cursors open on this session."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT name, is_holdable FROM pg_cursors")
        return list(cursor.fetchall())


def clone_payouts(template: PayoutRequest, count: int) -> None:
    """`count` copies of a payout in one INSERT ... SELECT, a second apart after it.

    Every column is copied from the template, whatever columns the model has by then; only the
    id, the reference (unique per client) and the creation time differ.
    """
    columns = [str(field.column) for field in PayoutRequest._meta.concrete_fields]
    overrides = {
        "id": "gen_random_uuid()",
        "client_reference": "'bulk-' || n",
        "created_at": "created_at + n * interval '1 second'",
    }
    table = PayoutRequest._meta.db_table
    select = ", ".join(overrides.get(column, column) for column in columns)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"SELECT {select} FROM {table}, generate_series(1, %s) AS n WHERE id = %s",
            [count, template.pk],
        )


class ExportTestCase(ApiTestCase):
    def export(self, query: str = "", client: APIClient | None = None, **extra: Any) -> Any:
        return (client or self.client).get(f"{EXPORT_URL}{'?' if query else ''}{query}", **extra)

    def exported(self, query: str = "", client: APIClient | None = None) -> list[list[str]]:
        response = self.export(query, client)
        self.assertEqual(response.status_code, 200, getattr(response, "content", b"")[:2000])
        rows = read_csv(response)
        self.assertEqual(rows[0], list(export.COLUMNS))
        return rows[1:]

    def exported_ids(self, query: str = "", client: APIClient | None = None) -> list[str]:
        return [row[0] for row in self.exported(query, client)]

    def payout_at(self, created_at: datetime, **overrides: Any) -> PayoutRequest:
        payout = self.created_payout(**overrides)
        PayoutRequest.objects.filter(pk=payout.pk).update(created_at=created_at)
        payout.refresh_from_db()
        return payout


class ExportFormatTests(ExportTestCase):
    def test_answer_is_a_streamed_utf8_csv_attachment(self) -> None:
        response = self.export()
        self.assertEqual(response.status_code, 200)
        self.assertTrue(response.streaming)
        self.assertEqual(response["Content-Type"], "text/csv; charset=utf-8")
        self.assertRegex(
            response["Content-Disposition"], r'^attachment; filename="payouts-\d{8}T\d{6}Z\.csv"$'
        )
        body = b"".join(response.streaming_content)
        self.assertEqual(body, (",".join(export.COLUMNS) + "\r\n").encode())

    def test_columns_match_the_json_api_and_the_database(self) -> None:
        paid = self.created_payout(client_reference="счёт-1", amount="1500.5", currency="rub")
        self.move(
            paid,
            PayoutStatus.PROCESSING,
            PayoutStatus.PAID,
            provider_reference="sbx_po_abc",
        )
        declined = self.created_payout(
            client_reference='a,b "c"', amount="7", currency="KWD", destination="x"
        )
        self.move(
            declined,
            PayoutStatus.PROCESSING,
            PayoutStatus.FAILED,
            failure_code="insufficient_funds",
            failure_reason="Too low.",
        )
        PayoutRequest.objects.filter(pk=paid.pk).update(processed_at=T0)
        pending = self.created_payout(client_reference="jpy-1", amount="100", currency="JPY")
        rows = {row[0]: dict(zip(export.COLUMNS, row, strict=True)) for row in self.exported()}
        self.assertEqual(set(rows), {str(paid.pk), str(declined.pk), str(pending.pk)})
        for payout in (paid, declined, pending):
            with self.subTest(client_reference=payout.client_reference):
                payout.refresh_from_db()
                row = rows[str(payout.pk)]
                shown = self.client.get(f"{LIST_URL}{payout.pk}/").json()
                for column in ("id", "client_reference", "amount", "currency", "status"):
                    self.assertEqual(row[column], shown[column], column)
                self.assertEqual(row["failure_code"], shown["failure_code"])
                self.assertEqual(row["provider_reference"], payout.provider_reference)
                self.assertEqual(row["created_at"], shown["created_at"])
                self.assertEqual(row["processed_at"], shown["processed_at"] or "")
        self.assertEqual(rows[str(paid.pk)]["amount"], "1500.50")
        self.assertEqual(rows[str(declined.pk)]["amount"], "7.000")
        self.assertEqual(rows[str(pending.pk)]["amount"], "100")
        self.assertEqual(rows[str(paid.pk)]["provider_reference"], "sbx_po_abc")
        self.assertEqual(rows[str(paid.pk)]["processed_at"], "2026-01-10T12:00:00Z")
        self.assertEqual(rows[str(declined.pk)]["failure_code"], "insufficient_funds")
        self.assertEqual(rows[str(pending.pk)]["processed_at"], "")

    def test_rows_are_oldest_first_with_ties_in_id_order(self) -> None:
        later = self.payout_at(T0 + timedelta(hours=1), client_reference="later")
        tied = [self.payout_at(T0, client_reference=f"tied-{index}") for index in range(4)]
        earliest = self.payout_at(T0 - timedelta(days=1), client_reference="earliest")
        expected = [earliest.pk, *sorted(payout.pk for payout in tied), later.pk]
        self.assertEqual(self.exported_ids(), [str(pk) for pk in expected])

    def test_an_accept_header_asking_for_csv_gets_the_csv(self) -> None:
        payout = self.created_payout()
        for accept in ("text/csv", "text/csv, application/json;q=0.5", "*/*", "application/json"):
            with self.subTest(accept=accept):
                response = self.export(HTTP_ACCEPT=accept)
                self.assertEqual(response.status_code, 200)
                self.assertEqual(response["Content-Type"], "text/csv; charset=utf-8")
                self.assertEqual(read_csv(response)[1][0], str(payout.pk))

    def test_head_answers_the_headers_without_a_body(self) -> None:
        self.created_payout()
        response: Any = self.client.head(EXPORT_URL)
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response["Content-Type"], "text/csv; charset=utf-8")
        self.assertEqual(b"".join(response.streaming_content), b"")


class ExportFormulaInjectionTests(ExportTestCase):
    def test_cells_a_spreadsheet_would_run_get_a_leading_quote_and_others_are_untouched(
        self,
    ) -> None:
        references = {
            "=1+1": "'=1+1",
            "+7 999 000": "'+7 999 000",
            "-2": "'-2",
            "@SUM(A1:A9)": "'@SUM(A1:A9)",
            "'quoted": "''quoted",
            "plain=1": "plain=1",
            "a-b": "a-b",
        }
        for reference in references:
            self.created_payout(client_reference=reference)
        # Tab and CR are refused at create; a row may still hold one (the admin, older data).
        for reference in ("\tx", "\rx"):
            payout = self.created_payout(client_reference=f"raw-{len(references)}")
            PayoutRequest.objects.filter(pk=payout.pk).update(
                client_reference=reference, provider_reference="=cmd|' /C calc'!A0"
            )
            references[reference] = "'" + reference
        rows = self.exported()
        by_reference = {row[1]: row for row in rows}
        self.assertEqual(set(by_reference), set(references.values()))
        for row in rows:
            self.assertFalse(row[6].startswith("="), row)
        # Dropping one leading quote gives every stored value back.
        restored = {cell[1:] if cell.startswith("'") else cell for cell in by_reference}
        self.assertEqual(restored, set(references))

    def test_the_guard_covers_every_trigger_and_nothing_else(self) -> None:
        for trigger in ("=", "+", "-", "@", "\t", "\r", "'"):
            with self.subTest(trigger=trigger):
                self.assertEqual(export.as_text_cell(f"{trigger}x"), f"'{trigger}x")
        for value in ("", "x=1", " =1", "1-2", "sbx_po_1"):
            with self.subTest(value=value):
                self.assertEqual(export.as_text_cell(value), value)


class ExportFilterTests(ExportTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.rub_new = self.payout_at(T0, client_reference="rub-new", currency="RUB")
        self.eur_paid = self.payout_at(
            T0 + timedelta(days=1), client_reference="eur-paid", amount="10", currency="EUR"
        )
        self.move(self.eur_paid, PayoutStatus.PROCESSING, PayoutStatus.PAID)
        self.rub_canceled = self.payout_at(T0 + timedelta(days=2), client_reference="rub-cxl")
        self.move(self.rub_canceled, PayoutStatus.CANCELED)

    def test_each_filter_selects_what_the_list_selects(self) -> None:
        queries = {
            "status=PAID": [self.eur_paid],
            "status=new,canceled": [self.rub_new, self.rub_canceled],
            "currency=rub": [self.rub_new, self.rub_canceled],
            "client_reference=eur-paid": [self.eur_paid],
            "client_reference=nope": [],
            "created_after=2026-01-11": [self.eur_paid, self.rub_canceled],
            "created_before=2026-01-11T12:00:00Z": [self.rub_new],
            "created_after=2026-01-11&created_before=2026-01-12": [self.eur_paid],
            "created_after=2026-01-10T15:00:00%2B03:00&currency=RUB&status=NEW": [self.rub_new],
        }
        for query, expected in queries.items():
            with self.subTest(query=query):
                ids = self.exported_ids(query)
                self.assertEqual(ids, [str(payout.pk) for payout in expected])
                listed = self.client.get(f"{LIST_URL}?{query}&limit=200").json()["results"]
                self.assertEqual(sorted(ids), sorted(item["id"] for item in listed))

    def test_bad_filters_are_the_lists_400s(self) -> None:
        cases = [
            ("status=NOPE", ("status", "invalid_choice")),
            ("currency=XXX", ("currency", "invalid_currency")),
            ("created_after=yesterday", ("created_after", "invalid")),
            ("created_before=2026-13-01", ("created_before", "invalid")),
            ("client_reference=" + "x" * 65, ("client_reference", "max_length")),
            ("status=NEW&status=PAID", ("status", "repeated_parameter")),
            ("currency=", ("currency", "blank")),
            ("stauts=NEW", ("stauts", "unknown_parameter")),
        ]
        for query, expected in cases:
            with self.subTest(query=query):
                body = self.assertValidationError(self.export(query), expected)
                self.assertEqual(body, self.client.get(f"{LIST_URL}?{query}").json())

    def test_paging_parameters_are_refused_not_ignored(self) -> None:
        for query in ("limit=10", "cursor=abc"):
            with self.subTest(query=query):
                name = query.split("=")[0]
                self.assertValidationError(self.export(query), (name, "unknown_parameter"))

    def test_a_bad_filter_is_a_problem_document_even_when_csv_is_asked_for(self) -> None:
        response = self.export("status=NOPE", HTTP_ACCEPT="text/csv")
        self.assertValidationError(response, ("status", "invalid_choice"))


class ExportAccessTests(ExportTestCase):
    def test_another_clients_payouts_never_appear(self) -> None:
        mine = self.created_payout(client_reference="shared-ref")
        theirs = self.created_payout(self.other, client_reference="shared-ref")
        self.created_payout(self.other, client_reference="only-theirs")
        self.assertEqual(self.exported_ids(), [str(mine.pk)])
        self.assertEqual(self.exported_ids("client_reference=only-theirs"), [])
        self.assertEqual(self.exported_ids("client_reference=shared-ref"), [str(mine.pk)])
        self.assertEqual(len(self.exported_ids(client=self.other)), 2)
        self.assertIn(str(theirs.pk), self.exported_ids(client=self.other))

    def test_without_a_key_it_is_401_and_with_a_bad_one_too(self) -> None:
        self.created_payout()
        response = APIClient().get(EXPORT_URL)
        self.assertProblem(response, 401, "not_authenticated")
        self.assertEqual(response["WWW-Authenticate"], 'Bearer realm="api"')
        self.assertNotIn(b"client_reference", response.content)
        bad = self.client_for("A" * 8 + "." + "B" * 32)
        self.assertProblem(bad.get(EXPORT_URL), 401, "authentication_failed")
        self.assertProblem(
            APIClient().get(EXPORT_URL, HTTP_ACCEPT="text/csv"), 401, "not_authenticated"
        )

    def test_other_methods_are_405(self) -> None:
        for method in ("post", "put", "patch", "delete"):
            with self.subTest(method=method):
                self.assertProblem(
                    getattr(self.client, method)(EXPORT_URL), 405, "method_not_allowed"
                )


class ExportRouteTests(ExportTestCase):
    def test_the_export_is_not_taken_for_a_payout_id_with_or_without_a_slash(self) -> None:
        payout = self.created_payout()
        for path in (EXPORT_URL, f"{EXPORT_URL}/"):
            with self.subTest(path=path):
                response = self.client.get(path)
                self.assertEqual(response.status_code, 200)
                self.assertEqual(read_csv(response)[1][0], str(payout.pk))
        # The dot is literal: a look-alike path is a payout lookup, and an unknown one.
        self.assertProblem(self.client.get(f"{LIST_URL}exportXcsv/"), 404, "not_found")
        self.assertProblem(self.client.get(f"{EXPORT_URL}/cancel/"), 404, "not_found")
        self.assertEqual(self.client.get(f"{LIST_URL}{payout.pk}/").json()["id"], str(payout.pk))


@unittest.skipUnless(POSTGRESQL, "server-side cursors are PostgreSQL's")
class ExportCursorTests(ExportTestCase):
    def test_the_query_runs_before_the_answer_starts(self) -> None:
        template = self.created_payout()
        clone_payouts(template, 3 * export.FETCH_ROWS)
        response = self.export()
        # The cursor is open before a byte was read: a database error would have been a 503
        # problem, not a 200 that breaks off.
        self.assertEqual(len(open_cursors()), 1)
        self.assertEqual(len(read_csv(response)), 3 * export.FETCH_ROWS + 2)
        self.assertEqual(open_cursors(), [])

    def test_a_download_dropped_half_way_closes_its_cursor(self) -> None:
        template = self.created_payout()
        clone_payouts(template, 3 * export.FETCH_ROWS)
        # StreamingHttpResponse.close(), which the server calls when the client goes away,
        # closes the chunk generator: this is that call, without the request_finished signal
        # that would also end this test's transaction.
        chunks = export.payout_csv(PayoutRequest.objects.filter(client=self.merchant))
        self.assertTrue(next(chunks).startswith(b"id,client_reference,"))
        self.assertEqual(len(open_cursors()), 1)
        chunks.close()
        self.assertEqual(open_cursors(), [])

    def test_a_finished_download_leaves_no_cursor_open(self) -> None:
        template = self.created_payout()
        clone_payouts(template, export.FETCH_ROWS + 1)
        self.assertEqual(len(self.exported()), export.FETCH_ROWS + 2)
        self.assertEqual(open_cursors(), [])


@unittest.skipUnless(POSTGRESQL, "server-side cursors are PostgreSQL's")
@unittest.skipIf(psutil is None, "psutil (requirements-local.txt) is not installed")
class ExportMemoryTests(TransactionTestCase):
    """Outside a transaction, as in production (no ATOMIC_REQUESTS): a WITH HOLD cursor.

    Peak Python memory (tracemalloc) and resident memory (psutil: libpq buffers a client-side
    result outside Python's allocator, which tracemalloc would not see) while streaming a small
    and a ten times larger export: neither grows with the rows.
    """

    SMALL = 4_000
    LARGE = 40_000

    def setUp(self) -> None:
        merchant = ApiClient.objects.create(name="bulk")
        _, key = ApiKey.objects.create_key(name="bulk-key", client=merchant)
        self.client = APIClient()
        self.client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        template = PayoutRequest.objects.create(
            client=merchant,
            client_reference="template",
            amount="1500.00",
            currency="RUB",
            destination="40817810099910004312",
            status=PayoutStatus.PAID,
            provider_reference="sbx_po_0123456789abcdef01234567",
            processed_at=T0,
        )
        PayoutRequest.objects.filter(pk=template.pk).update(created_at=T0)
        clone_payouts(template, self.LARGE - 1)

    def stream(self, rows: int) -> dict[str, float]:
        """Download the first `rows` payouts; count them and measure the peaks."""
        before = T0 + timedelta(seconds=rows)
        process = psutil.Process()
        tracemalloc.start()
        baseline_rss = process.memory_info().rss
        started = time.perf_counter()
        response: Any = self.client.get(f"{EXPORT_URL}?created_before={before:%Y-%m-%dT%H:%M:%SZ}")
        self.assertEqual(response.status_code, 200)
        lines, peak_rss = 0, baseline_rss
        holdable: list[bool] = []
        for chunk in response.streaming_content:
            lines += chunk.count(b"\r\n")
            peak_rss = max(peak_rss, process.memory_info().rss)
            if not holdable:
                holdable = [hold for _, hold in open_cursors()]
        response.close()
        elapsed = time.perf_counter() - started
        _, peak_python = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        self.assertEqual(lines, rows + 1)
        self.assertEqual(holdable, [True], "expected one server-side WITH HOLD cursor")
        return {
            "python": peak_python,
            "rss": peak_rss - baseline_rss,
            "seconds": elapsed,
        }

    def test_memory_does_not_grow_with_the_rows(self) -> None:
        self.stream(1000)  # warm up: imports, the connection, the pool
        small = self.stream(self.SMALL)
        large = self.stream(self.LARGE)
        mib = 1024 * 1024
        report = (
            f"{self.SMALL} rows: peak Python {small['python'] / mib:.2f} MiB, RSS +"
            f"{small['rss'] / mib:.1f} MiB, {small['seconds']:.1f} s; {self.LARGE} rows: peak "
            f"Python {large['python'] / mib:.2f} MiB, RSS +{large['rss'] / mib:.1f} MiB, "
            f"{large['seconds']:.1f} s"
        )
        print(f"\nexport memory: {report}")
        self.assertLess(large["python"], 8 * mib, report)
        self.assertLess(large["python"], small["python"] * 1.25 + 256 * 1024, report)
        # The whole result held at once would be over 12 MiB at 50k rows (libpq's copy alone).
        self.assertLess(large["rss"], 8 * mib, report)
