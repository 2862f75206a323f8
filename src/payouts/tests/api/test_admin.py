"""The back office: staff see every payout, and the cancel action goes through the service."""

import json
import re
from datetime import timedelta

from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import User
from django.test import TestCase
from django.utils import timezone
from rest_framework.test import APIClient

from payouts import transitions
from payouts.models import (
    ApiClient,
    ApiKey,
    EventActor,
    PayoutEvent,
    PayoutRequest,
    PayoutStatus,
    ProviderCall,
    ProviderCallKind,
    ProviderCallOutcome,
    SandboxLedgerEntry,
    SandboxOutcome,
)

CHANGELIST = "/admin/payouts/payoutrequest/"


class AdminTests(TestCase):
    staff: User
    merchant: ApiClient
    new: PayoutRequest
    paid: PayoutRequest

    @classmethod
    def setUpTestData(cls) -> None:
        cls.staff = User.objects.create_superuser("ops", "ops@example.com", "s3cret-pass!")
        cls.merchant = ApiClient.objects.create(name="merchant-a")
        cls.new = cls.payout("new-1")
        cls.paid = cls.payout("paid-1")
        for target in (PayoutStatus.PROCESSING, PayoutStatus.PAID):
            transitions.transition(cls.paid.pk, to=target, actor=EventActor.WORKER)

    @classmethod
    def payout(cls, reference: str) -> PayoutRequest:
        return PayoutRequest.objects.create(
            client=cls.merchant,
            client_reference=reference,
            amount="10.50",
            currency="KWD",
            destination="sandbox:success",
            # Unfinished payouts always carry a lease (a check constraint says so).
            lease_expires_at=timezone.now() + timedelta(minutes=3),
        )

    def setUp(self) -> None:
        self.client.force_login(self.staff)

    def test_changelist_shows_every_payout_with_formatted_amounts(self) -> None:
        response = self.client.get(CHANGELIST)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "new-1")
        self.assertContains(response, "paid-1")
        self.assertContains(response, "10.500")  # KWD has three minor-unit digits

    def test_changelist_filters_and_search_work(self) -> None:
        response = self.client.get(CHANGELIST, {"status__exact": "PAID", "q": "paid"})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "paid-1")
        self.assertNotContains(response, "new-1")

    def test_change_page_is_read_only_and_shows_the_history(self) -> None:
        response = self.client.get(f"{CHANGELIST}{self.paid.pk}/change/")
        self.assertEqual(response.status_code, 200)
        self.assertNotContains(response, 'name="amount"')
        self.assertNotContains(response, 'name="status"')
        self.assertContains(response, "PROCESSING")  # the history inline

    def test_the_change_form_cannot_save_over_a_payout(self) -> None:
        # A save would write every column back, status included.
        response = self.client.post(f"{CHANGELIST}{self.new.pk}/change/", {"attempts": "7"})
        self.assertEqual(response.status_code, 403)
        self.new.refresh_from_db()
        self.assertEqual((self.new.status, self.new.attempts), (PayoutStatus.NEW, 0))

    def test_payouts_cannot_be_added_or_deleted_by_hand(self) -> None:
        self.assertEqual(self.client.get(f"{CHANGELIST}add/").status_code, 403)
        self.assertEqual(self.client.get(f"{CHANGELIST}{self.new.pk}/delete/").status_code, 403)

    def test_cancel_action_cancels_what_it_can_and_reports_the_rest(self) -> None:
        response = self.client.post(
            CHANGELIST,
            {"action": "cancel_payouts", "_selected_action": [self.new.pk, self.paid.pk]},
            follow=True,
        )
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "Canceled 1 payout(s).")
        self.assertContains(response, "Not canceled, already final: paid-1 (PAID).")
        self.new.refresh_from_db()
        self.paid.refresh_from_db()
        self.assertEqual(self.new.status, PayoutStatus.CANCELED)
        self.assertEqual(self.paid.status, PayoutStatus.PAID)
        event = PayoutEvent.objects.get(payout=self.new, to_status=PayoutStatus.CANCELED)
        self.assertEqual(event.actor, EventActor.ADMIN)

    def test_admin_cancel_keeps_the_staff_username_out_of_the_merchants_history(self) -> None:
        self.client.post(
            CHANGELIST, {"action": "cancel_payouts", "_selected_action": [self.new.pk]}
        )
        event = PayoutEvent.objects.get(payout=self.new, to_status=PayoutStatus.CANCELED)
        self.assertEqual(event.actor, EventActor.ADMIN)
        self.assertNotIn("ops", event.reason)
        # What the merchant reads through the API:
        _, key = ApiKey.objects.create_key(name="k", client=self.merchant)
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        history = api.get(f"/api/v1/payout-requests/{self.new.pk}/events/").json()["results"]
        self.assertEqual(history[-1]["actor"], "admin")
        self.assertNotIn("ops", json.dumps(history))
        # Staff find who did it in the admin log, on the payout's history page.
        entry = LogEntry.objects.get(object_id=str(self.new.pk))
        self.assertEqual(entry.user, self.staff)
        self.assertEqual(entry.action_flag, CHANGE)
        history_page = self.client.get(f"{CHANGELIST}{self.new.pk}/history/")
        self.assertContains(history_page, "Canceled with the admin action.")
        # A payout the action could not cancel has no log entry.
        self.assertFalse(LogEntry.objects.filter(object_id=str(self.paid.pk)).exists())

    def test_amounts_show_the_currencys_digits_on_every_admin_page(self) -> None:
        eur = PayoutRequest.objects.create(
            client=self.merchant,
            client_reference="eur-5",
            amount="5",
            currency="EUR",
            destination="sandbox:success",
            lease_expires_at=timezone.now() + timedelta(minutes=3),
        )
        jpy = PayoutRequest.objects.create(
            client=self.merchant,
            client_reference="jpy-700",
            amount="700",
            currency="JPY",
            destination="sandbox:success",
            lease_expires_at=timezone.now() + timedelta(minutes=3),
        )
        SandboxLedgerEntry.objects.create(
            idempotency_key=str(eur.pk), amount="5", currency="EUR", destination="x"
        )
        ledger = SandboxLedgerEntry.objects.get()
        pages = {
            "payout list": (CHANGELIST, ["5.00", "700", "10.500"]),
            "payout page": (f"{CHANGELIST}{eur.pk}/change/", ["5.00"]),
            "JPY payout page": (f"{CHANGELIST}{jpy.pk}/change/", ["700"]),
            "ledger list": ("/admin/payouts/sandboxledgerentry/", ["5.00"]),
            "ledger page": (f"/admin/payouts/sandboxledgerentry/{ledger.pk}/change/", ["5.00"]),
        }
        for name, (url, shown) in pages.items():
            with self.subTest(page=name):
                response = self.client.get(url)
                self.assertEqual(response.status_code, 200)
                text = response.content.decode()
                cells = text.replace("\n", "").replace(" ", "")
                for amount in shown:
                    self.assertTrue(f">{amount}<" in cells, f"{amount} not shown on the {name}")
                for wrong in ("5.000", "700.000", "10.5000"):
                    self.assertFalse(wrong in text, f"{wrong} shown on the {name}")
        eur.refresh_from_db()
        jpy.refresh_from_db()
        self.assertEqual(str(eur), "eur-5 (5.00 EUR, NEW)")
        self.assertEqual(str(jpy), "jpy-700 (700 JPY, NEW)")

    def test_the_librarys_unused_key_model_is_not_offered(self) -> None:
        self.assertEqual(self.client.get("/admin/rest_framework_api_key/apikey/").status_code, 404)

    def test_api_clients_keys_and_ledger_pages_render(self) -> None:
        ApiKey.objects.create_key(name="k", client=self.merchant)
        SandboxLedgerEntry.objects.create(
            idempotency_key=str(self.paid.pk), amount="10.5", currency="KWD", destination="x"
        )
        for url in (
            "/admin/payouts/apiclient/",
            f"/admin/payouts/apiclient/{self.merchant.pk}/change/",
            "/admin/payouts/apikey/",
            "/admin/payouts/apikey/add/",
            "/admin/payouts/sandboxledgerentry/",
        ):
            with self.subTest(url=url):
                self.assertEqual(self.client.get(url).status_code, 200)

    def test_creating_a_key_in_the_admin_shows_it_once(self) -> None:
        response = self.client.post(
            "/admin/payouts/apikey/add/",
            {
                "name": "from-admin",
                "client": self.merchant.pk,
                "expiry_date_0": "",
                "expiry_date_1": "",
            },
            follow=True,
        )
        self.assertEqual(response.status_code, 200)
        api_key = ApiKey.objects.get(name="from-admin")
        self.assertEqual(api_key.client, self.merchant)
        self.assertContains(response, api_key.prefix)


