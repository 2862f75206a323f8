"""The sandbox provider's documented deterministic test destinations."""

import re
import unittest
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase

from payouts.providers import sandbox
from payouts.providers.sandbox import DECLINE_REASONS, TEST_DESTINATION

README = Path(settings.BASE_DIR).parent / "README.md"
# The docstring's list: one destination at the start of each of its lines.
DOCUMENTED = re.compile(r"^    (sandbox:\S+)", re.MULTILINE)


class TestDestinationPatternTests(SimpleTestCase):
    def test_success_destination_is_recognised(self) -> None:
        match = TEST_DESTINATION.fullmatch("sandbox:success")
        assert match is not None
        self.assertEqual(match["success"], "success")

    def test_decline_destination_carries_its_code(self) -> None:
        for code in ("insufficient_funds", "account_closed", "x", "a" * 64, "code_9"):
            with self.subTest(code=code):
                match = TEST_DESTINATION.fullmatch(f"sandbox:decline:{code}")
                assert match is not None
                self.assertEqual(match["decline"], code)

    def test_transient_destination_carries_its_count(self) -> None:
        for count in ("0", "1", "3", "999"):
            with self.subTest(count=count):
                match = TEST_DESTINATION.fullmatch(f"sandbox:transient:{count}")
                assert match is not None
                self.assertEqual(match["transient"], count)

    def test_hang_destination_is_recognised(self) -> None:
        match = TEST_DESTINATION.fullmatch("sandbox:hang")
        assert match is not None
        self.assertEqual(match["hang"], "hang")

    def test_lost_answer_destination_is_recognised(self) -> None:
        match = TEST_DESTINATION.fullmatch("sandbox:lost")
        assert match is not None
        self.assertEqual(match["lost"], "lost")

    def test_the_new_destinations_are_recognised(self) -> None:
        for destination, group, value in (
            ("sandbox:unreachable", "unreachable", "unreachable"),
            ("sandbox:lost-lookup-down:3", "lookup_down", "3"),
            ("sandbox:cancel-refused", "cancel_refused", "cancel-refused"),
            ("sandbox:slow:1500", "slow", "1500"),
            ("sandbox:error", "error", "error"),
        ):
            with self.subTest(destination=destination):
                match = TEST_DESTINATION.fullmatch(destination)
                assert match is not None
                self.assertEqual(match[group], value)

    @unittest.skipUnless(README.exists(), "README.md is not shipped in the image")
    def test_the_readme_lists_exactly_the_destinations_the_sandbox_documents(self) -> None:
        assert sandbox.__doc__ is not None
        documented = set(DOCUMENTED.findall(sandbox.__doc__))
        table = README.read_text().split("## Sandbox provider and test destinations", 1)[1]
        table = table.split("\n## ", 1)[0]
        rows = {
            row.split("|")[1].strip(" `") for row in table.splitlines() if row.startswith("| `")
        }
        self.assertEqual(rows, documented)
        self.assertGreaterEqual(len(documented), 10)

    def test_other_destinations_are_ordinary_accounts(self) -> None:
        for destination in (
            "40817810099910004312",
            "sandbox:",
            "sandbox:succes",
            "sandbox:success ",
            " sandbox:success",
            "SANDBOX:SUCCESS",
            "sandbox:decline:",
            "sandbox:decline:Insufficient",
            "sandbox:decline:" + "a" * 65,
            "sandbox:decline:a-b",
            "sandbox:transient:",
            "sandbox:transient:1000",
            "sandbox:transient:-1",
            "sandbox:transient:x",
            "sandbox:hang:1",
            "sandbox:slow:",
            "sandbox:slow:1000000",
            "sandbox:lost-lookup-down:",
            "sandbox:error:1",
            "sandbox:success\n",
        ):
            with self.subTest(destination=destination):
                self.assertIsNone(TEST_DESTINATION.fullmatch(destination))

    def test_known_decline_codes_have_human_reasons(self) -> None:
        self.assertIn("insufficient_funds", DECLINE_REASONS)
        for code, reason in DECLINE_REASONS.items():
            with self.subTest(code=code):
                self.assertTrue(reason)
