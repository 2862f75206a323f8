"""Webhooks under load: every delivery arrives, and payouts drain about as fast as without them.

    scripts/test_services.sh .venv/bin/python bench/webhooks_load.py [--payouts 1000]

On a throwaway PostgreSQL and Redis (test_services.sh), twice: webhooks off (no endpoint), then
on (two endpoints, each a real HTTP receiver in this process). Each run queues --payouts
payouts with no worker running, then starts the real workers (the payouts worker, and for "on"
the webhooks worker and beat) and times the payouts' drain until every one is PAID. "On" then
waits for every delivery (created, processing, paid to each endpoint: 6 per payout), checks
that each receiver got each event, with a valid signature, and reports duplicates.
Not part of the test suite: it takes minutes and its figures depend on the machine.
"""

import argparse
import os
import secrets
import sys
import tempfile
import time
import uuid
from decimal import Decimal
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
# A queue of this run's own; the workers inherit it.
os.environ["CELERY_TASK_QUEUE"] = f"bench-webhooks-{os.getpid()}"

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from standardwebhooks.webhooks import Webhook  # noqa: E402

from payouts import services  # noqa: E402
from payouts.models import ApiClient, PayoutRequest, PayoutStatus  # noqa: E402
from payouts.tests.e2e.support import (  # noqa: E402
    purge_queue,
    start_beat,
    start_webhooks_worker,
    start_worker,
)
from webhooks.models import DeliveryStatus, Event, WebhookDelivery, WebhookEndpoint  # noqa: E402
from webhooks.tests.receiver import Receiver  # noqa: E402


def new_secret() -> str:
    import base64

    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def queue_payouts(client: ApiClient, count: int) -> list[uuid.UUID]:
    return [
        services.payout_create(
            client=client,
            client_reference=f"load-{n}",
            amount=Decimal("10.00"),
            currency="RUB",
            destination="sandbox:success",
            metadata={},
        ).payout.pk
        for n in range(count)
    ]


def wait(condition, what: str, timeout: float) -> float:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise SystemExit(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.25)
    return time.monotonic() - started


def run(count: int, webhooks_on: bool, env: dict[str, str], timeout: float) -> dict[str, float]:
    client = ApiClient.objects.create(name=f"load-{'on' if webhooks_on else 'off'}-{os.getpid()}")
    receivers = [Receiver().__enter__() for _ in range(2)] if webhooks_on else []
    endpoints = [
        WebhookEndpoint.objects.create(client=client, url=r.url, secret=new_secret())
        for r in receivers
    ]
    purge_queue()
    ids = queue_payouts(client, count)
    beat_dir = tempfile.TemporaryDirectory(prefix="bench-beat-")
    processes = []
    try:
        if webhooks_on:
            processes.append(start_webhooks_worker(**env))
            processes.append(start_beat(beat_dir.name, **env))
        started = time.monotonic()
        processes.append(start_worker(**env))
        unpaid = PayoutRequest.objects.filter(pk__in=ids).exclude(status=PayoutStatus.PAID)
        wait(lambda: not unpaid.exists(), "every payout to be PAID", timeout)
        drain = time.monotonic() - started
        result = {"drain_seconds": drain, "payouts_per_second": count / drain}
        if webhooks_on:
            expected = 3 * count * len(receivers)
            wait(
                lambda: (
                    sum(r.count() for r in receivers) >= expected
                    and not WebhookDelivery.objects.filter(
                        endpoint__in=endpoints, status=DeliveryStatus.PENDING
                    ).exists()
                ),
                f"{expected} deliveries",
                timeout,
            )
            result["deliveries_seconds"] = time.monotonic() - started
            events = set(
                Event.objects.filter(client=client).values_list("pk", flat=True).iterator()
            )
            assert len(events) == 3 * count, len(events)
            received = duplicates = 0
            for receiver, endpoint in zip(receivers, endpoints, strict=True):
                seen: set[str] = set()
                verifier = Webhook(endpoint.secret)
                for request in receiver.requests():
                    verifier.verify(request.body, request.headers)
                    seen_before = request.headers["webhook-id"] in seen
                    duplicates += seen_before
                    seen.add(request.headers["webhook-id"])
                missing = {str(e) for e in events} - seen
                if missing:
                    raise SystemExit(f"LOST: {len(missing)} events never reached {receiver.url}")
                received += len(seen)
            failed = WebhookDelivery.objects.filter(
                endpoint__in=endpoints, status=DeliveryStatus.FAILED
            ).count()
            result |= {"deliveries": received, "duplicates": duplicates, "failed": failed}
        return result
    finally:
        for process in reversed(processes):
            process.stop()
            process.remove_log()
        for receiver in receivers:
            receiver.__exit__()
        beat_dir.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--payouts", type=int, default=1000)
    parser.add_argument("--latency-ms", default="200", help="the sandbox provider's latency")
    parser.add_argument("--concurrency", default="32", help="threads of each worker")
    parser.add_argument("--timeout", type=float, default=900)
    args = parser.parse_args()
    call_command("migrate", verbosity=0)
    env = {
        "PAYOUTS_SANDBOX_LATENCY_MS": args.latency_ms,
        "CELERY_WORKER_CONCURRENCY": args.concurrency,
        "PAYOUTS_WEBHOOKS_ALLOW_HTTP": "1",
        "PAYOUTS_WEBHOOKS_ALLOW_PRIVATE": "1",
        "PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS": "5",
        "PAYOUTS_LEASE_SECONDS": "120",  # a queued backlog is not a lost message
        "LOG_LEVEL": "WARNING",
    }
    off = run(args.payouts, False, env, args.timeout)
    print(
        f"webhooks off: {args.payouts} payouts PAID in {off['drain_seconds']:.1f} s "
        f"({off['payouts_per_second']:.1f}/s)",
        flush=True,
    )
    on = run(args.payouts, True, env, args.timeout)
    print(
        f"webhooks on:  {args.payouts} payouts PAID in {on['drain_seconds']:.1f} s "
        f"({on['payouts_per_second']:.1f}/s); {on['deliveries']:.0f} distinct deliveries "
        f"of {6 * args.payouts} expected, all signed validly, {on['duplicates']:.0f} "
        f"duplicates, {on['failed']:.0f} failed, all arrived {on['deliveries_seconds']:.1f} s "
        "after the workers started",
        flush=True,
    )
    print(f"drain time on/off: {on['drain_seconds'] / off['drain_seconds']:.2f}", flush=True)


if __name__ == "__main__":
    main()
