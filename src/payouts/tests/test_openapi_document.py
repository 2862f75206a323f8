import tempfile
import unittest
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.test import SimpleTestCase

COMMITTED_SCHEMA = settings.REPO_DIR / "docs" / "openapi.yaml"


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
