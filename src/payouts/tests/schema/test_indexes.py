"""The hottest insert tables carry no B-tree that another one already covers."""

from django.db import connection
from django.test import TestCase

from payouts.models import PayoutEvent, PayoutRequest


def _indexes(table: str) -> dict[str, tuple[list[str], bool]]:
    """name -> (columns, unique) for every index on the table, as the database has them."""
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, table)
    return {
        name: (list(info["columns"]), bool(info["unique"]))
        for name, info in constraints.items()
        if info["index"] or info["unique"] or info["primary_key"]
    }


class RedundantIndexTests(TestCase):
    def assert_no_covered_index(self, table: str) -> None:
        indexes = _indexes(table)
        for name, (columns, unique) in indexes.items():
            if unique:
                continue  # a unique index enforces something even when another covers its columns
            covering = [
                other
                for other, (other_columns, _) in indexes.items()
                if other != name and other_columns[: len(columns)] == columns
            ]
            self.assertEqual(
                covering,
                [],
                f"{table}: index {name} on {columns} is a prefix of {covering}: every insert "
                "pays for a B-tree that the other already serves",
            )

    def test_payout_table_has_no_index_covered_by_a_composite(self) -> None:
        self.assert_no_covered_index(PayoutRequest._meta.db_table)

    def test_event_table_has_no_index_covered_by_a_composite(self) -> None:
        self.assert_no_covered_index(PayoutEvent._meta.db_table)
