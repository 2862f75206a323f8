"""The compose `monitoring` profile's files, checked by scripts/check_monitoring.py (make lint).

promtool (Debian's `prometheus` package) checks the Prometheus config and rules and runs the
alerts' unit tests; the dashboards are parsed here. Without promtool these tests skip, except
in CI (CI=true), where .ci/run installs it and a missing promtool is a failure.
"""

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import unittest
from pathlib import Path
from types import ModuleType
from typing import Any

from django.conf import settings
from django.test import SimpleTestCase
from prometheus_client import REGISTRY

import payouts.observability.metrics  # noqa: F401 - registers the service's own metrics

SCRIPT = Path(settings.REPO_DIR) / "scripts" / "check_monitoring.py"
MONITORING_DIR = Path(settings.REPO_DIR) / "deploy" / "monitoring"
EXPOSITION = Path(settings.BASE_DIR) / "payouts" / "observability" / "exposition.py"
# Series Prometheus makes or the web computes on each scrape (not in the registry).
NOT_REGISTERED = {
    "up",
    "payouts_unfinished",
    "payouts_under_review",
    "payouts_oldest_unprocessed_age_seconds",
    "payouts_queue_depth",
    "payouts_webhook_endpoints_failing",
    "payouts_scrape_source_up",
}
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_monitoring", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def registered_series() -> set[str]:
    """The series names of every registered metric (ours, django-prometheus's)."""
    from django_prometheus.middleware import Metrics

    Metrics.get_instance()  # django-prometheus registers its metrics on first use
    return {
        family.name + suffix
        for family in REGISTRY.collect()
        for suffix in SUFFIXES.get(family.type, ())
    }


@unittest.skipUnless(
    SCRIPT.exists() and MONITORING_DIR.exists(),
    "scripts/ and deploy/ are not in the Docker image: run it from a checkout",
)
class MonitoringConfigTests(SimpleTestCase):
    def setUp(self) -> None:
        self.check = load_script()
        if shutil.which("promtool"):
            return
        if os.environ.get("CI") == "true":
            self.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        self.skipTest("promtool is missing: apt-get install prometheus (CI installs it)")

    def copy(self, name: str) -> Path:
        tmp = Path(tempfile.mkdtemp(prefix="test-monitoring-"))
        self.addCleanup(shutil.rmtree, tmp, True)
        return Path(shutil.copytree(MONITORING_DIR / name, tmp / name))

    def edit_dashboard(self, grafana_dir: Path, change: Any) -> None:
        path = grafana_dir / "dashboards" / "payouts.json"
        dashboard = json.loads(path.read_text("utf-8"))
        change(next(p for p in dashboard["panels"] if p["type"] != "row"))
        path.write_text(json.dumps(dashboard), "utf-8")

    def test_prometheus_config_rules_and_alert_unit_tests_pass(self) -> None:
        self.assertEqual(self.check.prometheus_errors(), [])

    def test_dashboards_query_known_metrics_on_the_provisioned_datasource(self) -> None:
        self.assertEqual(self.check.grafana_errors(), [])

    def test_compose_mounts_the_files_where_the_configs_expect_them(self) -> None:
        self.assertEqual(self.check.compose_errors(), [])

    def test_every_alert_has_a_summary_a_description_and_a_runbook(self) -> None:
        import yaml

        alerts = yaml.safe_load((MONITORING_DIR / "prometheus" / "alerts.yml").read_text())
        rules = [rule for group in alerts["groups"] for rule in group["rules"]]
        names = {rule["alert"] for rule in rules}
        for required in ("PayoutsStuck", "PayoutsFailureRateHigh", "PayoutsQueueGrowing"):
            self.assertIn(required, names)
        self.assertIn("PayoutsUnderReview", names)
        for rule in rules:
            with self.subTest(alert=rule["alert"]):
                self.assertEqual(sorted(rule["annotations"]), ["description", "runbook", "summary"])

    def test_a_misspelt_metric_in_a_dashboard_is_an_error(self) -> None:
        grafana = self.copy("grafana")

        def misspell(panel: dict[str, Any]) -> None:
            panel["targets"][0]["expr"] = "sum(rate(payouts_finish_total[$__rate_interval]))"

        self.edit_dashboard(grafana, misspell)
        errors = self.check.grafana_errors(grafana)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("unknown metric 'payouts_finish_total'", errors[0])

    def test_a_query_promtool_cannot_parse_is_an_error(self) -> None:
        grafana = self.copy("grafana")

        def break_syntax(panel: dict[str, Any]) -> None:
            panel["targets"][0]["expr"] = "sum(rate(payouts_created_total[$__rate_interval])"

        self.edit_dashboard(grafana, break_syntax)
        errors = self.check.grafana_errors(grafana)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("promtool check rules", errors[0])

    def test_a_panel_on_an_unprovisioned_datasource_is_an_error(self) -> None:
        grafana = self.copy("grafana")

        def other_datasource(panel: dict[str, Any]) -> None:
            panel["datasource"] = {"type": "prometheus", "uid": "elsewhere"}

        self.edit_dashboard(grafana, other_datasource)
        errors = self.check.grafana_errors(grafana)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("data source uid 'elsewhere'", errors[0])

    def test_an_alert_that_no_longer_fires_fails_its_unit_test(self) -> None:
        prometheus = self.copy("prometheus")
        alerts = prometheus / "alerts.yml"
        text = alerts.read_text("utf-8")
        self.assertIn("payouts_oldest_unprocessed_age_seconds > 600", text)
        alerts.write_text(text.replace("seconds > 600", "seconds > 6000"), "utf-8")
        errors = self.check.prometheus_errors(prometheus)
        self.assertEqual(len(errors), 1, errors)
        self.assertIn("alertname: PayoutsStuck", errors[0])

    def test_the_known_metrics_are_the_ones_the_service_exposes(self) -> None:
        known = set(self.check.METRICS)
        registered = registered_series()
        ours = {name for name in registered if name.startswith(("payouts_", "django_http_"))}
        # Everything the checker allows is really exposed...
        self.assertEqual(sorted(known - NOT_REGISTERED - registered), [])
        # ...and every payouts_ series the service registers can be put on a dashboard.
        self.assertEqual(sorted({n for n in ours if n.startswith("payouts_")} - known), [])
        exposition = EXPOSITION.read_text("utf-8")
        for name in NOT_REGISTERED - {"up"}:
            with self.subTest(gauge=name):
                self.assertIn(f'"{name}"', exposition)
