"""PayoutCreateSerializer validation in isolation (no database)."""

from decimal import Decimal
from typing import Any

from django.test import SimpleTestCase

from payouts import money
from payouts.api.serializers import PayoutCreateSerializer

VALID = {
    "client_reference": "inv-1",
    "amount": "100.00",
    "currency": "RUB",
    "destination": "40817810099910004312",
}


class CreateSerializerCase(SimpleTestCase):
    def validate(self, **overrides: Any) -> PayoutCreateSerializer:
        serializer = PayoutCreateSerializer(data={**VALID, **overrides})
        serializer.is_valid()
        return serializer

    def assertValid(self, **overrides: Any) -> dict[str, Any]:
        serializer = self.validate(**overrides)
        self.assertEqual(serializer.errors, {})
        return dict(serializer.validated_data)

    def assertFieldError(self, field: str, code: str, **overrides: Any) -> None:
        serializer = self.validate(**overrides)
        self.assertIn(field, serializer.errors, serializer.errors)
        self.assertEqual([e.code for e in serializer.errors[field]], [code], serializer.errors)


class AmountValidationTests(CreateSerializerCase):
    def test_decimal_strings_within_the_currency_scale_are_accepted_exactly(self) -> None:
        for text in ("100", "100.5", "100.50", "0.01", "1000000000000"):
            with self.subTest(amount=text):
                data = self.assertValid(amount=text)
                self.assertEqual(data["amount"], Decimal(text))
                self.assertIsInstance(data["amount"], Decimal)

    def test_more_decimal_places_than_the_currency_has_is_rejected(self) -> None:
        self.assertFieldError("amount", "too_many_decimal_places", amount="100.505")
        self.assertFieldError("amount", "too_many_decimal_places", amount="1.5", currency="JPY")
        self.assertFieldError("amount", "too_many_decimal_places", amount="1.1234", currency="KWD")

    def test_currency_scale_is_the_currency_exponent(self) -> None:
        self.assertEqual(self.assertValid(amount="1500", currency="JPY")["amount"], Decimal("1500"))
        self.assertEqual(
            self.assertValid(amount="1.125", currency="KWD")["amount"], Decimal("1.125")
        )

    def test_zero_and_negative_amounts_are_not_positive(self) -> None:
        for text in ("0", "0.00", "-1", "-0", "-100.50"):
            with self.subTest(amount=text):
                self.assertFieldError("amount", "not_positive", amount=text)

    def test_malformed_amounts_are_invalid(self) -> None:
        for value in (
            "1e5",
            " 1",
            "1 ",
            "abc",
            "NaN",
            "Infinity",
            "-Infinity",
            "",
            "1.",
            ".5",
            "+1",
            "1,5",
            "0x10",
            "\uff11",
            True,
            False,
            [],
            {},
            ["1"],
            {"value": "1"},
        ):
            with self.subTest(amount=value):
                self.assertFieldError("amount", "invalid", amount=value)

    def test_null_amount_is_rejected(self) -> None:
        self.assertFieldError("amount", "null", amount=None)

    def test_amount_above_the_maximum_is_too_large(self) -> None:
        self.assertFieldError("amount", "too_large", amount=str(money.MAX_AMOUNT + Decimal("0.01")))
        self.assertFieldError("amount", "too_large", amount="99999999999999999999")

    def test_json_numbers_arriving_as_decimal_or_int_are_taken_exactly(self) -> None:
        self.assertEqual(self.assertValid(amount=Decimal("100.5"))["amount"], Decimal("100.5"))
        self.assertEqual(self.assertValid(amount=100)["amount"], Decimal(100))
        self.assertEqual(self.assertValid(amount=Decimal("1E+5"))["amount"], Decimal("100000"))
        self.assertEqual(
            self.assertValid(amount=Decimal("0.1"))["amount"], Decimal("0.1")
        )  # never float 0.1000000000000000055...

    def test_json_number_with_too_many_places_is_rejected(self) -> None:
        self.assertFieldError("amount", "too_many_decimal_places", amount=Decimal("100.505"))

    def test_huge_or_tiny_json_numbers_are_invalid_not_expanded(self) -> None:
        for value in (
            Decimal("1E+999999999"),
            Decimal("-1E+999999999"),
            Decimal("1E-999999999"),
            Decimal("NaN"),
            Decimal("Infinity"),
            10**100,
        ):
            with self.subTest(amount=value):
                self.assertFieldError("amount", "invalid", amount=value)

    def test_negative_json_number_is_not_positive(self) -> None:
        self.assertFieldError("amount", "not_positive", amount=Decimal("-5"))
        self.assertFieldError("amount", "not_positive", amount=0)

    def test_float_amount_is_rejected(self) -> None:
        # The JSON parser never produces floats; a float here would be a lossy caller.
        self.assertFieldError("amount", "invalid", amount=100.5)


