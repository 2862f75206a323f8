#!/usr/bin/env python3
"""`make webhook-listen`: a local receiver that verifies each webhook and prints its event.

    WEBHOOK_SECRET=whsec_... make webhook-listen              # http://127.0.0.1:8787/
    .venv/bin/python scripts/webhook_listen.py --secret whsec_... --port 8787

Every POST is verified with the `standardwebhooks` package (the Standard Webhooks reference
verifier, not this service's signing code) against WEBHOOK_SECRET, the secret the endpoint's
registration answered. A valid delivery is printed (event id, type, sequence, the payout's id and
status) and answered 204; one that fails verification is answered 400 and printed with the
reason. Deliveries are at-least-once: a repeated webhook-id, and an event older than one already
seen for its payout (a lower sequence), are printed as such: a real receiver would skip them.
For local testing only: it keeps what it has seen in memory and serves one request at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, TextIO

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

DEFAULT_PORT = 8787
MAX_BODY_BYTES = 1024 * 1024


class Receiver:
    """What the listener has seen: webhook ids, and the latest sequence of each payout."""

    def __init__(self, secret: str, out: TextIO) -> None:
        self.webhook = Webhook(secret)
        self.out = out
        self.seen_ids: set[str] = set()
        self.latest_sequence: dict[str, int] = {}

    def say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def receive(self, body: bytes, headers: dict[str, str]) -> HTTPStatus:
        try:
            event: Any = self.webhook.verify(body, headers)
        except WebhookVerificationError as exc:  # headers missing, no signature matches, too old
            self.say(f"REJECTED (400): {exc}")
            return HTTPStatus.BAD_REQUEST
        except ValueError as exc:  # binascii, UTF-8 or JSON: a malformed signature or body
            self.say(f"REJECTED (400): malformed signature header or body ({exc})")
            return HTTPStatus.BAD_REQUEST
        webhook_id = headers.get("webhook-id", "")
        data = event.get("data") or {}
        payout_id, sequence = str(data.get("id")), event.get("sequence")
        note = ""
        if webhook_id in self.seen_ids:
            note = "  (a repeat of a webhook-id already received: skip it)"
        elif isinstance(sequence, int):
            latest = self.latest_sequence.get(payout_id, 0)
            if sequence < latest:
                note = f"  (stale: sequence {latest} of this payout already received: skip it)"
            self.latest_sequence[payout_id] = max(latest, sequence)
        self.seen_ids.add(webhook_id)
        self.say(
            f"{event.get('type')}  event {event.get('id')}  sequence {sequence}  "
            f"payout {payout_id} {data.get('status')}  (verified){note}"
        )
        return HTTPStatus.NO_CONTENT


def handler_for(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "webhook-listen"

        def do_POST(self) -> None:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                self.answer(HTTPStatus.LENGTH_REQUIRED)
                return
            if not 0 <= length <= MAX_BODY_BYTES:
                self.answer(HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
                return
            body = self.rfile.read(length)
            headers = {name.lower(): value for name, value in self.headers.items()}
            self.answer(receiver.receive(body, headers))

        def answer(self, status: HTTPStatus) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the receiver prints one line per delivery instead of an access log

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--secret",
        default=os.environ.get("WEBHOOK_SECRET", ""),
        help="the endpoint's whsec_... secret (default: $WEBHOOK_SECRET)",
    )
    parser.add_argument("--host", default=os.environ.get("WEBHOOK_LISTEN_HOST") or "127.0.0.1")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("WEBHOOK_LISTEN_PORT") or DEFAULT_PORT),
        help=f"default: $WEBHOOK_LISTEN_PORT or {DEFAULT_PORT}",
    )
    args = parser.parse_args(argv)
    if not args.secret:
        parser.error(
            "no secret: give the endpoint's secret (the `secret` of its registration answer) "
            "as WEBHOOK_SECRET=whsec_... or --secret"
        )
    try:
        receiver = Receiver(args.secret, sys.stdout)
    except Exception as exc:  # the library raises bare errors for a secret it cannot decode
        parser.error(f"the secret is not a whsec_ base64 secret ({exc})")
    try:
        server = HTTPServer((args.host, args.port), handler_for(receiver))
    except OSError as exc:
        parser.error(f"cannot listen on {args.host}:{args.port}: {exc.strerror}")
    receiver.say(f"webhook-listen: verifying deliveries on http://{args.host}:{args.port}/")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
