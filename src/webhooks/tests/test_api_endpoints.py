"""/api/v1/webhook-endpoints/: register, read, change, delete, rotate; scoping; validation."""

import json
import uuid
from datetime import timedelta

from django.test import override_settings
from django.utils import timezone
from standardwebhooks.webhooks import Webhook

from webhooks import destinations, services
from webhooks.models import WebhookEndpoint

from .helpers import (
    ENDPOINTS_URL,
    RECEIVER_URL,
    WebhookApiTestCase,
    endpoint_url,
    rotate_url,
)

PUBLIC_URL = "https://93.184.216.34/hooks"
SHOWN_FIELDS = {
    "id",
    "url",
    "events",
    "enabled",
    "disabled_reason",
    "failure_streak",
    "failing_since",
    "previous_secret_expires_at",
    "created_at",
    "updated_at",
}


class CreateTests(WebhookApiTestCase):
    def test_create_answers_201_with_the_secret_and_stores_the_endpoint(self) -> None:
        response = self.register(url=RECEIVER_URL, events=["payout.paid", "payout.failed"])
        self.assertEqual(response.status_code, 201, response.content)
        body = response.json()
        self.assertEqual(set(body), SHOWN_FIELDS | {"secret"})
        self.assertEqual(body["url"], RECEIVER_URL)
        self.assertEqual(body["events"], ["payout.paid", "payout.failed"])
        self.assertIs(body["enabled"], True)
        self.assertTrue(body["secret"].startswith("whsec_"))
        self.assertTrue(response["Location"].endswith(endpoint_url(body["id"])))
        endpoint = WebhookEndpoint.objects.get(pk=body["id"])
        self.assertEqual(endpoint.client, self.merchant)
        self.assertEqual(endpoint.secret, body["secret"])
        self.assertEqual(endpoint.events, ["payout.paid", "payout.failed"])

    def test_the_secret_signs_and_verifies_with_the_standard_webhooks_library(self) -> None:
        secret = self.register().json()["secret"]
        webhook = Webhook(secret)
        now = timezone.now()
        signature = webhook.sign("evt_1", now, '{"a": 1}')
        headers = {
            "webhook-id": "evt_1",
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        self.assertEqual(webhook.verify('{"a": 1}', headers), {"a": 1})
        self.assertEqual(len(services.new_secret()), len(secret))
        self.assertNotEqual(services.new_secret(), services.new_secret())

    def test_events_omitted_star_and_duplicates_are_stored_in_one_form(self) -> None:
        for events, stored in (
            (None, ["*"]),
            (["*"], ["*"]),
            (["*", "*"], ["*"]),
            (["payout.paid", "payout.paid", "payout.created"], ["payout.paid", "payout.created"]),
        ):
            with self.subTest(events=events):
                body = {} if events is None else {"events": events}
                response = self.register(**body)
                self.assertEqual(response.status_code, 201, response.content)
                self.assertEqual(response.json()["events"], stored)
                WebhookEndpoint.objects.filter(pk=response.json()["id"]).delete()

    def test_unknown_event_types_are_a_validation_error(self) -> None:
        for events, code in (
            (["payout.paid", "payout.exploded"], "invalid_choice"),
            (["PAYOUT.PAID"], "invalid_choice"),
            ([], "empty"),
            ("payout.paid", "not_a_list"),
            ([1], "invalid_choice"),
            ([None], "null"),
            (None, "null"),
            (["*", "payout.paid"], "all_alone"),
        ):
            with self.subTest(events=events):
                response = self.register(events=events)
                body = self.assertProblem(response, 400, "validation_error")
                self.assertIn(code, {error["code"] for error in body["errors"]}, body)
        self.assertFalse(WebhookEndpoint.objects.exists())

    def test_url_and_unknown_fields_are_required_and_named(self) -> None:
        response = self.client.post(ENDPOINTS_URL, {"events": ["*"]}, format="json")
        self.assertValidationError(response, ("url", "required"))
        response = self.register(secret="whsec_mine", enabled=False)
        self.assertValidationError(
            response, ("secret", "unknown_field"), ("enabled", "unknown_field")
        )
        response = self.register(url=["http://127.0.0.1/"])
        self.assertValidationError(response, ("url", "invalid"))
        self.assertFalse(WebhookEndpoint.objects.exists())

    @override_settings(PAYOUTS_WEBHOOKS_ALLOW_HTTP=False, PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=False)
    def test_refused_destinations_are_400_with_their_code(self) -> None:
        for url, code in (
            ("http://93.184.216.34/hooks", destinations.NOT_HTTPS),
            ("https://127.0.0.1/hooks", destinations.PRIVATE),
            ("https://localhost/hooks", destinations.PRIVATE),
            ("https://[::ffff:169.254.169.254]/", destinations.PRIVATE),
            ("https://10.0.0.1/hooks", destinations.PRIVATE),
            ("https://no-such-host.invalid/hooks", destinations.UNRESOLVABLE),
            ("not a url", destinations.INVALID),
            ("https://user:pw@93.184.216.34/", destinations.INVALID),
        ):
            with self.subTest(url=url):
                self.assertProblem(self.register(url=url), 400, code)
        self.assertFalse(WebhookEndpoint.objects.exists())
        self.assertEqual(self.register(url=PUBLIC_URL).status_code, 201)

    def test_a_private_url_says_what_it_resolved_to(self) -> None:
        with override_settings(PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=False):
            body = self.assertProblem(
                self.register(url="http://localhost:9000/"), 400, destinations.PRIVATE
            )
        self.assertIn("127.0.0.1", body["message"])
        self.assertIn("loopback", body["message"])

    def test_a_client_has_at_most_the_limit_of_endpoints(self) -> None:
        for _ in range(services.MAX_ENDPOINTS_PER_CLIENT):
            self.assertEqual(self.register().status_code, 201)
        self.assertProblem(self.register(), 409, "webhook_endpoint_limit_reached")
        self.assertEqual(
            WebhookEndpoint.objects.filter(client=self.merchant).count(),
            services.MAX_ENDPOINTS_PER_CLIENT,
        )
        self.assertEqual(self.register(self.other).status_code, 201)  # per client

    def test_without_a_key_nothing_is_created(self) -> None:
        self.client.credentials()
        self.assertProblem(self.register(), 401, "not_authenticated")
        self.assertFalse(WebhookEndpoint.objects.exists())


class ReadTests(WebhookApiTestCase):
    def test_get_and_list_never_show_the_secret(self) -> None:
        endpoint = self.registered()
        one = self.client.get(endpoint_url(endpoint.pk))
        self.assertEqual(one.status_code, 200)
        self.assertEqual(set(one.json()), SHOWN_FIELDS)
        listed = self.client.get(ENDPOINTS_URL)
        self.assertEqual(listed.status_code, 200)
        self.assertEqual(listed.json()["results"], [one.json()])
        self.assertNotIn(endpoint.secret, one.content.decode() + listed.content.decode())

    def test_list_is_newest_first_scoped_and_paginated(self) -> None:
        mine = [self.registered().pk for _ in range(5)]
        self.registered(self.other)
        seen, url = [], f"{ENDPOINTS_URL}?limit=2"
        while url:
            page = self.client.get(url).json()
            self.assertLessEqual(len(page["results"]), 2)
            seen += [uuid.UUID(row["id"]) for row in page["results"]]
            url = page["next"]
        expected = list(
            WebhookEndpoint.objects.filter(pk__in=mine)
            .order_by("-created_at", "-id")
            .values_list("pk", flat=True)
        )
        self.assertEqual(seen, expected)

    def test_list_rejects_bad_query_parameters(self) -> None:
        for query, pair in (
            ("limit=0", ("limit", "min_value")),
            ("limit=201", ("limit", "max_value")),
            ("cursor=bogus", ("cursor", "invalid_cursor")),
            ("url=x", ("url", "unknown_parameter")),
            ("limit=2&limit=3", ("limit", "repeated_parameter")),
        ):
            with self.subTest(query=query):
                self.assertValidationError(self.client.get(f"{ENDPOINTS_URL}?{query}"), pair)

    def test_another_clients_endpoint_and_bad_ids_are_404(self) -> None:
        theirs = self.registered(self.other)
        for url in (
            endpoint_url(theirs.pk),
            endpoint_url(uuid.uuid4()),
            endpoint_url("not-a-uuid"),
            rotate_url(theirs.pk),
            f"{endpoint_url(theirs.pk)}deliveries/",
        ):
            with self.subTest(url=url):
                method = self.client.post if url.endswith("rotate-secret/") else self.client.get
                body = self.assertProblem(method(url), 404, "not_found")
                self.assertEqual(body["message"], "No such webhook endpoint.")
        self.assertProblem(self.client.delete(endpoint_url(theirs.pk)), 404, "not_found")
        self.assertProblem(
            self.client.patch(endpoint_url(theirs.pk), {"enabled": False}, format="json"),
            404,
            "not_found",
        )
        theirs.refresh_from_db()
        self.assertTrue(theirs.enabled)

    def test_put_is_not_allowed(self) -> None:
        endpoint = self.registered()
        response = self.client.put(endpoint_url(endpoint.pk), {"url": RECEIVER_URL}, format="json")
        self.assertProblem(response, 405, "method_not_allowed")


class UpdateTests(WebhookApiTestCase):
    def test_patch_changes_only_what_is_given(self) -> None:
        endpoint = self.registered(events=["payout.paid"])
        response = self.client.patch(
            endpoint_url(endpoint.pk), {"url": "http://127.0.0.1:10/new"}, format="json"
        )
        self.assertEqual(response.status_code, 200, response.content)
        self.assertEqual(response.json()["url"], "http://127.0.0.1:10/new")
        self.assertEqual(response.json()["events"], ["payout.paid"])
        self.assertNotIn("secret", response.json())
        response = self.client.patch(endpoint_url(endpoint.pk), {"events": ["*"]}, format="json")
        self.assertEqual(response.json()["events"], ["*"])
        endpoint.refresh_from_db()
        self.assertEqual(
            (endpoint.url, endpoint.events, endpoint.enabled),
            ("http://127.0.0.1:10/new", ["*"], True),
        )

    def test_disable_then_reenable_clears_the_failure_streak(self) -> None:
        endpoint = self.registered()
        response = self.client.patch(endpoint_url(endpoint.pk), {"enabled": False}, format="json")
        self.assertEqual(response.json()["enabled"], False)
        self.assertEqual(response.json()["disabled_reason"], services.DISABLED_VIA_API)
        # As the delivery worker leaves an endpoint it disabled.
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
            disabled_reason="410 Gone",
            failure_streak=7,
            failing_since=timezone.now() - timedelta(days=5),
        )
        response = self.client.patch(endpoint_url(endpoint.pk), {"enabled": True}, format="json")
        self.assertEqual(response.status_code, 200)
        body = response.json()
        self.assertEqual(
            (
                body["enabled"],
                body["disabled_reason"],
                body["failure_streak"],
                body["failing_since"],
            ),
            (True, "", 0, None),
        )
        endpoint.refresh_from_db()
        self.assertEqual((endpoint.enabled, endpoint.failure_streak), (True, 0))

    def test_enabling_an_enabled_endpoint_keeps_its_streak(self) -> None:
        endpoint = self.registered()
        since = timezone.now() - timedelta(hours=3)
        WebhookEndpoint.objects.filter(pk=endpoint.pk).update(failure_streak=3, failing_since=since)
        self.client.patch(endpoint_url(endpoint.pk), {"enabled": True}, format="json")
        endpoint.refresh_from_db()
        self.assertEqual((endpoint.failure_streak, endpoint.failing_since), (3, since))

    @override_settings(PAYOUTS_WEBHOOKS_ALLOW_PRIVATE=False)
    def test_a_new_url_is_checked_like_a_first_one(self) -> None:
        endpoint = self.registered(url=PUBLIC_URL)
        response = self.client.patch(
            endpoint_url(endpoint.pk), {"url": "https://192.168.0.1/"}, format="json"
        )
        self.assertProblem(response, 400, destinations.PRIVATE)
        endpoint.refresh_from_db()
        self.assertEqual(endpoint.url, PUBLIC_URL)

    def test_bad_patches_are_validation_errors_and_change_nothing(self) -> None:
        endpoint = self.registered()
        for body, pair in (
            ({"enabled": "false"}, ("enabled", "invalid")),
            ({"enabled": 0}, ("enabled", "invalid")),
            ({"enabled": None}, ("enabled", "null")),
            ({"events": ["payout.nope"]}, ("events.0", "invalid_choice")),
            ({"secret": "whsec_x"}, ("secret", "unknown_field")),
            ({"url": 5}, ("url", "invalid")),
        ):
            with self.subTest(body=body):
                response = self.client.patch(endpoint_url(endpoint.pk), body, format="json")
                self.assertValidationError(response, pair)
        before = endpoint.updated_at
        endpoint.refresh_from_db()
        self.assertEqual(
            (endpoint.enabled, endpoint.events, endpoint.updated_at), (True, ["*"], before)
        )