class CurrencyValidationTests(CreateSerializerCase):
    def test_currency_in_any_case_is_upper_cased(self) -> None:
        self.assertEqual(self.assertValid(currency="rub")["currency"], "RUB")
        self.assertEqual(self.assertValid(currency="Rub")["currency"], "RUB")

    def test_unpayable_and_unknown_currencies_are_rejected(self) -> None:
        for code in ("XXX", "XTS", "XAU", "XDR", "CLF", "BOV", "XAD", "ABC", "xts"):
            with self.subTest(currency=code):
                self.assertFieldError("currency", "invalid_currency", currency=code)

    def test_non_string_currency_is_rejected(self) -> None:
        values: tuple[Any, ...] = (643, True, [], {})
        for value in values:
            with self.subTest(currency=value):
                self.assertFieldError("currency", "invalid", currency=value)

    def test_blank_or_long_currency_is_rejected(self) -> None:
        self.assertFieldError("currency", "blank", currency="")
        self.assertFieldError("currency", "invalid_currency", currency="RUBB")
        self.assertFieldError("currency", "invalid_currency", currency="R" * 10_000)


class ClientReferenceValidationTests(CreateSerializerCase):
    def test_printable_reference_up_to_64_characters_is_accepted(self) -> None:
        self.assertEqual(self.assertValid(client_reference="x" * 64)["client_reference"], "x" * 64)
        self.assertEqual(
            self.assertValid(client_reference="заказ №1")["client_reference"], "заказ №1"
        )

    def test_empty_reference_is_rejected(self) -> None:
        self.assertFieldError("client_reference", "blank", client_reference="")

    def test_reference_longer_than_64_is_rejected(self) -> None:
        self.assertFieldError("client_reference", "max_length", client_reference="x" * 65)

    def test_surrounding_whitespace_is_rejected_not_trimmed(self) -> None:
        for value in (" ref", "ref ", "\tref", "   "):
            with self.subTest(client_reference=value):
                self.assertFieldError(
                    "client_reference", "invalid_client_reference", client_reference=value
                )

    def test_control_characters_are_rejected(self) -> None:
        for value in ("a\nb", "a\tb", "a\x1bb", "a\u200bb", "a\x7fb"):
            with self.subTest(client_reference=value):
                self.assertFieldError(
                    "client_reference", "invalid_client_reference", client_reference=value
                )

    def test_nul_character_is_rejected(self) -> None:
        serializer = self.validate(client_reference="a\x00b")
        self.assertIn("client_reference", serializer.errors)

    def test_non_string_reference_is_rejected(self) -> None:
        values: tuple[Any, ...] = (123, True, None, [], {})
        for value in values:
            with self.subTest(client_reference=value):
                self.assertIn("client_reference", self.validate(client_reference=value).errors)


