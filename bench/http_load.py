"""A small closed-loop HTTP load generator for the payout API (stdlib only).

    python bench/http_load.py --url http://127.0.0.1:8000 --key KEY --op create --seconds 10

Each of --concurrency threads keeps one HTTP/1.1 connection open and sends requests back to
back for --seconds; it prints requests/s and latency percentiles. Operations: create (a new
client_reference each time), read (GET one payout), list (GET the first page), and healthz
(a plain Django view through the same server and middleware: the framework's floor).
"""

import argparse
import http.client
import json
import statistics
import threading
import time
import uuid
from urllib.parse import urlsplit


def worker(args: argparse.Namespace, op: str, deadline: float, payout_id: str, out: list) -> None:
    parts = urlsplit(args.url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
    headers = {"Authorization": f"Bearer {args.key}", "Content-Type": "application/json"}
    latencies, errors = [], 0
    while time.perf_counter() < deadline:
        if op == "create":
            body = json.dumps(
                {
                    "client_reference": f"bench-{uuid.uuid4().hex}",
                    "amount": "10.00",
                    "currency": "EUR",
                    "destination": "sandbox:success",
                }
            )
            method, path, expected = "POST", "/api/v1/payout-requests/", 201
        elif op == "read":
            body, method, path, expected = None, "GET", f"/api/v1/payout-requests/{payout_id}/", 200
        elif op == "list":
            body, method, path, expected = None, "GET", "/api/v1/payout-requests/?limit=50", 200
        else:
            body, method, path, expected = None, "GET", "/healthz", 200
        started = time.perf_counter()
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        response.read()
        latencies.append(time.perf_counter() - started)
        if response.status != expected:
            errors += 1
    conn.close()
    out.append((latencies, errors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--key", required=True)
    parser.add_argument("--op", choices=("create", "read", "list", "healthz"), default="create")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    payout_id = ""
    if args.op == "read":
        parts = urlsplit(args.url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=30)
        conn.request(
            "GET",
            "/api/v1/payout-requests/?limit=1",
            headers={"Authorization": f"Bearer {args.key}"},
        )
        payout_id = json.loads(conn.getresponse().read())["results"][0]["id"]

    out: list = []
    deadline = time.perf_counter() + args.seconds
    threads = [
        threading.Thread(target=worker, args=(args, args.op, deadline, payout_id, out))
        for _ in range(args.concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    latencies = sorted(value for lat, _ in out for value in lat)
    errors = sum(err for _, err in out)
    q = statistics.quantiles(latencies, n=100)
    print(
        f"{args.op}: {len(latencies) / args.seconds:.0f} req/s, {errors} unexpected statuses, "
        f"p50 {q[49] * 1000:.1f} ms, p99 {q[98] * 1000:.1f} ms ({len(latencies)} requests)"
    )


if __name__ == "__main__":
    main()
