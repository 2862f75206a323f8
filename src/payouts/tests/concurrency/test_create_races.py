"""Concurrent creates with one client_reference, on PostgreSQL, from real threads."""

from decimal import Decimal
from typing import Any

from rest_framework.test import APIClient

from payouts import errors, services
from payouts.models import ApiKey, PayoutEvent, PayoutRequest

from .support import ConcurrencyTestCase, run_concurrently

PAYOUT: dict[str, Any] = {
    "client_reference": "invoice-race",
    "amount": Decimal("100.00"),
    "currency": "RUB",
    "destination": "40817810099910004312",
    "metadata": {"order": "42"},
}


class ConcurrentCreateTests(ConcurrencyTestCase):
    def test_fifty_concurrent_identical_creates_store_one_payout_and_queue_it_once(self) -> None:
        results = run_concurrently(
            lambda _: services.payout_create(client=self.merchant, **PAYOUT), 50
        )

        errors = [r for r in results if isinstance(r, BaseException)]
        self.assertEqual(errors, [])
        created = [r for r in results if isinstance(r, services.PayoutCreated)]
        self.assertEqual(sum(r.created for r in created), 1)
        self.assertEqual({r.payout.pk for r in created}, {created[0].payout.pk})
        payout = PayoutRequest.objects.get()
        self.assertEqual(payout.status, "NEW")
        self.assertEqual(payout.amount, Decimal("100.00"))
        self.assertEqual(
            list(PayoutEvent.objects.values_list("payout_id", "to_status", "actor")),
            [(payout.pk, "NEW", "api")],
        )
        self.assertEqual(self.enqueued.calls, [str(payout.pk)])

    def test_concurrent_creates_differing_in_amount_create_one_and_conflict_the_rest(
        self,
    ) -> None:
        def create(index: int) -> services.PayoutCreated:
            return services.payout_create(
                client=self.merchant, **{**PAYOUT, "amount": Decimal(index + 1)}
            )

        results = run_concurrently(create, 20)

        created = [r for r in results if isinstance(r, services.PayoutCreated)]
        conflicts = [r for r in results if isinstance(r, errors.ClientReferenceConflict)]
        self.assertEqual(len(created), 1, results)
        self.assertTrue(created[0].created)
        self.assertEqual(len(conflicts), 19, results)
        payout = PayoutRequest.objects.get()
        # The stored amount is the winner's, and every loser was told which field differs.
        winner_index = results.index(created[0])
        self.assertEqual(payout.amount, Decimal(winner_index + 1))
        self.assertTrue(
            all(c.fields == ["amount"] and c.existing.pk == payout.pk for c in conflicts)
        )
        self.assertEqual(PayoutEvent.objects.count(), 1)
        self.assertEqual(self.enqueued.calls, [str(payout.pk)])

    def test_concurrent_identical_api_creates_answer_one_201_and_200_to_the_rest(self) -> None:
        _, key = ApiKey.objects.create_key(name="race", client=self.merchant)
        body = {**PAYOUT, "amount": "100"}  # normalized: the same amount as "100.00"

        def post(_: int) -> tuple[int, str]:
            api = APIClient()
            api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
            response = api.post("/api/v1/payout-requests/", body, format="json")
            return response.status_code, response.json().get("id", response.content)

        results = run_concurrently(post, 30)

        statuses = sorted(status for status, _ in results)  # type: ignore[misc]
        self.assertEqual(statuses, [200] * 29 + [201], results)
        payout = PayoutRequest.objects.get()
        self.assertEqual({payout_id for _, payout_id in results}, {str(payout.pk)})  # type: ignore[misc]
        self.assertEqual(PayoutEvent.objects.count(), 1)
        self.assertEqual(self.enqueued.calls, [str(payout.pk)])
