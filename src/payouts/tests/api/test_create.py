"""POST /api/v1/payout-requests/: 201, idempotent 200, 409 conflicts, 400 validation, 415, 413."""

import re
from decimal import Decimal
from typing import Any
from unittest import mock

from payouts import money
from payouts.models import EventActor, PayoutEvent, PayoutRequest, PayoutStatus
from payouts.tasks import process_payout

from .helpers import LIST_URL, ApiTestCase, payout_body

ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


class CreatePayoutTests(ApiTestCase):
    def test_create_returns_201_with_location_and_the_payout(self) -> None:
        response, published = self.create_counting(amount="1500", currency="rub")

        self.assertEqual(response.status_code, 201, response.content)
        self.assertTrue(response["Content-Type"].startswith("application/json"))
        body = response.json()
        self.assertEqual(
            set(body),
            {
                "id",
                "client_reference",
                "amount",
                "currency",
                "destination",
                "metadata",
                "status",
                "failure_code",
                "failure_reason",
                "provider_reference",
                "attempts",
                "created_at",
                "updated_at",
                "processed_at",
            },
        )
        self.assertEqual(body["client_reference"], "inv-1")
        self.assertEqual(body["amount"], "1500.00")
        self.assertEqual(body["currency"], "RUB")
        self.assertEqual(body["destination"], "40817810099910004312")
        self.assertEqual(body["metadata"], {"order_id": "42"})
        self.assertEqual((body["provider_reference"], body["attempts"]), ("", 0))
        self.assertEqual(body["status"], "NEW")
        self.assertEqual(body["failure_code"], "")
        self.assertEqual(body["failure_reason"], "")
        self.assertIsNone(body["processed_at"])
        self.assertRegex(body["created_at"], ISO_UTC)
        self.assertRegex(body["updated_at"], ISO_UTC)
        self.assertEqual(response["Location"], f"http://testserver{LIST_URL}{body['id']}/")
        self.assertEqual(published, 1)

    def test_create_stores_the_normalized_payout_for_the_caller(self) -> None:
        response = self.create(amount="1500.5", currency="rub", metadata={})
        payout = PayoutRequest.objects.get(pk=response.json()["id"])
        self.assertEqual(payout.client, self.merchant)
        self.assertEqual(payout.amount, 1500.5)
        self.assertEqual(payout.currency, "RUB")
        self.assertEqual(payout.status, PayoutStatus.NEW)
        self.assertEqual(payout.metadata, {})
        self.assertIsNotNone(payout.lease_expires_at)
        self.assertEqual(response.json()["amount"], "1500.50")

    def test_create_writes_a_creation_history_event(self) -> None:
        payout = self.created_payout()
        events = list(PayoutEvent.objects.filter(payout=payout))
        self.assertEqual(len(events), 1)
        self.assertEqual(events[0].from_status, "")
        self.assertEqual(events[0].to_status, PayoutStatus.NEW)
        self.assertEqual(events[0].actor, EventActor.API)
        self.assertTrue(events[0].applied)

    def test_location_header_points_at_the_created_payout(self) -> None:
        response = self.create()
        detail = self.client.get(response["Location"])
        self.assertEqual(detail.status_code, 200)
        self.assertEqual(detail.json(), response.json())

    def test_amount_is_formatted_with_the_currency_minor_units(self) -> None:
        cases = [
            ("JPY", "1500", "1500"),
            ("KWD", "1.5", "1.500"),
            ("RUB", "0.1", "0.10"),
            ("usd", "7", "7.00"),
        ]
        for index, (currency, amount, expected) in enumerate(cases):
            with self.subTest(currency=currency):
                response = self.create(
                    client_reference=f"fmt-{index}", currency=currency, amount=amount
                )
                self.assertEqual(response.status_code, 201, response.content)
                self.assertEqual(response.json()["amount"], expected)
                self.assertEqual(self.client.get(response["Location"]).json()["amount"], expected)

    def test_json_number_amount_is_taken_exactly(self) -> None:
        response = self.client.post(
            LIST_URL,
            b'{"client_reference": "num", "amount": 100.10, "currency": "RUB", "destination": "d"}',
            content_type="application/json",
        )
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["amount"], "100.10")

    def test_amounts_at_the_upper_bound_are_stored_and_returned_exactly(self) -> None:
        cases = [
            ("RUB", "1000000000000", "1000000000000.00"),
            ("RUB", "999999999999.99", "999999999999.99"),
            ("KWD", "999999999999.999", "999999999999.999"),
            ("JPY", "1000000000000", "1000000000000"),
            ("RUB", "0.01", "0.01"),
        ]
        for index, (currency, amount, expected) in enumerate(cases):
            with self.subTest(currency=currency, amount=amount):
                response = self.create(
                    client_reference=f"max-{index}", currency=currency, amount=amount
                )
                self.assertEqual(response.status_code, 201, response.content)
                self.assertEqual(response.json()["amount"], expected)
                self.assertEqual(self.client.get(response["Location"]).json()["amount"], expected)
                self.assertEqual(
                    PayoutRequest.objects.get(pk=response.json()["id"]).amount, Decimal(amount)
                )

    def test_metadata_is_optional(self) -> None:
        body = payout_body()
        del body["metadata"]
        response = self.client.post(LIST_URL, body, format="json")
        self.assertEqual(response.status_code, 201, response.content)
        self.assertEqual(response.json()["metadata"], {})

    def test_unicode_destination_and_reference_round_trip(self) -> None:
        response = self.create(
            client_reference="заказ-№1 😀", destination="  Иван Петров, карта 4242  "
        )
        self.assertEqual(response.status_code, 201, response.content)
        payout = PayoutRequest.objects.get(pk=response.json()["id"])
        self.assertEqual(payout.client_reference, "заказ-№1 😀")
        self.assertEqual(payout.destination, "  Иван Петров, карта 4242  ")


