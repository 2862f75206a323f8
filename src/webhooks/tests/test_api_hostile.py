"""Hostile input to the webhooks API: always a problem document, never a 5xx."""

import itertools
import json
from typing import Any

from django.test import override_settings

from webhooks.models import WebhookEndpoint

from .helpers import ENDPOINTS_URL, EVENTS_URL, WebhookApiTestCase, endpoint_url

URLS: list[Any] = [
    None, 0, 1.5, True, [], {}, "", " ", "\x00", "https://\x00/", "https://[::1", "https://[zz]/",
    "http://[fe80::1%25eth0]/", "https://" + "a" * 5000, "https://пример.испытание/",
    "https://xn--/", "https://..../", "https://:80/", "https://93.184.216.34:-1/",
    "https://93.184.216.34:65536/", "https://%00/", "http://0/", "gopher://127.0.0.1:25/",
    "\u202ehttps://evil/",
]  # fmt: skip
EVENTS: list[Any] = [
    None, "*", "payout.paid", 1, {}, [], [None], [[]], [{}], ["*"] * 50, ["payout.paid"] * 7,
    ["\x00"], ["payout.paid", 1], ["a" * 10000],
]  # fmt: skip


@override_settings(PAYOUTS_WEBHOOKS_ALLOW_HTTP=False, PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=False)
class HostileInputTests(WebhookApiTestCase):
    def assertNo5xx(self, response: object, what: object) -> None:
        status = response.status_code  # type: ignore[attr-defined]
        self.assertLess(status, 500, (what, response.content[:500]))  # type: ignore[attr-defined]
        if status >= 400:
            body = json.loads(response.content)  # type: ignore[attr-defined]
            self.assertEqual(body["status"], status)

    def test_create_and_patch_with_hostile_fields(self) -> None:
        endpoint = WebhookEndpoint.objects.create(
            client=self.merchant, url="https://93.184.216.34/", events=["*"], secret="whsec_x"
        )
        for url, events in itertools.product(URLS, EVENTS[:4]):
            body = {"url": url, "events": events}
            self.assertNo5xx(self.client.post(ENDPOINTS_URL, body, format="json"), body)
            self.assertNo5xx(
                self.client.patch(endpoint_url(endpoint.pk), body, format="json"), body
            )
        for events in EVENTS:
            body = {"url": "https://93.184.216.34/", "events": events}
            self.assertNo5xx(self.client.post(ENDPOINTS_URL, body, format="json"), body)
        # Every request above was refused: nothing was stored or changed.
        self.assertEqual(list(WebhookEndpoint.objects.all()), [endpoint])
        endpoint.refresh_from_db()
        self.assertEqual((endpoint.url, endpoint.events), ("https://93.184.216.34/", ["*"]))

    def test_hostile_raw_bodies_and_paths(self) -> None:
        for raw in (
            b"",
            b"{",
            b"[]",
            b"null",
            b'"x"',
            b'{"url": "a", "url": "b"}',
            b"\xff\xfe",
            b'{"url": "https://\\ud800/"}',
        ):
            response = self.client.generic(
                "POST",
                ENDPOINTS_URL,
                raw,  # type: ignore[arg-type]  # bytes are fine, the stubs say str
                content_type="application/json",
            )
            self.assertNo5xx(response, raw)
        self.assertNo5xx(
            self.client.generic("POST", ENDPOINTS_URL, "url=x", content_type="text/plain"), "text"
        )
        for path in (
            f"{ENDPOINTS_URL}%00/",
            f"{ENDPOINTS_URL}{'9' * 500}/",
            f"{ENDPOINTS_URL}..%2F..%2Fpayout-requests/",
            f"{ENDPOINTS_URL}x/deliveries/y/retry/",
        ):
            self.assertNo5xx(self.client.get(path), path)
            self.assertNo5xx(self.client.post(path), path)
        for query in (
            "payout_id=%00",
            "type=%ff",
            "limit=99999999999999999999",
            "cursor=%00",
            "limit=-1",
        ):
            self.assertNo5xx(self.client.get(f"{EVENTS_URL}?{query}"), query)
            self.assertNo5xx(self.client.get(f"{ENDPOINTS_URL}?{query}"), query)
