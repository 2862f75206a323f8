"""The table of allowed status moves (exactly the moves SPEC.md draws) and what a move may set."""

import itertools
import uuid
from typing import Any

from django.test import SimpleTestCase
from django.utils import timezone

from payouts import transitions
from payouts.models import FINAL_STATUSES, EventActor, PayoutStatus

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


class TransitionFieldsTests(SimpleTestCase):
    """A move sets the status plus named fields only, so the row cannot disagree with its history.

    Every refusal happens before any query (a SimpleTestCase forbids database access).
    """

    def test_a_move_cannot_overwrite_the_status_through_its_fields(self) -> None:
        with self.assertRaises(TypeError):
            transitions.transition(  # type: ignore[call-arg]
                uuid.uuid4(), to=S.PROCESSING, actor=EventActor.WORKER, status=S.PAID
            )

    def test_a_move_rejects_fields_it_does_not_name(self) -> None:
        for field in ("processed_at", "amount", "updated_at", "client_id", "lease"):
            fields: dict[str, Any] = {field: "x"}
            with self.subTest(field=field), self.assertRaises(TypeError):
                transitions.transition(uuid.uuid4(), to=S.CANCELED, actor=EventActor.API, **fields)

    def test_fields_belong_to_their_target_status(self) -> None:
        wrong: list[tuple[PayoutStatus, dict[str, Any]]] = [
            (S.PAID, {"failure_code": "x"}),
            (S.CANCELED, {"failure_reason": "x"}),
            (S.FAILED, {"provider_reference": "x"}),
            (S.PAID, {"lease_owner": "task"}),
            (S.CANCELED, {"lease_expires_at": timezone.now()}),
            (S.FAILED, {"count_attempt": True}),
        ]
        for target, fields in wrong:
            with self.subTest(target=target, fields=fields), self.assertRaises(ValueError):
                transitions.transition(uuid.uuid4(), to=target, actor=EventActor.WORKER, **fields)

    def test_nothing_moves_to_new_even_by_transition(self) -> None:
        with self.assertRaises(ValueError):
            transitions.transition(uuid.uuid4(), to=S.NEW, actor=EventActor.API)