class IdempotentCreateTests(ApiTestCase):
    def test_identical_repeat_returns_200_with_the_same_payout_and_queues_nothing(self) -> None:
        first, first_published = self.create_counting()
        second, second_published = self.create_counting()

        self.assertEqual(first.status_code, 201)
        self.assertEqual(second.status_code, 200, second.content)
        self.assertEqual(second.json(), self.client.get(first["Location"]).json())
        self.assertNotIn("Location", second)
        self.assertEqual((first_published, second_published), (1, 0))
        self.assertEqual(PayoutRequest.objects.filter(client=self.merchant).count(), 1)
        self.assertEqual(PayoutEvent.objects.count(), 1)

    def test_equivalent_amount_and_currency_spellings_count_as_identical(self) -> None:
        self.create(amount="100", currency="RUB")
        for amount, currency in [
            ("100.00", "RUB"),
            ("100", "rub"),
            ("100.0", "Rub"),
            ("100.00", "rub"),
        ]:
            with self.subTest(amount=amount, currency=currency):
                response, published = self.create_counting(amount=amount, currency=currency)
                self.assertEqual(response.status_code, 200, response.content)
                self.assertEqual(response.json()["amount"], "100.00")
                self.assertEqual(published, 0)
        self.assertEqual(PayoutRequest.objects.count(), 1)

    def test_metadata_key_order_does_not_matter(self) -> None:
        self.create(metadata={"a": "1", "b": "2"})
        response, published = self.create_counting(metadata={"b": "2", "a": "1"})
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(published, 0)

    def test_omitted_metadata_equals_empty_metadata(self) -> None:
        body = payout_body(metadata={})
        self.assertEqual(self.client.post(LIST_URL, body, format="json").status_code, 201)
        del body["metadata"]
        self.assertEqual(self.client.post(LIST_URL, body, format="json").status_code, 200)

    def test_repeat_after_the_payout_moved_on_returns_it_as_it_is_now(self) -> None:
        payout = self.created_payout()
        self.move(payout, PayoutStatus.PROCESSING, PayoutStatus.PAID)
        response, published = self.create_counting()
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json()["status"], "PAID")
        self.assertEqual(published, 0)

    def test_same_reference_with_different_data_is_a_409_conflict(self) -> None:
        payout = self.created_payout()
        cases: list[tuple[dict[str, Any], list[str]]] = [
            ({"amount": "1500.01"}, ["amount"]),
            ({"destination": "40817810099910004313"}, ["destination"]),
            ({"metadata": {"order_id": "43"}}, ["metadata"]),
            ({"metadata": {}}, ["metadata"]),
            ({"currency": "USD"}, ["currency"]),
            ({"amount": "1", "currency": "usd"}, ["amount", "currency"]),
        ]
        for overrides, fields in cases:
            with self.subTest(overrides=overrides):
                response, published = self.create_counting(**overrides)
                body = self.assertProblem(response, 409, "client_reference_conflict")
                self.assertEqual(body["conflicting_fields"], fields)
                self.assertEqual(body["payout_id"], str(payout.pk))
                self.assertEqual(published, 0)
        payout.refresh_from_db()
        self.assertEqual((payout.amount, payout.currency), (1500, "RUB"))
        self.assertEqual(payout.destination, "40817810099910004312")
        self.assertEqual(payout.metadata, {"order_id": "42"})
        self.assertEqual(PayoutRequest.objects.count(), 1)

    def test_same_reference_is_allowed_for_two_different_clients(self) -> None:
        mine, mine_published = self.create_counting()
        theirs, theirs_published = self.create_counting(self.other, amount="1")
        self.assertEqual((mine.status_code, theirs.status_code), (201, 201))
        self.assertNotEqual(mine.json()["id"], theirs.json()["id"])
        self.assertEqual((mine_published, theirs_published), (1, 1))
        self.assertEqual(
            set(
                PayoutRequest.objects.filter(client_reference="inv-1").values_list(
                    "client__name", flat=True
                )
            ),
            {"merchant-a", "merchant-b"},
        )


