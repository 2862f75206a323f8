"""No input, however malformed, yields a 5xx (SPEC: deep JSON, huge numbers, odd types/headers)."""

import json
from typing import Any

from payouts.models import PayoutRequest

from .helpers import LIST_URL, ApiTestCase, cancel_url, detail_url, events_url, payout_body

VALID = payout_body(client_reference="hostile")


def with_field(field: str, value: Any) -> bytes:
    return json.dumps({**VALID, field: value}).encode()


def raw_field(field: str, literal: bytes) -> bytes:
    """A body whose `field` is the given raw JSON literal (for values json.dumps cannot make)."""
    body = dict(VALID)
    body[field] = "__PLACEHOLDER__"
    return json.dumps(body).encode().replace(b'"__PLACEHOLDER__"', literal)


HOSTILE_BODIES: list[tuple[str, bytes]] = [
    ("amount 1e999999999", raw_field("amount", b"1e999999999")),
    ("amount -1e999999999", raw_field("amount", b"-1e999999999")),
    ("amount 1e-999999999", raw_field("amount", b"1e-999999999")),
    ("amount 5000-digit int", raw_field("amount", b"9" * 5000)),
    ("amount 4000-digit int", raw_field("amount", b"9" * 4000)),
    ("amount 10**5000 as string", with_field("amount", "1" + "0" * 5000)),
    ("amount long fraction string", with_field("amount", "1." + "0" * 5000)),
    ("amount 1e308 float", raw_field("amount", b"1.7976931348623157e308")),
    ("amount tiny float", raw_field("amount", b"5e-324")),
    ("amount -0.0", raw_field("amount", b"-0.0")),
    ("amount 0.001 float", raw_field("amount", b"0.001")),
    ("amount nested", raw_field("amount", b"[[[[[1]]]]]")),
    ("deep list 10000", b"[" * 10000 + b"]" * 10000),
    ("deep object 5000", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ("deep metadata 10000", raw_field("metadata", b'{"k":' + b"[" * 10000 + b"]" * 10000 + b"}")),
    ("deep metadata 900", raw_field("metadata", b'{"k":' + b"[" * 900 + b"]" * 900 + b"}")),
    ("deep field 990", raw_field("destination", b"[" * 990 + b"]" * 990)),
    ("unknown field huge number", raw_field("extra", b"1e999999999")),
    ("metadata huge number", raw_field("metadata", b'{"k": 1e999999999}')),
    ("metadata key lone surrogate", raw_field("metadata", b'{"\\ud800": "v"}')),
    ("destination lone surrogate", raw_field("destination", b'"\\udc00abc"')),
    ("destination NUL", raw_field("destination", b'"a\\u0000b"')),
    ("client_reference NUL", raw_field("client_reference", b'"\\u0000"')),
    ("metadata key NUL", raw_field("metadata", b'{"\\u0000": "v"}')),
    ("metadata value NUL", raw_field("metadata", b'{"k": "\\u0000"}')),
    ("currency NUL", raw_field("currency", b'"R\\u0000B"')),
    ("currency unicode", with_field("currency", "\u0440\u0443\u0431")),
    ("currency fullwidth", with_field("currency", "\uff32\uff35\uff22")),
    ("currency dotted i", with_field("currency", "İNR")),
    ("currency sharp s", with_field("currency", "ß")),
    ("destination RTL and emoji", with_field("destination", "\u202e😀\u0301")),
    ("client_reference numbers", raw_field("client_reference", b"12345678901234567890123456789")),
    ("client_reference object", raw_field("client_reference", b'{"a": 1}')),
    ("currency list", raw_field("currency", b'["RUB"]')),
    (
        "duplicate keys",
        b'{"amount": "1", "amount": "2", "client_reference": "d", '
        b'"currency": "RUB", "destination": "d"}',
    ),
    ("NaN", raw_field("amount", b"NaN")),
    ("-Infinity", raw_field("amount", b"-Infinity")),
    ("top-level number", b"1e999999999"),
    ("top-level string", b'"x"'),
    ("top-level null", b"null"),
    ("top-level false", b"false"),
    ("empty object", b"{}"),
    ("whitespace only", b"   \n\t "),
    ("BOM", b"\xef\xbb\xbf" + json.dumps(VALID).encode()),
    ("utf-16 body", json.dumps(VALID).encode("utf-16")),
    ("utf-32 body", json.dumps(VALID).encode("utf-32")),
    ("invalid utf-8", b'{"destination": "\xff\xfe\xfd"}'),
    ("overlong utf-8", b'{"destination": "\xc0\xaf"}'),
    ("raw surrogate bytes", b'{"destination": "\xed\xa0\x80"}'),
    ("NUL bytes", b"\x00" * 100),
    ("trailing garbage", json.dumps(VALID).encode() + b"garbage"),
    ("two documents", json.dumps(VALID).encode() * 2),
    ("100 keys", json.dumps({f"k{i}": i for i in range(100)}).encode()),
    (
        "metadata 10000 keys",
        raw_field("metadata", json.dumps({f"k{i}": "v" for i in range(4000)}).encode()),
    ),
]

ODD_CONTENT_TYPES = [
    "application/json; charset=utf-16",
    "application/json; charset=latin-1",
    "application/json; charset=nonsense",
    "application/json;;;",
    "application/json; boundary=x",
    "APPLICATION/JSON",
    "application/problem+json",
    "application/vnd.api+json",
    "application/*",
    "*/*",
    "json",
    "text/json",
    "multipart/form-data",
    "multipart/form-data; boundary=",
    "application/x-www-form-urlencoded",
    "application/octet-stream",
    "text/html; charset=utf-8",
    "application/json\x00",
    "a" * 10000,
    "",
]


class HostileInputTests(ApiTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.client.raise_request_exception = False

    def assertNo5xx(self, response: Any, label: str) -> None:
        self.assertLess(response.status_code, 500, f"{label}: {response.content[:300]!r}")

    def test_hostile_json_bodies_never_yield_5xx(self) -> None:
        for label, body in HOSTILE_BODIES:
            with self.subTest(body=label):
                response = self.client.post(LIST_URL, body, content_type="application/json")
                self.assertNo5xx(response, label)
                self.assertIn(response.status_code, (200, 201, 400, 409, 413), label)
                if response.status_code >= 400:
                    self.assertTrue(response["Content-Type"].startswith("application/problem+json"))

    def test_hostile_bodies_store_nothing_invalid(self) -> None:
        for _label, body in HOSTILE_BODIES:
            self.client.post(LIST_URL, body, content_type="application/json")
        # Only well-formed documents with a valid payout may have been stored.
        for payout in PayoutRequest.objects.all():
            self.assertGreater(payout.amount, 0)
            self.assertNotIn("\x00", payout.destination)
            self.assertEqual(payout.currency, "RUB")

    def test_odd_content_types_never_yield_5xx(self) -> None:
        body = json.dumps(VALID).encode()
        for content_type in ODD_CONTENT_TYPES:
            with self.subTest(content_type=content_type[:40]):
                response = self.post_raw(body, content_type=content_type)
                self.assertNo5xx(response, content_type[:40])

    def test_declared_utf16_json_that_is_really_utf8_never_yields_5xx(self) -> None:
        body = json.dumps({**VALID, "destination": "Иван"}, ensure_ascii=False).encode()
        response = self.post_raw(body, content_type="application/json; charset=utf-16")
        self.assertNo5xx(response, "utf-16 label")

    def test_very_long_and_odd_headers_never_yield_5xx(self) -> None:
        headers = [
            {"HTTP_AUTHORIZATION": "Bearer " + "a" * 100_000},
            {"HTTP_AUTHORIZATION": "Bearer " + self.key + " " + "x" * 10_000},
            {"HTTP_AUTHORIZATION": "Bearer \x00\x01\x02"},
            {"HTTP_AUTHORIZATION": "Bearer ключ"},
            {"HTTP_AUTHORIZATION": " " * 1000},
            {"HTTP_ACCEPT": "a" * 100_000},
            {"HTTP_ACCEPT": "text/html"},
            {"HTTP_ACCEPT": "application/xml;q=0.9, */*;q=abc"},
            {"HTTP_ACCEPT_LANGUAGE": "x" * 100_000},
            {"HTTP_USER_AGENT": "u" * 100_000},
            {"HTTP_X_FORWARDED_FOR": "1.1.1.1, " * 10_000},
            {"HTTP_X_FORWARDED_PROTO": "https"},
            {"HTTP_HOST": "evil.example.com"},
            {"HTTP_HOST": "a" * 10_000},
            {"HTTP_CONTENT_LENGTH": "-1"},
            {"HTTP_CONTENT_LENGTH": "abc"},
            {"CONTENT_LENGTH": "abc"},
            {"CONTENT_LENGTH": "99999999999999999999"},
            {"HTTP_TRANSFER_ENCODING": "chunked"},
        ]
        for extra in headers:
            label = ", ".join(f"{k}={str(v)[:20]}" for k, v in extra.items())
            with self.subTest(headers=label):
                client = self.client_for(self.key)
                client.raise_request_exception = False
                if "HTTP_AUTHORIZATION" in extra:
                    client.credentials()
                for method in ("get", "post"):
                    data = payout_body(client_reference=f"h-{method}") if method == "post" else None
                    response = getattr(client, method)(LIST_URL, data, format="json", **extra)
                    self.assertNo5xx(response, label)

    def test_odd_query_strings_never_yield_5xx(self) -> None:
        queries = [
            "status=" + "NEW," * 10_000,
            "limit=" + "9" * 10_000,
            "limit=1e3",
            "limit=%00",
            "created_after=" + "9" * 1000,
            "created_after=0000-00-00T00:00:00Z",
            "created_after=9999-12-31T23:59:59.999999Z",
            "created_after=0001-01-01T00:00:00-23:59",
            "created_before=9999-12-31T23:59:59%2B23:59",
            "created_after=2026-01-01T00:00:00%2B99:99",
            "currency=%00%00%00",
            "currency=%C4%B0NR",
            "client_reference=%00",
            "client_reference=" + "x" * 10_000,
            "client_reference=%ED%A0%80",
            "cursor=%00",
            "cursor=" + "=" * 1000,
            "cursor=cD0%00",
            "status=%FF",
            "%FF=1",
            "status=NEW&status=PAID",
            "&&&==&=",
        ]
        self.created_payout()
        for query in queries:
            with self.subTest(query=query[:60]):
                response = self.client.get(f"{LIST_URL}?{query}")
                self.assertNo5xx(response, query[:60])

    def test_odd_ids_never_yield_5xx(self) -> None:
        ids = [
            "0",
            "-1",
            "9" * 1000,
            "%00",
            "%FF",
            "00000000-0000-0000-0000-000000000000",
            "{00000000-0000-0000-0000-000000000000}",
            "urn:uuid:00000000-0000-0000-0000-000000000000",
            "00000000000000000000000000000000",
            "%F0%9F%98%80",
            "..",
            "a" * 5000,
        ]
        for payout_id in ids:
            for url in (detail_url(payout_id), events_url(payout_id)):
                with self.subTest(url=url[:80]):
                    response = self.client.get(url)
                    self.assertNo5xx(response, url[:80])
            with self.subTest(cancel=payout_id[:40]):
                self.assertNo5xx(self.client.post(cancel_url(payout_id)), payout_id[:40])

    def test_paths_without_trailing_slash_are_served_not_redirected(self) -> None:
        # A redirect would turn a client's POST into a GET and silently drop the payout.
        payout = self.created_payout()
        for method, path, expected in (
            ("get", LIST_URL.rstrip("/"), 200),
            ("post", LIST_URL.rstrip("/"), 400),  # {} is not a payout
            ("get", detail_url(payout.pk).rstrip("/"), 200),
            ("get", events_url(payout.pk).rstrip("/"), 200),
            ("post", cancel_url(payout.pk).rstrip("/"), 200),
        ):
            with self.subTest(method=method, path=path):
                response = getattr(self.client, method)(path, {}, format="json")
                self.assertEqual(response.status_code, expected, response.content)
        payout.refresh_from_db()
        self.assertEqual(payout.status, "CANCELED")

    def test_odd_methods_never_yield_5xx(self) -> None:
        payout = self.created_payout()
        for method in ("TRACE", "CONNECT", "PROPFIND", "FOO", "get"):
            for path in (LIST_URL, detail_url(payout.pk), cancel_url(payout.pk)):
                with self.subTest(method=method, path=path):
                    response = self.client.generic(method, path)
                    self.assertNo5xx(response, f"{method} {path}")