class AdminProviderCallsAndReviewTests(TestCase):
    """What staff need for unknown outcomes: every provider call, and the payouts to look at."""

    staff: User
    flagged: PayoutRequest
    working: PayoutRequest

    @classmethod
    def setUpTestData(cls) -> None:
        cls.staff = User.objects.create_superuser("ops", "ops@example.com", "s3cret-pass!")
        merchant = ApiClient.objects.create(name="merchant-a")
        now = timezone.now()
        payouts = []
        for reference in ("flagged-1", "working-1", "flagged-then-paid-1"):
            payout = PayoutRequest.objects.create(
                client=merchant,
                client_reference=reference,
                amount="7.25",
                currency="EUR",
                destination="sandbox:lost-lookup-down:3",
                lease_expires_at=now + timedelta(minutes=3),
            )
            transitions.transition(payout.pk, to=PayoutStatus.PROCESSING, actor=EventActor.WORKER)
            payouts.append(payout)
        cls.flagged, cls.working, paid = payouts
        flag = {
            "execute_started_at": now - timedelta(days=2),
            "outcome_unknown_since": now - timedelta(days=2),
            "review_flagged_at": now - timedelta(hours=1),
            "review_reason": "no answer of the provider after the retries: lookup down",
        }
        PayoutRequest.objects.filter(pk__in=[cls.flagged.pk, paid.pk]).update(**flag)
        # Flagged once, then the provider answered: no longer a payout to look at.
        transitions.transition(paid.pk, to=PayoutStatus.PAID, actor=EventActor.RECOVERY)
        ProviderCall.objects.create(
            payout=cls.flagged,
            kind=ProviderCallKind.EXECUTE,
            attempt=1,
            requested_by=EventActor.WORKER,
            started_at=now - timedelta(days=2),
            finished_at=now - timedelta(days=2) + timedelta(seconds=10),
            outcome=ProviderCallOutcome.UNKNOWN,
            code="provider_timeout",
            detail="The provider did not answer in time.",
            latency_ms=10004,
        )
        ProviderCall.objects.create(
            payout=cls.flagged,
            kind=ProviderCallKind.LOOKUP,
            attempt=7,
            requested_by=EventActor.RECOVERY,
            started_at=now - timedelta(minutes=5),
            finished_at=now - timedelta(minutes=5),
            outcome=ProviderCallOutcome.UNKNOWN,
            code="provider_unavailable",
            detail="The provider answered HTTP 503 Service Unavailable.",
            latency_ms=31,
        )
        ProviderCall.objects.create(
            payout=cls.working,
            kind=ProviderCallKind.CANCEL,
            requested_by=EventActor.API,
            started_at=now,
        )

    def setUp(self) -> None:
        self.client.force_login(self.staff)

    def test_the_payout_page_shows_its_provider_calls_and_unknown_outcome_fields(self) -> None:
        response = self.client.get(f"{CHANGELIST}{self.flagged.pk}/change/")
        self.assertEqual(response.status_code, 200)
        text = response.content.decode()
        for shown in (
            "Provider calls",
            "provider_timeout",
            "The provider did not answer in time.",
            "10004",
            "provider_unavailable",
            "The provider answered HTTP 503 Service Unavailable.",
            "Execute started at",
            "Outcome unknown since",
            "Review flagged at",
            "no answer of the provider after the retries: lookup down",
        ):
            self.assertIn(shown, text)
        # The calls are a record: no form field to change one, no way to add or delete one.
        self.assertNotIn('name="provider_calls-0-outcome"', text)
        self.assertNotIn("provider_calls-0-DELETE", text)
        # Its two calls, oldest first, and not the other payout's cancel.
        rows = re.findall(r'<tr[^>]*id="provider_calls-(\d+)"', text)
        self.assertEqual(rows, ["0", "1"])
        self.assertLess(text.index("provider_timeout"), text.index("provider_unavailable"))

    def test_under_review_lists_only_flagged_payouts_still_processing(self) -> None:
        response = self.client.get(CHANGELIST, {"review": "flagged"})
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "flagged-1")
        self.assertNotContains(response, "working-1")
        self.assertNotContains(response, "flagged-then-paid-1")
        everything = self.client.get(CHANGELIST)
        self.assertContains(everything, "under review")  # the filter and the column
        for reference in ("flagged-1", "working-1", "flagged-then-paid-1"):
            self.assertContains(everything, reference)

    def test_the_payout_list_marks_the_payouts_under_review(self) -> None:
        response = self.client.get(CHANGELIST)
        rows = {
            reference: row
            for row in response.content.decode().split("<tr")
            for reference in ("flagged-1", "working-1", "flagged-then-paid-1")
            if f">{reference}<" in row
        }
        self.assertIn('alt="True"', rows["flagged-1"])
        self.assertIn('alt="False"', rows["working-1"])
        self.assertIn('alt="False"', rows["flagged-then-paid-1"])

    def test_provider_calls_list_filters_by_kind_and_outcome_and_finds_a_payouts_calls(
        self,
    ) -> None:
        url = "/admin/payouts/providercall/"
        response = self.client.get(url)
        self.assertEqual(response.status_code, 200)
        self.assertContains(response, "provider_timeout")
        self.assertContains(response, f"/admin/payouts/payoutrequest/{self.flagged.pk}/change/")
        lookups = self.client.get(url, {"kind__exact": "lookup"}).content.decode()
        self.assertIn("provider_unavailable", lookups)
        self.assertNotIn("provider_timeout", lookups)
        unknown = self.client.get(url, {"outcome__exact": "unknown"}).content.decode()
        self.assertIn("provider_timeout", unknown)
        self.assertNotIn(str(self.working.pk), unknown)  # its cancel is still in flight
        found = self.client.get(url, {"q": str(self.working.pk)}).content.decode()
        self.assertIn(str(self.working.pk), found)
        self.assertNotIn(str(self.flagged.pk), found)
        self.assertEqual(self.client.get(url, {"q": "not-a-uuid"}).status_code, 200)

    def test_provider_calls_are_read_only(self) -> None:
        call = ProviderCall.objects.filter(payout=self.flagged).first()
        assert call is not None
        url = f"/admin/payouts/providercall/{call.pk}/change/"
        page = self.client.get(url)
        self.assertEqual(page.status_code, 200)
        self.assertNotContains(page, 'name="outcome"')
        self.assertEqual(self.client.post(url, {"outcome": "executed"}).status_code, 403)
        self.assertEqual(self.client.get("/admin/payouts/providercall/add/").status_code, 403)
        self.assertEqual(self.client.get(f"{url[: -len('change/')]}delete/").status_code, 403)
        call.refresh_from_db()
        self.assertEqual(call.outcome, ProviderCallOutcome.UNKNOWN)

    def test_the_ledger_shows_pending_and_canceled_entries_with_their_calls(self) -> None:
        settles_at = timezone.now() + timedelta(seconds=30)
        pending = SandboxLedgerEntry.objects.create(
            idempotency_key=str(self.working.pk),
            amount="7.25",
            currency="EUR",
            destination="sandbox:slow:30000",
            calls=1,
            lookup_calls=4,
            cancel_calls=0,
            outcome=SandboxOutcome.PENDING,
            settles_at=settles_at,
        )
        SandboxLedgerEntry.objects.create(
            idempotency_key=str(self.flagged.pk),
            amount="0",
            currency="",
            destination="",
            cancel_calls=3,
            outcome=SandboxOutcome.CANCELED,
            canceled_at=timezone.now(),
        )
        listing = self.client.get("/admin/payouts/sandboxledgerentry/")
        self.assertEqual(listing.status_code, 200)
        for shown in ("Lookup calls", "Cancel calls", "Settles at", "Canceled at", "pending"):
            self.assertContains(listing, shown)
        pending_only = self.client.get(
            "/admin/payouts/sandboxledgerentry/", {"outcome__exact": "pending"}
        )
        self.assertContains(pending_only, str(self.working.pk))
        self.assertNotContains(pending_only, str(self.flagged.pk))
        page = self.client.get(f"/admin/payouts/sandboxledgerentry/{pending.pk}/change/")
        self.assertEqual(page.status_code, 200)
        text = page.content.decode()
        for label in ("Lookup calls", "Cancel calls", "Settles at", "Canceled at"):
            self.assertIn(label, text)
        self.assertIn(">4<", text.replace("\n", "").replace(" ", ""))