class CreateValidationTests(ApiTestCase):
    def assertRejected(self, response: Any, *expected: tuple[str | None, str]) -> None:
        self.assertValidationError(response, *expected)
        self.assertEqual(PayoutRequest.objects.count(), 0)

    def post(self, **overrides: Any) -> Any:
        return self.client.post(LIST_URL, payout_body(**overrides), format="json")

    def test_missing_fields_are_each_reported(self) -> None:
        response = self.client.post(LIST_URL, {}, format="json")
        self.assertRejected(
            response,
            ("client_reference", "required"),
            ("amount", "required"),
            ("currency", "required"),
            ("destination", "required"),
        )

    def test_every_bad_field_is_reported_at_once(self) -> None:
        response = self.post(client_reference="", amount="abc", currency="XXX", destination="")
        body = self.assertValidationError(
            response,
            ("client_reference", "blank"),
            ("amount", "invalid"),
            ("currency", "invalid_currency"),
            ("destination", "blank"),
        )
        self.assertEqual(len(body["errors"]), 4)

    def test_bad_amounts_are_rejected_with_a_precise_code(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"amount": "100.505"}, "too_many_decimal_places"),
            ({"amount": "1.5", "currency": "JPY"}, "too_many_decimal_places"),
            ({"amount": "0"}, "not_positive"),
            ({"amount": "-1"}, "not_positive"),
            ({"amount": "1000000000000.01"}, "too_large"),
            ({"amount": "1e5"}, "invalid"),
            ({"amount": " 1"}, "invalid"),
            ({"amount": "abc"}, "invalid"),
            ({"amount": "NaN"}, "invalid"),
            ({"amount": "Infinity"}, "invalid"),
            ({"amount": True}, "invalid"),
            ({"amount": []}, "invalid"),
            ({"amount": {}}, "invalid"),
            ({"amount": None}, "null"),
        ]
        for overrides, code in cases:
            with self.subTest(overrides=overrides):
                self.assertRejected(self.post(**overrides), ("amount", code))

    def test_bad_currencies_are_rejected(self) -> None:
        for code in ("XXX", "XTS", "XAU", "XDR", "CLF", "BOV", "XAD", "ABC"):
            with self.subTest(currency=code):
                self.assertRejected(self.post(currency=code), ("currency", "invalid_currency"))
        self.assertRejected(self.post(currency=643), ("currency", "invalid"))
        self.assertRejected(self.post(currency=""), ("currency", "blank"))

    def test_unknown_fields_are_rejected(self) -> None:
        response = self.post(status="PAID", client="other")
        body = self.assertValidationError(
            response, ("status", "unknown_field"), ("client", "unknown_field")
        )
        self.assertEqual(PayoutRequest.objects.count(), 0)
        self.assertEqual(len(body["errors"]), 2)

    def test_unknown_fields_and_bad_fields_are_reported_together(self) -> None:
        response = self.post(extra="x", amount="-1")
        self.assertValidationError(response, ("extra", "unknown_field"), ("amount", "not_positive"))

    def test_non_object_bodies_are_rejected(self) -> None:
        for raw in (b'[{"client_reference": "x"}]', b'"payout"', b"null", b"42", b"true"):
            with self.subTest(body=raw):
                response = self.client.post(LIST_URL, raw, content_type="application/json")
                self.assertRejected(response, (None, response.json()["errors"][0]["code"]))
                self.assertIsNone(response.json()["errors"][0]["field"])

    def test_empty_body_reports_the_required_fields(self) -> None:
        response = self.client.post(LIST_URL, b"", content_type="application/json")
        self.assertRejected(response, ("amount", "required"))

    def test_metadata_rules_are_enforced(self) -> None:
        cases: list[tuple[dict[str, Any], tuple[str, str]]] = [
            ({str(i): "v" for i in range(21)}, ("metadata", "too_many_keys")),
            ({"k" * 41: "v"}, ("metadata", "invalid_key")),
            ({"": "v"}, ("metadata", "invalid_key")),
            ({"n": 1}, ("metadata.n", "invalid")),
            ({"b": True}, ("metadata.b", "invalid")),
            ({"x": None}, ("metadata.x", "null")),
            ({"o": {"nested": "v"}}, ("metadata.o", "invalid")),
            ({"l": ["v"]}, ("metadata.l", "invalid")),
            ({"long": "v" * 501}, ("metadata.long", "max_length")),
        ]
        for metadata, expected in cases:
            with self.subTest(metadata=list(metadata)[:2]):
                self.assertRejected(self.post(metadata=metadata), expected)
        for not_an_object in (["a"], "a", 1):
            with self.subTest(metadata=not_an_object):
                response = self.post(metadata=not_an_object)
                self.assertRejected(response, ("metadata", "not_a_dict"))
        self.assertRejected(self.post(metadata=None), ("metadata", "null"))

    def test_metadata_at_the_limits_is_accepted(self) -> None:
        metadata = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(20)}
        response = self.post(metadata=metadata)
        self.assertEqual(response.status_code, 201, response.content[:500])
        self.assertEqual(PayoutRequest.objects.get().metadata, metadata)

    def test_client_reference_rules_are_enforced(self) -> None:
        cases = [
            ("", "blank"),
            ("x" * 65, "max_length"),
            (" ref", "invalid_client_reference"),
            ("ref ", "invalid_client_reference"),
            ("   ", "invalid_client_reference"),
            ("a\nb", "invalid_client_reference"),
            ("a\x1bb", "invalid_client_reference"),
            ("a\u2028b", "invalid_client_reference"),
        ]
        for value, code in cases:
            with self.subTest(client_reference=value):
                self.assertRejected(self.post(client_reference=value), ("client_reference", code))
        self.assertRejected(self.post(client_reference=123), ("client_reference", "invalid"))
        self.assertEqual(self.post(client_reference="x" * 64).status_code, 201)

    def test_destination_rules_are_enforced(self) -> None:
        self.assertRejected(self.post(destination=""), ("destination", "blank"))
        self.assertRejected(self.post(destination="  \t "), ("destination", "blank"))
        self.assertRejected(self.post(destination="d" * 256), ("destination", "max_length"))
        self.assertRejected(self.post(destination=4242), ("destination", "invalid"))
        response = self.post(destination="d" * 255)
        self.assertEqual(response.status_code, 201)
        self.assertEqual(PayoutRequest.objects.get().destination, "d" * 255)

    def test_nul_characters_are_rejected_in_every_text_field(self) -> None:
        self.assertRejected(
            self.post(destination="a\x00b"), ("destination", "null_characters_not_allowed")
        )
        self.assertRejected(
            self.post(client_reference="a\x00b"),
            ("client_reference", "null_characters_not_allowed"),
        )
        self.assertRejected(
            self.post(metadata={"k": "a\x00"}), ("metadata.k", "null_characters_not_allowed")
        )
        self.assertRejected(self.post(metadata={"k\x00": "a"}), ("metadata", "invalid_key"))

    def test_malformed_json_is_a_400(self) -> None:
        for raw in (
            b"{",
            b"{'a': 1}",
            b'{"amount": NaN}',
            b'{"destination": "\\ud800"}',
            b"\xff\xfe",
        ):
            with self.subTest(body=raw):
                response = self.client.post(LIST_URL, raw, content_type="application/json")
                self.assertProblem(response, 400, "malformed_json")
        self.assertEqual(PayoutRequest.objects.count(), 0)


