from typing import Any

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
        try:
            return super().decode_cursor(request)
        except NotFound:
            # DRF answers a tampered cursor with 404; it is a bad query parameter.
            raise serializers.ValidationError(
                {"cursor": [serializers.ErrorDetail("Invalid cursor.", code="invalid_cursor")]}
            ) from None
