"""How settings, gunicorn.conf.py and the image's entrypoint read the environment.

Settings are read once per process, so each case starts a fresh `manage.py` (or gunicorn) in
the environment under test, built from nothing but what the case names.
"""

import os
import secrets
import stat
import subprocess
import sys
import tempfile
from pathlib import Path
from unittest import mock

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.test import SimpleTestCase

from config.env import env_bool, env_int, env_list

SRC_DIR = Path(settings.BASE_DIR)
BIN_DIR = Path(sys.executable).parent
ENTRYPOINT = SRC_DIR / "docker-entrypoint.sh"
STRONG_KEY = secrets.token_urlsafe(50)


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    """argv in src/ with only PATH, the settings module and `env` in its environment."""
    environment = {
        "PATH": f"{BIN_DIR}{os.pathsep}/usr/bin:/bin",
        "DJANGO_SETTINGS_MODULE": "config.settings",
        # No database or broker is contacted; keep an embedded run's files out of the repo.
        "PAYOUTS_LOCAL_DATA_DIR": tempfile.gettempdir() + "/payouts-settings-tests",
        **env,
    }
    return subprocess.run(
        argv, cwd=SRC_DIR, env=environment, capture_output=True, text=True, timeout=60
    )


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run([sys.executable, "manage.py", *args], **env)


def setting(name: str, **env: str) -> str:
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        f"from django.conf import settings; print(settings.{name})",
        **env,
    )
    if result.returncode:
        raise AssertionError(result.stderr)
    return result.stdout.strip().splitlines()[-1]


