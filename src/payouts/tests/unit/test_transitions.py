"""The table of allowed status moves: exactly the moves SPEC.md draws, nothing else."""

import itertools

from django.test import SimpleTestCase

from payouts import transitions
from payouts.models import FINAL_STATUSES, PayoutStatus

S = PayoutStatus

ALLOWED_MOVES = {
    (S.NEW, S.PROCESSING),
    (S.PROCESSING, S.PAID),
    (S.PROCESSING, S.FAILED),
    (S.NEW, S.CANCELED),
    (S.PROCESSING, S.CANCELED),
}


class TransitionTableTests(SimpleTestCase):
    def test_allowed_sources_table_matches_the_spec(self) -> None:
        self.assertEqual(
            {target: set(sources) for target, sources in transitions.ALLOWED_SOURCES.items()},
            {
                S.PROCESSING: {S.NEW},
                S.PAID: {S.PROCESSING},
                S.FAILED: {S.PROCESSING},
                S.CANCELED: {S.NEW, S.PROCESSING},
            },
        )

    def test_nothing_moves_back_to_new(self) -> None:
        self.assertNotIn(S.NEW, transitions.ALLOWED_SOURCES)

    def test_every_allowed_move_is_allowed(self) -> None:
        for source, target in sorted(ALLOWED_MOVES):
            with self.subTest(source=source, target=target):
                self.assertTrue(transitions.can_move(source, target))

    def test_every_other_pair_is_forbidden(self) -> None:
        for source, target in itertools.product(S, S):
            if (source, target) in ALLOWED_MOVES:
                continue
            with self.subTest(source=source, target=target):
                self.assertFalse(transitions.can_move(source, target))

    def test_final_statuses_have_no_exits(self) -> None:
        self.assertEqual(FINAL_STATUSES, {S.PAID, S.FAILED, S.CANCELED})
        for source, target in itertools.product(FINAL_STATUSES, S):
            with self.subTest(source=source, target=target):
                self.assertFalse(transitions.can_move(source, target))

    def test_no_status_moves_to_itself(self) -> None:
        for status in S:
            with self.subTest(status=status):
                self.assertFalse(transitions.can_move(status, status))

    def test_can_move_accepts_plain_strings(self) -> None:
        self.assertTrue(transitions.can_move("NEW", "CANCELED"))
        self.assertFalse(transitions.can_move("PAID", "CANCELED"))

    def test_can_move_rejects_an_unknown_target_status(self) -> None:
        with self.assertRaises(ValueError):
            transitions.can_move("NEW", "REFUNDED")
