"""GET /payout-requests/{id}/ and tenancy: another client's payout is always 404, never 403."""

import uuid

from payouts.models import PayoutStatus

from .helpers import LIST_URL, ApiTestCase, cancel_url, detail_url, events_url


class RetrievePayoutTests(ApiTestCase):
    def test_get_returns_the_payout(self) -> None:
        created = self.create().json()
        response = self.client.get(detail_url(created["id"]))
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.json(), created)

    def test_get_shows_failure_details_of_a_failed_payout(self) -> None:
        payout = self.created_payout()
        self.move(
            payout,
            PayoutStatus.PROCESSING,
            PayoutStatus.FAILED,
            failure_code="insufficient_funds",
            failure_reason="The payout balance is too low.",
        )
        body = self.client.get(detail_url(payout.pk)).json()
        self.assertEqual(body["status"], "FAILED")
        self.assertEqual(body["failure_code"], "insufficient_funds")
        self.assertEqual(body["failure_reason"], "The payout balance is too low.")
        self.assertRegex(body["processed_at"], r"Z$")

    def test_unknown_uuid_is_404(self) -> None:
        self.assertProblem(self.client.get(detail_url(uuid.uuid4())), 404, "not_found")

    def test_non_uuid_id_is_404(self) -> None:
        for bad in (
            "123",
            "not-a-uuid",
            "00000000-0000-0000-0000-00000000000g",
            "%00",
            "a" * 300,
            "'; DROP TABLE",
        ):
            with self.subTest(id=bad):
                response = self.client.get(f"{LIST_URL}{bad}/")
                self.assertProblem(response, 404, "not_found")

    def test_id_with_a_dot_is_404(self) -> None:
        self.assertProblem(self.client.get(f"{LIST_URL}1.2/"), 404, "not_found")

    def test_unknown_api_path_is_404_problem(self) -> None:
        self.assertProblem(self.client.get("/api/v1/nothing-here/"), 404, "not_found")


class ScopingTests(ApiTestCase):
    def test_another_clients_payout_is_404_on_get_cancel_and_events(self) -> None:
        theirs = self.created_payout(self.other)
        self.assertProblem(self.client.get(detail_url(theirs.pk)), 404, "not_found")
        self.assertProblem(self.client.post(cancel_url(theirs.pk)), 404, "not_found")
        self.assertProblem(self.client.get(events_url(theirs.pk)), 404, "not_found")
        theirs.refresh_from_db()
        self.assertEqual(theirs.status, PayoutStatus.NEW)
        self.assertEqual(theirs.events.count(), 1)

    def test_not_yours_and_unknown_look_the_same(self) -> None:
        theirs = self.created_payout(self.other)
        not_yours = self.client.get(detail_url(theirs.pk))
        unknown = self.client.get(detail_url(uuid.uuid4()))
        self.assertEqual(not_yours.status_code, unknown.status_code)
        self.assertEqual(not_yours.json(), unknown.json())

    def test_list_never_shows_another_clients_payouts(self) -> None:
        mine = self.created_payout(client_reference="mine")
        self.created_payout(self.other, client_reference="theirs")
        self.created_payout(self.other, client_reference="mine", amount="5")
        for query in (
            "",
            "?client_reference=theirs",
            "?client_reference=mine",
            "?status=NEW",
            "?currency=RUB",
        ):
            with self.subTest(query=query):
                results = self.client.get(f"{LIST_URL}{query}").json()["results"]
                self.assertTrue(all(item["id"] == str(mine.pk) for item in results), results)
        self.assertEqual(len(self.client.get(LIST_URL).json()["results"]), 1)
        self.assertEqual(len(self.other.get(LIST_URL).json()["results"]), 2)

    def test_the_owner_still_sees_its_payout(self) -> None:
        theirs = self.created_payout(self.other)
        self.assertEqual(self.other.get(detail_url(theirs.pk)).status_code, 200)
