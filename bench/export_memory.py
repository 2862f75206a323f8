"""Memory and speed of the CSV export against the rows it streams, on PostgreSQL.

    scripts/test_services.sh .venv/bin/python bench/export_memory.py [--rows 200000]

Fills the (throwaway) database with --rows payouts of one client, then downloads the first
1%, 10% and 100% of them through the whole Django stack (middleware, auth, the view, the
streamed response), outside any transaction as a server thread does. Each size is read twice:
once under tracemalloc (peak Python memory, and resident memory, which also sees libpq's
buffers), once untraced for the time. Flat peaks across the sizes are the claim.
"""

import argparse
import os
import secrets
import sys
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# Production settings (the default) want a secret key: a throwaway one for this run.
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))

import django  # noqa: E402

django.setup()

import psutil  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from django.test import Client  # noqa: E402

from payouts.models import ApiClient, ApiKey, PayoutRequest, PayoutStatus  # noqa: E402
from payouts.tests.api.test_export import T0, clone_payouts  # noqa: E402

MIB = 1024 * 1024


def download(client: Client, rows: int, traced: bool) -> dict[str, float]:
    before = T0 + timedelta(seconds=rows)
    process = psutil.Process()
    if traced:
        tracemalloc.start()
    baseline = peak_rss = process.memory_info().rss
    started = time.perf_counter()
    response = client.get(
        f"/api/v1/payout-requests/export.csv?created_before={before:%Y-%m-%dT%H:%M:%SZ}"
    )
    assert response.status_code == 200, response.status_code
    lines = size = 0
    for chunk in response.streaming_content:
        lines += chunk.count(b"\r\n")
        size += len(chunk)
        if traced:
            peak_rss = max(peak_rss, process.memory_info().rss)
    response.close()
    elapsed = time.perf_counter() - started
    peak_python = tracemalloc.get_traced_memory()[1] if traced else 0
    if traced:
        tracemalloc.stop()
    assert lines == rows + 1, (lines, rows)
    return {"python": peak_python, "rss": peak_rss - baseline, "seconds": elapsed, "bytes": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("needs PostgreSQL: run it under scripts/test_services.sh")

    call_command("migrate", verbosity=0)
    merchant = ApiClient.objects.create(name=f"export-bench-{secrets.token_hex(4)}")
    _, key = ApiKey.objects.create_key(name="export-bench", client=merchant)
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
    started = time.perf_counter()
    clone_payouts(template, args.rows - 1)
    print(f"inserted {args.rows} payouts in {time.perf_counter() - started:.1f} s")

    client = Client(HTTP_AUTHORIZATION=f"Bearer {key}", SERVER_NAME="127.0.0.1")
    download(client, 1000, traced=True)  # warm up: imports, the connection
    print(f"{'rows':>9} {'MiB':>7} {'peak Python MiB':>16} {'RSS growth MiB':>15} {'rows/s':>8}")
    for rows in sorted({max(args.rows // 100, 1), max(args.rows // 10, 1), args.rows}):
        traced = download(client, rows, traced=True)
        timed = download(client, rows, traced=False)
        print(
            f"{rows:>9} {timed['bytes'] / MIB:>7.1f} {traced['python'] / MIB:>16.2f} "
            f"{traced['rss'] / MIB:>15.1f} {rows / timed['seconds']:>8.0f}"
        )


if __name__ == "__main__":
    main()