class CreateMediaTypeTests(ApiTestCase):
    def test_text_plain_body_is_415(self) -> None:
        response = self.post_raw('{"client_reference": "x"}', content_type="text/plain")
        self.assertProblem(response, 415, "unsupported_media_type")
        self.assertEqual(PayoutRequest.objects.count(), 0)

    def test_form_bodies_are_415(self) -> None:
        multipart = self.client.post(LIST_URL, payout_body(metadata="x"), format="multipart")
        self.assertProblem(multipart, 415, "unsupported_media_type")
        response = self.post_raw(
            "client_reference=x&amount=1&currency=RUB&destination=d",
            content_type="application/x-www-form-urlencoded",
        )
        self.assertProblem(response, 415, "unsupported_media_type")
        self.assertEqual(PayoutRequest.objects.count(), 0)

    def test_missing_content_type_is_415(self) -> None:
        response = self.post_raw(b'{"a": 1}', content_type="")
        self.assertProblem(response, 415, "unsupported_media_type")

    def test_json_with_charset_parameter_is_accepted(self) -> None:
        response = self.post_raw(
            '{"client_reference": "cs", "amount": "1", "currency": "RUB", "destination": "d"}',
            content_type="application/json; charset=utf-8",
        )
        self.assertEqual(response.status_code, 201, response.content)

    def test_body_over_64_kib_is_413(self) -> None:
        body = b'{"client_reference": "big", "destination": "' + b"d" * (64 * 1024) + b'"}'
        response = self.post_raw(body)
        self.assertProblem(response, 413, "request_too_large")
        self.assertEqual(PayoutRequest.objects.count(), 0)

    # DRF buffers the body before the parser: above DATA_UPLOAD_MAX_MEMORY_SIZE Django itself
    # refuses it, and that must still be a 413, not a 400.
    def test_body_over_the_upload_memory_limit_is_413(self) -> None:
        body = b'{"client_reference": "huge", "destination": "' + b"d" * (3 * 1024 * 1024) + b'"}'
        response = self.post_raw(body)
        self.assertProblem(response, 413, "request_too_large")
        self.assertEqual(PayoutRequest.objects.count(), 0)


