"""StrictJSONParser: exact decimals, and hostile documents become 400/413, never 500."""

import contextlib
import io
from decimal import Decimal
from typing import Any

from django.test import SimpleTestCase
from rest_framework.exceptions import ParseError

from payouts.api.errors import exception_handler
from payouts.api.parsers import MAX_BODY_BYTES, RequestTooLarge, StrictJSONParser


def parse(body: bytes) -> Any:
    return StrictJSONParser().parse(io.BytesIO(body), "application/json", {})


class StrictJSONParserTests(SimpleTestCase):
    def test_object_is_parsed(self) -> None:
        self.assertEqual(parse(b'{"a": "b", "n": 1}'), {"a": "b", "n": 1})

    def test_floats_are_parsed_as_exact_decimals(self) -> None:
        data = parse(b'{"amount": 100.10, "small": 0.1, "exp": 1e5}')
        self.assertEqual(data["amount"], Decimal("100.10"))
        self.assertIsInstance(data["amount"], Decimal)
        self.assertEqual(data["small"], Decimal("0.1"))
        self.assertEqual(data["exp"], Decimal("1E+5"))

    def test_integers_stay_integers(self) -> None:
        self.assertEqual(parse(b"[1, -2]"), [1, -2])

    def test_huge_exponent_is_parsed_without_expanding(self) -> None:
        self.assertEqual(parse(b'{"a": 1e999999999}')["a"], Decimal("1E+999999999"))

    def test_deeply_nested_document_is_a_parse_error_not_a_recursion_error(self) -> None:
        for depth in (10_000, 30_000):
            with self.subTest(depth=depth):
                with self.assertRaises(ParseError):
                    parse(b"[" * depth + b"]" * depth)
                with self.assertRaises(ParseError):
                    parse(b'{"a":' * (depth // 5) + b"1" + b"}" * (depth // 5))

    def test_nesting_near_the_recursion_limit_never_escapes_as_recursion_error(self) -> None:
        for depth in range(900, 1100, 10):
            # Parsed or refused with ParseError, never a RecursionError.
            with self.subTest(depth=depth), contextlib.suppress(ParseError):
                parse(b"[" * depth + b"]" * depth)

    def test_nan_and_infinity_are_parse_errors(self) -> None:
        for body in (b'{"amount": NaN}', b'{"amount": Infinity}', b'{"amount": -Infinity}', b"NaN"):
            with self.subTest(body=body), self.assertRaises(ParseError):
                parse(body)

    def test_lone_surrogate_is_a_parse_error(self) -> None:
        for body in (b'{"destination": "\\ud800"}', b'{"\\udfff": "x"}', b'["a\\ud800b"]'):
            with self.subTest(body=body), self.assertRaisesMessage(ParseError, "surrogate"):
                parse(body)

    def test_duplicate_keys_are_a_parse_error_at_any_depth(self) -> None:
        for body in (b'{"amount": "1", "amount": "1000"}', b'{"metadata": {"a": "1", "a": "2"}}'):
            with self.subTest(body=body), self.assertRaisesMessage(ParseError, "duplicate key"):
                parse(body)

    def test_paired_surrogates_are_valid_text(self) -> None:
        self.assertEqual(parse(b'{"a": "\\ud83d\\ude00"}'), {"a": "\U0001f600"})

    def test_invalid_utf8_is_a_parse_error(self) -> None:
        for body in (b'{"a": "\xff\xfe"}', b"\xc3\x28", b'{"a": "\xed\xa0\x80"}'):
            with self.subTest(body=body), self.assertRaises(ParseError):
                parse(body)

    def test_malformed_json_is_a_parse_error(self) -> None:
        for body in (b"", b"{", b"{'a': 1}", b'{"a": 1,}', b"undefined", b'{"a": 01}', b"\x00"):
            with self.subTest(body=body), self.assertRaises(ParseError):
                parse(body)

    def test_too_many_integer_digits_is_a_parse_error(self) -> None:
        # CPython refuses to convert integers of more than 4300 digits (a DoS guard).
        with self.assertRaises(ParseError):
            parse(b'{"amount": ' + b"9" * 5000 + b"}")

    def test_body_at_the_limit_is_parsed(self) -> None:
        padding = MAX_BODY_BYTES - len(b'{"a": ""}')
        body = b'{"a": "' + b"x" * padding + b'"}'
        self.assertEqual(len(body), MAX_BODY_BYTES)
        self.assertEqual(len(parse(body)["a"]), padding)

    def test_body_over_64_kib_is_refused_as_too_large(self) -> None:
        self.assertEqual(MAX_BODY_BYTES, 64 * 1024)
        body = b'{"a": "' + b"x" * MAX_BODY_BYTES + b'"}'
        with self.assertRaises(RequestTooLarge) as caught:
            parse(body)
        # The HTTP answer comes from the one error table, not from the exception.
        response = exception_handler(caught.exception, {})
        assert response is not None
        self.assertEqual((response.status_code, response.data["code"]), (413, "request_too_large"))

    def test_parse_error_is_a_400(self) -> None:
        with self.assertRaises(ParseError) as caught:
            parse(b"{")
        self.assertEqual(caught.exception.status_code, 400)
