"""Authorization: Bearer <api key>; every failure is a 401 problem document."""

from rest_framework.test import APIClient

from payouts.models import ApiKey, PayoutRequest

from .helpers import LIST_URL, ApiTestCase, detail_url, payout_body


class AuthenticationTests(ApiTestCase):
    def assertUnauthorized(self, client: APIClient) -> None:
        for method, url, data in (("get", LIST_URL, None), ("post", LIST_URL, payout_body())):
            with self.subTest(method=method):
                response = getattr(client, method)(url, data, format="json")
                body = self.assertProblem(response, 401, response.json()["code"])
                self.assertIn(body["code"], {"not_authenticated", "authentication_failed"})
                self.assertTrue(response["WWW-Authenticate"].startswith("Bearer"))
        self.assertEqual(PayoutRequest.objects.count(), 0)

    def test_missing_key_is_401_not_authenticated(self) -> None:
        response = APIClient().get(LIST_URL)
        self.assertProblem(response, 401, "not_authenticated")
        self.assertUnauthorized(APIClient())

    def test_wrong_scheme_is_401(self) -> None:
        for header in (f"Token {self.key}", f"Basic {self.key}", self.key, f"Bearer{self.key}"):
            with self.subTest(header=header[:12]):
                client = APIClient()
                client.credentials(HTTP_AUTHORIZATION=header)
                self.assertProblem(client.get(LIST_URL), 401, "authentication_failed")

    def test_scheme_is_case_insensitive(self) -> None:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"bearer {self.key}")
        self.assertEqual(client.get(LIST_URL).status_code, 200)

    def test_malformed_key_is_401(self) -> None:
        for key in (
            "",
            "abc",
            "x" * 41,
            self.key + "x",
            self.key[:-1],
            self.key.replace(".", ""),
            "ключ." + "a" * 32,
        ):
            with self.subTest(key=key[:20]):
                self.assertUnauthorized(self.client_for(key))

    def test_unknown_key_is_401(self) -> None:
        prefix = self.key.partition(".")[0]
        for key in ("abcdefgh." + "a" * 32, f"{prefix}.{'a' * 32}"):
            with self.subTest(key=key[:12]):
                self.assertProblem(self.client_for(key).get(LIST_URL), 401, "authentication_failed")

    def test_revoked_key_is_401(self) -> None:
        api_key = ApiKey.objects.get(client=self.merchant)
        api_key.revoked = True
        api_key.save()
        self.assertUnauthorized(self.client)

    def test_inactive_client_is_401_whatever_its_keys(self) -> None:
        self.merchant.is_active = False
        self.merchant.save()
        self.assertUnauthorized(self.client)

    def test_another_valid_key_of_the_same_client_works(self) -> None:
        _, second_key = ApiKey.objects.create_key(name="second", client=self.merchant)
        response = self.create(self.client_for(second_key))
        self.assertEqual(response.status_code, 201)
        self.assertEqual(PayoutRequest.objects.get().client, self.merchant)

    def test_failed_auth_never_reaches_other_endpoints(self) -> None:
        payout = self.created_payout()
        anonymous = APIClient()
        self.assertProblem(anonymous.get(detail_url(payout.pk)), 401, "not_authenticated")
        self.assertProblem(
            anonymous.post(f"{detail_url(payout.pk)}cancel/"), 401, "not_authenticated"
        )
        self.assertProblem(
            anonymous.get(f"{detail_url(payout.pk)}events/"), 401, "not_authenticated"
        )
        payout.refresh_from_db()
        self.assertEqual(payout.status, "NEW")
