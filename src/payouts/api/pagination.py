"""Keyset ("cursor") pagination over (created_at, id), newest first, in both directions.

DRF's CursorPagination positions on the first ordering field only and recovers ties with an
offset, which loses rows when walking `previous` through payouts sharing a `created_at` (DRF
issues #7709, #7887). Here a cursor names one row exactly, so a page is "the `limit` rows just
after (or just before) that row" in the total order (created_at DESC, id DESC), which an index
such as payout_client_created (client, -created_at, -id) serves. Any model with a `created_at`
and a UUID `id` pages this way: payouts, and the webhooks' events and deliveries.
"""

import binascii
import uuid
from base64 import b64decode, urlsafe_b64encode
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Literal

from django.db.models import Q
from rest_framework import serializers
from rest_framework.pagination import BasePagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

Direction = Literal["next", "previous"]
# One letter each in the encoded cursor.
_DIRECTION_CODES: dict[Direction, str] = {"next": "n", "previous": "p"}
_DIRECTIONS = {code: direction for direction, code in _DIRECTION_CODES.items()}


@dataclass(frozen=True)
class Cursor:
    """A position (one row's created_at and id) and which side of it the page lies on."""

    direction: Direction
    created_at: datetime
    id: uuid.UUID

    def turned(self, direction: Direction) -> "Cursor":
        """The same position, looking the other way (the link back from an empty page)."""
        return Cursor(direction, self.created_at, self.id)

    def encode(self) -> str:
        text = "|".join(
            (
                _DIRECTION_CODES[self.direction],
                self.created_at.astimezone(timezone.utc).isoformat(),
                str(self.id),
            )
        )
        return urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, encoded: str) -> "Cursor":
        """The cursor we issued as `encoded`; ValueError for anything we could not have issued."""
        try:
            padded = encoded + "=" * (-len(encoded) % 4)
            text = b64decode(padded.encode("ascii"), altchars=b"-_", validate=True).decode("ascii")
            code, created_at_text, id_text = text.split("|")
            created_at = datetime.fromisoformat(created_at_text)
            if created_at.tzinfo is None:
                raise ValueError("naive timestamp")
            cursor = cls(_DIRECTIONS[code], created_at.astimezone(timezone.utc), uuid.UUID(id_text))
        except (ValueError, KeyError, UnicodeError, binascii.Error, OverflowError):
            raise ValueError("not a cursor we issued") from None
        # Only the canonical spelling is ours: this refuses padded, re-cased or otherwise
        # edited cursors, which keeps the format free to change.
        if cursor.encode() != encoded:
            raise ValueError("not a cursor we issued")
        return cursor


# Each condition repeats its created_at bound outside the OR: PostgreSQL then seeks the index
# (client, created_at, id) to the cursor's row. With the OR alone it can only scan from the
# newest (or oldest) row and filter, so a page cost as many rows as lay before it, like OFFSET.


def _after(cursor: Cursor) -> Q:
    """Rows older than the cursor's row in (created_at DESC, id DESC) order."""
    return Q(created_at__lte=cursor.created_at) & (
        Q(created_at__lt=cursor.created_at) | Q(created_at=cursor.created_at, id__lt=cursor.id)
    )


def _before(cursor: Cursor) -> Q:
    """Rows newer than the cursor's row."""
    return Q(created_at__gte=cursor.created_at) & (
        Q(created_at__gt=cursor.created_at) | Q(created_at=cursor.created_at, id__gt=cursor.id)
    )


class NewestFirstCursorPagination(BasePagination):
    """Newest first; opaque cursors stay stable while new rows arrive.

    Answers `{"next", "previous", "results"}` where `next` and `previous` are ready URLs (null
    at either end; `previous` is null on the first page). One query per page.
    """

    page_size = 50
    max_page_size = 200
    page_size_query_param = "limit"
    cursor_query_param = "cursor"
    next_cursor: Cursor | None = None
    previous_cursor: Cursor | None = None

    def paginate_queryset(
        self,
        queryset: Any,  # a QuerySet of rows with created_at and id; the base allows sequences
        request: Request,
        view: Any = None,
    ) -> list[Any]:
        self.request = request
        limit = self._limit(request)
        cursor = self._cursor(request)
        if cursor is not None and cursor.direction == "previous":
            newer = queryset.filter(_before(cursor)).order_by("created_at", "id")
            page = list(newer[: limit + 1])
            has_more, page = len(page) > limit, page[:limit][::-1]
            self.previous_cursor = self._edge("previous", page[0]) if has_more else None
            # Rows after this page exist: the cursor's own row, on the page we came from.
            self.next_cursor = self._edge("next", page[-1]) if page else cursor.turned("next")
            return page
        older = queryset.order_by("-created_at", "-id")
        if cursor is not None:
            older = older.filter(_after(cursor))
        page = list(older[: limit + 1])
        has_more, page = len(page) > limit, page[:limit]
        self.next_cursor = self._edge("next", page[-1]) if has_more else None
        if cursor is None:
            self.previous_cursor = None
        else:
            self.previous_cursor = (
                self._edge("previous", page[0]) if page else cursor.turned("previous")
            )
        return page

    def get_paginated_response(self, data: Any) -> Response:
        return Response(
            {
                "next": self._url(self.next_cursor),
                "previous": self._url(self.previous_cursor),
                "results": data,
            }
        )

    def get_paginated_response_schema(self, schema: dict[str, Any]) -> dict[str, Any]:
        link = {"type": "string", "nullable": True, "format": "uri"}
        return {
            "type": "object",
            "required": ["next", "previous", "results"],
            "properties": {
                "next": {**link, "description": "The next (older) page; null on the last."},
                "previous": {**link, "description": "The newer page; null on the first."},
                "results": schema,
            },
        }

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        return []  # `limit` and `cursor` are documented with the other query parameters

    @staticmethod
    def _edge(direction: Direction, row: Any) -> Cursor:
        return Cursor(direction, row.created_at, row.pk)

    def _limit(self, request: Request) -> int:
        # The view's query serializer has already validated the range.
        value = request.query_params.get(self.page_size_query_param)
        return min(int(value), self.max_page_size) if value else self.page_size

    def _cursor(self, request: Request) -> Cursor | None:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            return Cursor.decode(encoded)
        except ValueError:
            raise serializers.ValidationError(
                {"cursor": [serializers.ErrorDetail("Invalid cursor.", code="invalid_cursor")]}
            ) from None

    def _url(self, cursor: Cursor | None) -> str | None:
        if cursor is None:
            return None
        return replace_query_param(
            self.request.build_absolute_uri(), self.cursor_query_param, cursor.encode()
        )
