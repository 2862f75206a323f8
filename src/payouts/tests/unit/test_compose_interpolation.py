"""scripts/compose_smoke.py's Compose resolution: interpolation as the compose-spec defines it."""

import importlib.util
import sys
import unittest
from pathlib import Path
from types import ModuleType

from django.conf import settings
from django.test import SimpleTestCase

SCRIPT = Path(settings.REPO_DIR) / "scripts" / "compose_smoke.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("compose_smoke", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@unittest.skipUnless(SCRIPT.exists(), "scripts/ is not in the Docker image: run it from a checkout")
class ComposeInterpolationTests(SimpleTestCase):
    def setUp(self) -> None:
        self.smoke = load_script()
        self.env = {"SET": "value", "EMPTY": ""}

    def resolve(self, text: str) -> str:
        return str(self.smoke.interpolate(text, self.env))

    def test_defaults_tell_unset_from_empty_as_compose_does(self) -> None:
        cases = {
            "${SET:-d}": "value",
            "${EMPTY:-d}": "d",
            "${UNSET:-d}": "d",
            "${SET-d}": "value",
            "${EMPTY-d}": "",
            "${UNSET-d}": "d",
            "${SET:+alt}": "alt",
            "${EMPTY:+alt}": "",
            "${EMPTY+alt}": "alt",
            "${UNSET+alt}": "",
            "$SET/${SET}": "value/value",
            "${UNSET}": "",
            "${UNSET:-${SET}-x}": "value-x",
            "${UNSET:-}": "",
        }
        for text, expected in cases.items():
            with self.subTest(text=text):
                self.assertEqual(self.resolve(text), expected)

    def test_double_dollar_is_a_literal_dollar(self) -> None:
        self.assertEqual(self.resolve("celery@$$HOSTNAME $${X:-y}"), "celery@$HOSTNAME ${X:-y}")

    def test_required_variables_stop_the_resolution(self) -> None:
        for text in ("${UNSET:?set it}", "${EMPTY:?set it}", "${UNSET?set it}"):
            with self.subTest(text=text), self.assertRaisesRegex(Exception, "set it"):
                self.resolve(text)
        self.assertEqual(self.resolve("${EMPTY?set it}"), "")

    def test_the_compose_file_resolves_with_an_empty_environment(self) -> None:
        compose = self.smoke.resolve_compose(Path(settings.REPO_DIR) / "docker-compose.yml", {})
        web = compose["services"]["web"]

        self.assertNotIn("WEB_CONCURRENCY", web["environment"])  # gunicorn refuses an empty one
        self.assertEqual(web["environment"]["DJANGO_ENV"], "production")
        self.assertEqual(web["environment"]["DJANGO_SECRET_KEY"], "")
        self.assertEqual(web["ports"], ["127.0.0.1:8000:8000"])
        for name in ("migrate", "web", "worker", "beat"):  # the merge key gave each the volume
            self.assertIn("app-secrets:/app/secrets", compose["services"][name]["volumes"])