class DeleteTests(WebhookApiTestCase):
    def test_delete_answers_204_and_removes_it(self) -> None:
        endpoint = self.registered()
        response = self.client.delete(endpoint_url(endpoint.pk))
        self.assertEqual(response.status_code, 204)
        self.assertEqual(response.content, b"")
        self.assertFalse(WebhookEndpoint.objects.filter(pk=endpoint.pk).exists())
        self.assertProblem(self.client.get(endpoint_url(endpoint.pk)), 404, "not_found")
        self.assertProblem(self.client.delete(endpoint_url(endpoint.pk)), 404, "not_found")


class RotateTests(WebhookApiTestCase):
    def test_rotation_returns_a_new_secret_and_keeps_the_old_one_for_the_overlap(self) -> None:
        endpoint = self.registered()
        old = endpoint.secret
        before = timezone.now()
        response = self.client.post(rotate_url(endpoint.pk))
        self.assertEqual(response.status_code, 200, response.content)
        body = response.json()
        self.assertEqual(set(body), {"secret", "previous_secret_expires_at"})
        self.assertTrue(body["secret"].startswith("whsec_"))
        self.assertNotEqual(body["secret"], old)
        endpoint.refresh_from_db()
        self.assertEqual((endpoint.secret, endpoint.previous_secret), (body["secret"], old))
        assert endpoint.previous_secret_expires_at is not None
        overlap = endpoint.previous_secret_expires_at - before
        self.assertAlmostEqual(overlap.total_seconds(), 86400, delta=60)
        shown = self.client.get(endpoint_url(endpoint.pk))
        self.assertEqual(
            shown.json()["previous_secret_expires_at"], body["previous_secret_expires_at"]
        )
        self.assertNotIn(body["secret"], shown.content.decode())
        self.assertNotIn(old, shown.content.decode())

    @override_settings(PAYOUTS_WEBHOOK_SECRET_OVERLAP_SECONDS=60)
    def test_rotating_twice_keeps_only_the_last_two_secrets(self) -> None:
        endpoint = self.registered()
        first = self.client.post(rotate_url(endpoint.pk)).json()["secret"]
        second = self.client.post(rotate_url(endpoint.pk)).json()["secret"]
        endpoint.refresh_from_db()
        self.assertEqual((endpoint.secret, endpoint.previous_secret), (second, first))
        assert endpoint.previous_secret_expires_at is not None
        self.assertLess(endpoint.previous_secret_expires_at, timezone.now() + timedelta(seconds=61))

    def test_rotate_takes_no_body_and_get_is_not_allowed(self) -> None:
        endpoint = self.registered()
        self.assertProblem(self.client.get(rotate_url(endpoint.pk)), 405, "method_not_allowed")
        response = self.client.post(rotate_url(endpoint.pk), "{", content_type="application/json")
        # A body is not read: the rotation happens (as cancel ignores a body).
        self.assertIn(response.status_code, (200, 400))
        self.assertNotEqual(json.loads(response.content).get("code"), "internal_error")
