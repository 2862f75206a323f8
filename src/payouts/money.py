"""Currencies and amounts: ISO 4217 codes and minor-unit exponents from the `iso4217` package."""

from decimal import Decimal
from functools import cache

from iso4217 import Currency

# The package lists funds and units of account beside real currencies and has no flag for them;
# ISO 4217 marks these as funds (or, XAD, an accounting unit). Codes with no minor unit at all
# (XXX, XTS, XAU, XDR, ...) are excluded by their missing exponent.
NON_PAYABLE_CODES = frozenset(
    {"BOV", "CHE", "CHW", "CLF", "COU", "MXV", "USN", "UYI", "UYW", "XAD", "XSU", "XUA"}
)

# Upper bound for any amount, in major units: beyond this a request is a mistake, not a payout.
MAX_AMOUNT = Decimal("1000000000000")  # 10^12


class UnknownCurrency(ValueError):
    pass


@cache
def payable_currencies() -> dict[str, int]:
    """Alphabetic code -> number of minor-unit digits, for every currency we can pay out in."""
    return {
        currency.code: currency.exponent
        for currency in Currency
        if currency.exponent is not None and currency.code not in NON_PAYABLE_CODES
    }


def normalize_currency(code: str) -> str:
    """'rub' -> 'RUB'; raises UnknownCurrency for anything that is not a payable code."""
    normalized = code.strip().upper() if code.isascii() else code
    if normalized not in payable_currencies():
        raise UnknownCurrency(code)
    return normalized


def exponent(currency: str) -> int:
    return payable_currencies()[currency]


def quantum(currency: str) -> Decimal:
    return Decimal(1).scaleb(-exponent(currency))


def fits_minor_unit(amount: Decimal, currency: str) -> bool:
    """True when the amount is written with at most the currency's minor-unit digits.

    "1.50" and "1.5" RUB fit; "1.500" RUB and "100.0" JPY do not: a client that sends more
    digits than the currency has is confused about the currency, so we ask rather than guess.
    """
    digits = amount.as_tuple().exponent
    return isinstance(digits, int) and -digits <= exponent(currency)


def format_amount(amount: Decimal, currency: str) -> str:
    """The amount with exactly the currency's minor-unit digits: '1500.00', '1500', '1.500'."""
    if currency not in payable_currencies():
        # Stored under a code a later release of the data package dropped (ZWL, CUC...): still
        # readable, with the digits it has rather than a crash.
        return f"{amount.normalize():f}"
    return f"{amount.quantize(quantum(currency)):f}"
