"""Currency codes, minor-unit exponents and amount formatting (money.py)."""

from decimal import Decimal

from django.test import SimpleTestCase

from payouts import money


class NormalizeCurrencyTests(SimpleTestCase):
    def test_lower_case_code_is_upper_cased(self) -> None:
        self.assertEqual(money.normalize_currency("rub"), "RUB")

    def test_mixed_case_code_is_upper_cased(self) -> None:
        self.assertEqual(money.normalize_currency("jPy"), "JPY")

    def test_upper_case_code_is_returned_unchanged(self) -> None:
        for code in ("RUB", "USD", "EUR", "JPY", "KWD"):
            with self.subTest(code=code):
                self.assertEqual(money.normalize_currency(code), code)

    def test_codes_without_minor_unit_funds_and_accounting_units_are_rejected(self) -> None:
        for code in ("XXX", "XTS", "XAU", "XDR", "CLF", "BOV", "XAD", "xxx", "clf"):
            with self.subTest(code=code), self.assertRaises(money.UnknownCurrency):
                money.normalize_currency(code)

    def test_unknown_and_malformed_codes_are_rejected(self) -> None:
        for code in (
            "",
            "ABC",
            "QQQ",
            "RU",
            "RUBB",
            "R B",
            "РУБ",
            "\uff52\uff55\uff42",
            "123",
            "\x00RU",
        ):
            with self.subTest(code=code), self.assertRaises(money.UnknownCurrency):
                money.normalize_currency(code)

    def test_unknown_currency_is_a_value_error(self) -> None:
        self.assertTrue(issubclass(money.UnknownCurrency, ValueError))

    def test_payable_currencies_exclude_codes_without_exponent(self) -> None:
        payable = money.payable_currencies()
        self.assertIn("RUB", payable)
        for code in ("XXX", "XTS", "XAU", "XAG", "XDR", "XSU"):
            with self.subTest(code=code):
                self.assertNotIn(code, payable)


class ExponentTests(SimpleTestCase):
    def test_minor_unit_digits_come_from_iso4217(self) -> None:
        self.assertEqual(money.exponent("RUB"), 2)
        self.assertEqual(money.exponent("JPY"), 0)
        self.assertEqual(money.exponent("KWD"), 3)
        self.assertEqual(money.exponent("USD"), 2)

    def test_quantum_is_one_minor_unit(self) -> None:
        self.assertEqual(money.quantum("RUB"), Decimal("0.01"))
        self.assertEqual(money.quantum("JPY"), Decimal("1"))
        self.assertEqual(money.quantum("KWD"), Decimal("0.001"))


class FormatAmountTests(SimpleTestCase):
    def test_amount_is_formatted_with_exactly_the_currency_digits(self) -> None:
        cases = [
            (Decimal("1500"), "RUB", "1500.00"),
            (Decimal("1500"), "JPY", "1500"),
            (Decimal("1.5"), "KWD", "1.500"),
            (Decimal("1500.5"), "RUB", "1500.50"),
            (Decimal("1500.0000"), "RUB", "1500.00"),  # as read back from the decimal column
            (Decimal("1500.0000"), "JPY", "1500"),
            (Decimal("0.01"), "RUB", "0.01"),
        ]
        for amount, currency, expected in cases:
            with self.subTest(amount=amount, currency=currency):
                self.assertEqual(money.format_amount(amount, currency), expected)

    def test_large_amount_is_formatted_without_exponent(self) -> None:
        self.assertEqual(money.format_amount(Decimal("1E+5"), "RUB"), "100000.00")
        self.assertEqual(money.format_amount(money.MAX_AMOUNT, "RUB"), "1000000000000.00")


class FitsMinorUnitTests(SimpleTestCase):
    def test_amounts_written_within_the_currency_digits_fit(self) -> None:
        for amount, currency in [
            ("100", "RUB"),
            ("100.5", "RUB"),
            ("100.50", "RUB"),
            ("100", "JPY"),
            ("1.125", "KWD"),
        ]:
            with self.subTest(amount=amount, currency=currency):
                self.assertTrue(money.fits_minor_unit(Decimal(amount), currency))

    def test_amounts_written_with_more_digits_than_the_currency_has_do_not(self) -> None:
        for amount, currency in [
            ("100.505", "RUB"),
            ("100.500", "RUB"),  # same value as 100.50, but written beyond the minor unit
            ("1.5", "JPY"),
            ("100.0", "JPY"),
            ("1.1255", "KWD"),
            ("0.001", "RUB"),
        ]:
            with self.subTest(amount=amount, currency=currency):
                self.assertFalse(money.fits_minor_unit(Decimal(amount), currency))


class UnknownStoredCurrencyTests(SimpleTestCase):
    def test_a_code_the_data_package_dropped_still_formats(self) -> None:
        self.assertEqual(money.format_amount(Decimal("1500.500"), "ZWL"), "1500.5")
