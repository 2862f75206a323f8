import tempfile
import unittest
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.test import SimpleTestCase
from drf_spectacular.generators import SchemaGenerator

from payouts import money
from payouts.api.errors import ANSWERS, PROBLEM_CONTENT_TYPE, answer_problem

COMMITTED_SCHEMA = settings.REPO_DIR / "docs" / "openapi.yaml"
STANDARD_MEMBERS = {"type", "title", "status", "code", "message"}


@unittest.skipUnless(
    COMMITTED_SCHEMA.exists(),
    "docs/openapi.yaml is not in the Docker image (it holds only src/): run it from a checkout",
)
class OpenApiDocumentTests(SimpleTestCase):
    def test_schema_validates_without_warnings_and_matches_the_committed_copy(self):
        with tempfile.TemporaryDirectory() as tmp:
            generated = Path(tmp) / "openapi.yaml"
            # --fail-on-warn turns any schema warning into an error (SystemExit).
            call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(generated))
            self.assertEqual(
                generated.read_text(),
                COMMITTED_SCHEMA.read_text(),
                "docs/openapi.yaml is stale: run `make openapi` and commit it.",
            )


class OpenApiContentTests(SimpleTestCase):
    """What the document promises matches what the API does."""

    schema: dict[str, Any]

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.schema = SchemaGenerator().get_schema(request=None, public=True)

    def test_currency_is_an_enum_of_the_payable_codes_in_body_and_filter(self) -> None:
        codes = sorted(money.payable_currencies())
        self.assertEqual(self.schema["components"]["schemas"]["CurrencyEnum"]["enum"], codes)
        body = self.schema["components"]["schemas"]["PayoutCreateRequest"]["properties"]
        self.assertEqual(body["currency"]["allOf"], [{"$ref": "#/components/schemas/CurrencyEnum"}])
        parameters = self.schema["paths"]["/api/v1/payout-requests/"]["get"]["parameters"]
        currency = next(p for p in parameters if p["name"] == "currency")
        self.assertEqual(currency["schema"]["enum"], codes)
        self.assertIn("any case", currency["description"])

    def test_every_error_example_is_the_answer_the_error_table_gives(self) -> None:
        seen = set()
        for path, operations in self.schema["paths"].items():
            for method, operation in operations.items():
                for status, response in operation["responses"].items():
                    content = response.get("content", {}).get(PROBLEM_CONTENT_TYPE)
                    if content is None:
                        continue
                    for example in content["examples"].values():
                        body = example["value"]
                        extra = {k: v for k, v in body.items() if k not in STANDARD_MEMBERS}
                        with self.subTest(path=path, method=method, code=body["code"]):
                            self.assertEqual(int(status), ANSWERS[body["code"]].status)
                            self.assertEqual(
                                body, answer_problem(body["code"], body["message"], **extra)
                            )
                        seen.add(body["code"])
        self.assertLessEqual({"validation_error", "not_found", "request_too_large"}, seen)
