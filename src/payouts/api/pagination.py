import binascii
from base64 import b64decode
from datetime import timezone
from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework import serializers
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination


class PayoutCursorPagination(CursorPagination):
    """Newest first; opaque cursors stay stable while new payouts arrive."""

    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "limit"
    max_page_size = 200

    def decode_cursor(self, request: Any) -> Cursor | None:
        """DRF's decoding, made strict: a cursor we did not issue is a 400 `invalid_cursor`.

        DRF answers a malformed cursor with 404, silently drops non-base64 characters, and
        passes any position string on to the database, which fails on a non-timestamp.
        """
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            b64decode(encoded.encode("ascii"), validate=True)
            cursor = super().decode_cursor(request)
        except (NotFound, UnicodeError, binascii.Error):
            cursor = None
        if cursor is None or (cursor.position is not None and not _is_datetime(cursor.position)):
            raise serializers.ValidationError(
                {"cursor": [serializers.ErrorDetail("Invalid cursor.", code="invalid_cursor")]}
            )
        return cursor


def _is_datetime(value: object) -> bool:
    """A position DRF could have issued: an ISO timestamp that exists in UTC too."""
    try:
        parsed = parse_datetime(value) if isinstance(value, str) else None
        if parsed is not None and parsed.tzinfo is not None:
            # "0001-01-01T00:00+14:00" parses but has no UTC equivalent: SQLite would overflow.
            parsed.astimezone(timezone.utc)
    except (ValueError, OverflowError):
        return False
    return parsed is not None
