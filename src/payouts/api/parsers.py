"""The request body parser: JSON only, exact decimals, and no 500 for hostile documents."""

import json
from decimal import Decimal
from typing import IO, Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# A payout with all its metadata fits in ~12 KB; refuse to buffer anything much larger.
MAX_BODY_BYTES = 64 * 1024


# Plain exceptions: api/errors.py decides their HTTP answers (411 and 413).
class LengthRequired(Exception):
    """A chunked body: Django reads bodies by Content-Length only and would see it empty."""


class RequestTooLarge(Exception):
    """The body is larger than MAX_BODY_BYTES."""


class StrictJSONParser(JSONParser):
    """JSON with numbers parsed as Decimal (never float) and hostile input answered with 400.

    The stock parser lets RecursionError from deeply nested documents escape as a 500 and accepts
    lone UTF-16 surrogates that the database driver then cannot encode; NaN and Infinity are not
    JSON at all.
    """

    def parse(
        self, stream: IO[Any], media_type: str | None = None, parser_context: Any = None
    ) -> Any:
        body = stream.read(MAX_BODY_BYTES + 1)
        if len(body) > MAX_BODY_BYTES:
            raise RequestTooLarge()
        try:
            data = json.loads(
                body,
                parse_float=Decimal,
                parse_constant=_reject_constant,
                object_pairs_hook=_reject_duplicate_keys,
            )
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        except UnicodeDecodeError:
            raise ParseError("JSON parse error - the document is not valid UTF-8 text.") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        try:
            # Lone surrogates ("\ud800") are valid JSON escapes but not encodable text.
            json.dumps(data, ensure_ascii=False, default=str).encode("utf-8")
        except UnicodeEncodeError:
            raise ParseError(
                "JSON parse error - a string contains an unpaired UTF-16 surrogate escape."
            ) from None
        except RecursionError:
            raise ParseError("JSON parse error - the document is nested too deeply.") from None
        return data


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"amount": "1", "amount": "1000"}: which one did the client mean? Refuse to guess.
    data = dict(pairs)
    if len(data) != len(pairs):
        keys = [key for key, _ in pairs]
        duplicate = next(key for index, key in enumerate(keys) if key in keys[:index])
        raise ValueError(f"duplicate key {duplicate[:40]!r}")
    return data


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a valid JSON value")
