""".env.example lists every setting the service reads (README: "`.env.example` lists them all")."""

import re
import unittest
from pathlib import Path

from django.conf import settings
from django.test import SimpleTestCase

ENV_EXAMPLE = Path(settings.REPO_DIR) / ".env.example"
SRC_DIR = Path(settings.BASE_DIR)
# A read of one environment variable by name: the config.env helpers or os.environ itself.
ENV_READ = re.compile(
    r"""(?:env_(?:str|int|bool|float|list|int_list)\(\s*|os\.environ\.get\(|os\.environ\[|os\.getenv\()"""
    r"""["']([A-Z][A-Z0-9_]*)["']"""
)


def variables_read() -> set[str]:
    names: set[str] = set()
    for path in SRC_DIR.rglob("*.py"):
        if "tests" not in path.relative_to(SRC_DIR).parts:
            names.update(ENV_READ.findall(path.read_text("utf-8")))
    return names


@unittest.skipUnless(
    ENV_EXAMPLE.exists(), ".env.example is not in the Docker image: run it from a checkout"
)
class EnvExampleTests(SimpleTestCase):
    def test_every_variable_the_code_reads_is_in_env_example(self) -> None:
        documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), re.M))
        read = variables_read()
        self.assertIn("DJANGO_SECRET_KEY", read)  # the scan finds what it should
        self.assertEqual(sorted(read - documented), [])