class DestinationValidationTests(CreateSerializerCase):
    def test_destination_is_stored_as_given(self) -> None:
        self.assertEqual(self.assertValid(destination=" card 4242 ")["destination"], " card 4242 ")
        self.assertEqual(self.assertValid(destination="d" * 255)["destination"], "d" * 255)

    def test_empty_and_whitespace_only_destinations_are_blank(self) -> None:
        self.assertFieldError("destination", "blank", destination="")
        self.assertFieldError("destination", "blank", destination="   ")

    def test_destination_longer_than_255_is_rejected(self) -> None:
        self.assertFieldError("destination", "max_length", destination="d" * 256)

    def test_nul_character_in_destination_is_rejected(self) -> None:
        self.assertFieldError("destination", "null_characters_not_allowed", destination="a\x00b")

    def test_non_string_destination_is_rejected(self) -> None:
        self.assertFieldError("destination", "invalid", destination=40817810099910004312)


class MetadataValidationTests(CreateSerializerCase):
    def test_metadata_defaults_to_an_empty_object(self) -> None:
        self.assertEqual(self.assertValid()["metadata"], {})

    def test_twenty_string_pairs_at_the_limits_are_accepted(self) -> None:
        metadata = {f"{i:02d}".ljust(40, "k"): "v" * 500 for i in range(20)}
        self.assertEqual(self.assertValid(metadata=metadata)["metadata"], metadata)

    def test_more_than_twenty_keys_is_rejected(self) -> None:
        self.assertFieldError(
            "metadata", "too_many_keys", metadata={str(i): "v" for i in range(21)}
        )

    def test_key_longer_than_40_or_empty_is_rejected(self) -> None:
        self.assertFieldError("metadata", "invalid_key", metadata={"k" * 41: "v"})
        self.assertFieldError("metadata", "invalid_key", metadata={"": "v"})

    def test_nul_in_a_key_or_value_is_rejected(self) -> None:
        self.assertFieldError("metadata", "invalid_key", metadata={"a\x00": "v"})
        self.assertEqual(
            [e.code for e in self.validate(metadata={"a": "v\x00"}).errors["metadata"]["a"]],
            ["null_characters_not_allowed"],
        )

    def test_non_string_values_are_rejected_per_key(self) -> None:
        values: tuple[Any, ...] = (1, Decimal("1.5"), True, None, [], {"nested": "x"})
        for value in values:
            with self.subTest(value=value):
                errors = self.validate(metadata={"k": value}).errors
                self.assertIn("k", errors["metadata"], errors)

    def test_value_longer_than_500_is_rejected(self) -> None:
        errors = self.validate(metadata={"k": "v" * 501}).errors
        self.assertEqual([e.code for e in errors["metadata"]["k"]], ["max_length"])

    def test_non_object_metadata_is_rejected(self) -> None:
        for value in ([], ["a"], "a", 1, None):
            with self.subTest(metadata=value):
                self.assertIn("metadata", self.validate(metadata=value).errors)


class BodyShapeTests(SimpleTestCase):
    def test_all_required_fields_are_reported_when_missing(self) -> None:
        serializer = PayoutCreateSerializer(data={})
        self.assertFalse(serializer.is_valid())
        for field in ("client_reference", "amount", "currency", "destination"):
            self.assertEqual([e.code for e in serializer.errors[field]], ["required"])
        self.assertNotIn("metadata", serializer.errors)

    def test_unknown_fields_are_rejected_by_name(self) -> None:
        serializer = PayoutCreateSerializer(data={**VALID, "status": "PAID", "id": "x"})
        self.assertFalse(serializer.is_valid())
        self.assertEqual(set(serializer.errors), {"status", "id"})
        self.assertEqual(serializer.errors["status"][0].code, "unknown_field")

    def test_non_object_bodies_are_rejected(self) -> None:
        for body in ([VALID], "payout", 1, True):
            with self.subTest(body=body):
                serializer = PayoutCreateSerializer(data=body)
                self.assertFalse(serializer.is_valid())
                self.assertIn("non_field_errors", serializer.errors)

    def test_null_body_is_rejected(self) -> None:
        serializer = PayoutCreateSerializer(data=None)
        self.assertFalse(serializer.is_valid())
        self.assertIn("non_field_errors", serializer.errors)