class CreateQueueingTests(ApiTestCase):
    def test_the_task_is_queued_only_after_commit(self) -> None:
        with (
            mock.patch.object(process_payout, "apply_async") as publish,
            self.captureOnCommitCallbacks(execute=False) as callbacks,
        ):
            response = self.client.post(LIST_URL, payout_body(), format="json")
            self.assertEqual(response.status_code, 201)
            publish.assert_not_called()  # nothing is published inside the transaction
        self.assertEqual(len(callbacks), 1)
        with mock.patch.object(process_payout, "apply_async") as publish:
            callbacks[0]()
        publish.assert_called_once()
        self.assertEqual(publish.call_args.kwargs["args"], (response.json()["id"],))

    def test_identical_repeat_registers_no_on_commit_callback(self) -> None:
        self.create()
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(LIST_URL, payout_body(), format="json")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(callbacks, [])

    def test_conflict_registers_no_on_commit_callback(self) -> None:
        self.create()
        with self.captureOnCommitCallbacks(execute=False) as callbacks:
            response = self.client.post(LIST_URL, payout_body(amount="1"), format="json")
        self.assertEqual(response.status_code, 409)
        self.assertEqual(callbacks, [])

    def test_broker_outage_at_create_still_answers_201_and_keeps_the_payout(self) -> None:
        # assertLogs outermost: it must still be listening when the on-commit callbacks run.
        with (
            self.assertLogs("payouts", "WARNING"),
            mock.patch.object(
                process_payout, "apply_async", side_effect=ConnectionRefusedError("broker down")
            ) as publish,
            self.captureOnCommitCallbacks(execute=True),
        ):
            response = self.client.post(LIST_URL, payout_body(), format="json")
        self.assertEqual(response.status_code, 201, response.content)
        publish.assert_called_once()
        payout = PayoutRequest.objects.get(pk=response.json()["id"])
        self.assertEqual(payout.status, PayoutStatus.NEW)
        self.assertIsNotNone(payout.lease_expires_at)  # the recovery sweep will find it


class CurrencyEnumAcceptedTests(ApiTestCase):
    # The OpenAPI document lists these codes as the currency enum (test_openapi_document).
    def test_every_code_in_the_schemas_enum_is_accepted_in_any_case(self) -> None:
        codes = sorted(money.payable_currencies())
        for index, code in enumerate(codes):
            spelled = code.lower() if index % 2 else code
            with self.subTest(currency=spelled):
                response = self.create(client_reference=f"c-{code}", amount="1", currency=spelled)
                self.assertEqual(response.status_code, 201, response.content)
                self.assertEqual(response.json()["currency"], code)