class ProductionFailsClosedTests(SimpleTestCase):
    def test_without_django_env_settings_are_production_and_refuse_a_missing_key(self) -> None:
        result = manage("check")

        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DJANGO_ENV=production needs a secret key", result.stderr)

    def test_production_refuses_the_public_development_key_and_short_keys(self) -> None:
        for key in ("django-insecure-local-only-never-use-in-production", "x" * 60, "short"):
            with self.subTest(key=key):
                result = manage("check", DJANGO_SECRET_KEY=key)
                self.assertNotEqual(result.returncode, 0)
                self.assertIn("needs a secret key", result.stderr)

    def test_production_refuses_debug(self) -> None:
        result = manage("check", DJANGO_SECRET_KEY=STRONG_KEY, DJANGO_DEBUG="1")

        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DJANGO_DEBUG must be off", result.stderr)

    def test_an_unknown_django_env_is_refused_not_taken_for_local(self) -> None:
        result = manage("check", DJANGO_ENV="prod", DJANGO_SECRET_KEY=STRONG_KEY)

        self.assertNotEqual(result.returncode, 0)
        self.assertIn("DJANGO_ENV must be production or local", result.stderr)

    def test_local_is_an_explicit_opt_in(self) -> None:
        self.assertEqual(manage("check", DJANGO_ENV="local").returncode, 0)

    def test_the_test_runner_runs_with_local_semantics(self) -> None:
        # manage.py test sets it before settings load, whatever the environment said.
        self.assertEqual(settings.DJANGO_ENV, "local")
        self.assertEqual(os.environ["DJANGO_ENV"], "local")

    def test_the_key_is_read_from_django_secret_key_file(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            key_file = Path(tmp) / "secret_key"
            key_file.write_text(STRONG_KEY + "\n")

            self.assertEqual(
                setting("SECRET_KEY", DJANGO_SECRET_KEY_FILE=str(key_file)), STRONG_KEY
            )
            missing = manage("check", DJANGO_SECRET_KEY_FILE=str(Path(tmp) / "absent"))
        self.assertNotEqual(missing.returncode, 0)
        self.assertIn("cannot be read", missing.stderr)


class DeployCheckTests(SimpleTestCase):
    check = ("check", "--deploy", "--fail-level", "WARNING")

    def test_behind_a_tls_proxy_the_deploy_check_passes_with_nothing_silenced(self) -> None:
        env = {"DJANGO_SECRET_KEY": STRONG_KEY, "DJANGO_BEHIND_TLS_PROXY": "1"}

        result = manage(*self.check, **env)

        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(setting("SILENCED_SYSTEM_CHECKS", **env), "[]")
        self.assertEqual(setting("SECURE_SSL_REDIRECT", **env), "True")

    def test_on_loopback_only_the_tls_only_checks_are_silenced_by_name(self) -> None:
        result = manage(*self.check, DJANGO_SECRET_KEY=STRONG_KEY)

        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(
            setting("SILENCED_SYSTEM_CHECKS", DJANGO_SECRET_KEY=STRONG_KEY),
            str(["security.W004", "security.W008", "security.W012", "security.W016"]),
        )

    def test_a_public_host_without_tls_keeps_the_warnings_and_secure_cookies(self) -> None:
        env = {"DJANGO_SECRET_KEY": STRONG_KEY, "DJANGO_ALLOWED_HOSTS": "payouts.example.com"}

        result = manage(*self.check, **env)

        self.assertNotEqual(result.returncode, 0)
        self.assertIn("security.W004", result.stderr)
        self.assertIn("security.W008", result.stderr)
        self.assertEqual(setting("SESSION_COOKIE_SECURE", **env), "True")


class EnvParsingTests(SimpleTestCase):
    def test_unset_empty_and_blank_mean_the_default(self) -> None:
        for value in (None, "", "  "):
            with self.subTest(value=value):
                env = {} if value is None else {"SOME_SETTING": value}
                with mock.patch.dict(os.environ, env, clear=True):
                    self.assertEqual(env_int("SOME_SETTING", 7), 7)
                    self.assertIs(env_bool("SOME_SETTING", True), True)
                    self.assertEqual(env_list("SOME_SETTING", "a,b"), ["a", "b"])

    def test_invalid_values_name_the_variable(self) -> None:
        with mock.patch.dict(os.environ, {"SOME_SETTING": "four"}):
            with self.assertRaisesMessage(ImproperlyConfigured, "SOME_SETTING must be an integer"):
                env_int("SOME_SETTING", 1)
            with self.assertRaisesMessage(ImproperlyConfigured, "SOME_SETTING must be a boolean"):
                env_bool("SOME_SETTING", False)

    def test_gunicorn_conf_takes_empty_values_as_defaults_and_rejects_invalid_ones(self) -> None:
        gunicorn = [str(BIN_DIR / "gunicorn"), "--check-config", "config.wsgi:application"]
        env = {"DJANGO_SECRET_KEY": STRONG_KEY, "PORT": "", "GUNICORN_THREADS": ""}

        self.assertEqual(run(gunicorn, **env).returncode, 0, run(gunicorn, **env).stderr)
        invalid = run(gunicorn, **{**env, "GUNICORN_TIMEOUT": "soon"})
        self.assertNotEqual(invalid.returncode, 0)
        self.assertIn("GUNICORN_TIMEOUT must be an integer, got 'soon'", invalid.stderr)


class EntrypointTests(SimpleTestCase):
    """src/docker-entrypoint.sh, the image's ENTRYPOINT."""

    def test_an_empty_web_concurrency_does_not_reach_gunicorn(self) -> None:
        # gunicorn parses WEB_CONCURRENCY itself on import: int("") used to exit 1.
        gunicorn = [str(BIN_DIR / "gunicorn"), "--check-config", "config.wsgi:application"]
        env = {"DJANGO_SECRET_KEY": STRONG_KEY, "WEB_CONCURRENCY": ""}

        self.assertNotEqual(run(gunicorn, **env).returncode, 0)  # what compose used to cause
        result = run([str(ENTRYPOINT), *gunicorn], **env)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_without_a_key_one_is_generated_once_kept_private_and_never_printed(self) -> None:
        show = [sys.executable, "-c", "import os; print(os.environ.get('DJANGO_SECRET_KEY', ''))"]
        with tempfile.TemporaryDirectory() as tmp:
            key_file = Path(tmp) / "secret_key"

            first = run([str(ENTRYPOINT), *show], DJANGO_SECRET_KEY_FILE=str(key_file))
            key = key_file.read_text().strip()
            second = run([str(ENTRYPOINT), *show], DJANGO_SECRET_KEY_FILE=str(key_file))
            # What `docker compose exec` (no entrypoint) sees: the same key, from the file.
            exec_key = setting("SECRET_KEY", DJANGO_SECRET_KEY_FILE=str(key_file))

            self.assertEqual((first.returncode, second.returncode), (0, 0), first.stderr)
            self.assertGreaterEqual(len(key), 50)
            self.assertEqual(stat.S_IMODE(key_file.stat().st_mode), 0o600)
            self.assertEqual(key_file.read_text().strip(), key)  # kept, not regenerated
            self.assertEqual(exec_key, key)
            self.assertEqual(sorted(os.listdir(tmp)), ["secret_key"])  # no temporary left
        for output in (first.stdout, first.stderr, second.stdout, second.stderr):
            self.assertNotIn(key, output)

    def test_a_given_key_wins_and_no_file_is_created(self) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            key_file = Path(tmp) / "secret_key"
            result = run(
                [str(ENTRYPOINT), "true"],
                DJANGO_SECRET_KEY=STRONG_KEY,
                DJANGO_SECRET_KEY_FILE=str(key_file),
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            self.assertFalse(key_file.exists())
