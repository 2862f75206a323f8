#!/usr/bin/env python3
"""Validate the compose `monitoring` profile (Prometheus, its alerts, Grafana) with no engine.

1. `promtool check config` on prometheus.yml as Prometheus loads it (its rule files too). The
   token file the scrape jobs send exists only in the prometheus-secrets volume, so the check
   runs on a copy whose `credentials_file` names a temporary file; nothing else is changed.
2. `promtool check rules` and `promtool test rules alerts_test.yml` (each alert provably fires).
3. Grafana: the data source file, the dashboard provider and every dashboard JSON. A dashboard
   has a fixed uid; each panel (rows aside) has a PromQL target on the provisioned data source's
   uid; promtool parses every query (as a rule of a temporary rule file, Grafana's `$__`
   variables replaced by a duration), and each names only metrics the service exposes
   (METRICS below). The alert rules are held to the same list.
4. docker-compose.yml mounts these files where the configs expect them: prometheus.yml's
   directory and the token file's volume (written by `metrics-token`), Grafana's provisioning
   and dashboards.

Usage: python scripts/check_monitoring.py      (exit status 1 on any error; make lint runs it)
promtool comes from Debian's `prometheus` package (`apt-get install prometheus`); .ci/run
installs it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO_DIR = Path(__file__).resolve().parent.parent
MONITORING_DIR = REPO_DIR / "deploy" / "monitoring"
PROMETHEUS_DIR = MONITORING_DIR / "prometheus"
GRAFANA_DIR = MONITORING_DIR / "grafana"
COMPOSE_FILE = REPO_DIR / "docker-compose.yml"


def _counters(*names: str) -> set[str]:
    return {f"{name}_total" for name in names}


def _histograms(*names: str) -> set[str]:
    return {f"{name}_{suffix}" for name in names for suffix in ("bucket", "sum", "count")}


# Every series name the service exposes (src/payouts/observability/, django-prometheus), and
# Prometheus's own `up`. A query naming anything else shows an empty panel or an alert that can
# never fire: a typo, or a metric that was renamed.
METRICS = frozenset(
    {
        "up",
        # django-prometheus, on the web.
        "django_http_requests_total_by_method_total",
        "django_http_responses_total_by_status_view_method_total",
        *_histograms("django_http_requests_latency_seconds_by_view_method"),
        # payouts.observability.metrics: counters and histograms.
        *_counters(
            "payouts_created",
            "payouts_finished",
            "payouts_retries",
            "payouts_unknown_outcomes",
            "payouts_review_flagged",
            "payouts_sweep_runs",
            "payouts_sweep_requeued",
            "payouts_webhook_deliveries",
            "payouts_rate_limited",
            "payouts_rate_limit_backend_errors",
        ),
        *_histograms(
            "payouts_provider_call_duration_seconds", "payouts_webhook_delivery_duration_seconds"
        ),
        # payouts.observability.exposition: gauges computed on each scrape of the web.
        "payouts_unfinished",
        "payouts_under_review",
        "payouts_oldest_unprocessed_age_seconds",
        "payouts_queue_depth",
        "payouts_webhook_endpoints_failing",
        "payouts_scrape_source_up",
    }
)

# --- PromQL: the metric names a query reads ---------------------------------------------------
# No maintained Python PromQL parser exists; promtool (step 3) parses each query for syntax, so
# this only has to find the names in a query known to be valid PromQL.
STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
NAME_MATCHER = re.compile(r"__name__\s*=\s*\"([^\"]*)\"")
LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][\w:]*)(?![\w:])(?!\s*\()")
KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)
# Grafana's built-in variables ($__rate_interval, ${__interval}, ...): a duration in a query.
GRAFANA_VARIABLE = re.compile(r"\$\{?__\w+\}?")


def grafana_query_as_promql(expr: str) -> str:
    return GRAFANA_VARIABLE.sub("1m", expr)


def metric_names(expr: str) -> set[str]:
    """The metric names a (valid) PromQL expression selects."""
    names = set(NAME_MATCHER.findall(expr))
    text = STRING.sub('""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = LABEL_LIST.sub(" ", text)
    names.update(name for name in IDENTIFIER.findall(text) if name.lower() not in KEYWORDS)
    return names


def unknown_metrics(expr: str) -> list[str]:
    return sorted(metric_names(expr) - METRICS)


# --- promtool ----------------------------------------------------------------------------------


def promtool() -> str | None:
    return shutil.which("promtool")


def run_promtool(*args: str, cwd: Path) -> str | None:
    """None when promtool agrees, else what it said."""
    binary = promtool()
    if binary is None:
        return "promtool is missing: apt-get install prometheus (Debian's package ships it)"
    result = subprocess.run(
        [binary, *args], cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL
    )
    if result.returncode == 0:
        return None
    return f"promtool {' '.join(args)}:\n{(result.stdout + result.stderr).strip()}"


def scrape_jobs(config: dict[str, Any]) -> list[dict[str, Any]]:
    return list(config.get("scrape_configs") or [])


def token_files(config: dict[str, Any]) -> set[str]:
    return {
        str((job.get("authorization") or {}).get("credentials_file", ""))
        for job in scrape_jobs(config)
    }


def prometheus_errors(prometheus_dir: Path = PROMETHEUS_DIR) -> list[str]:
    config_path = prometheus_dir / "prometheus.yml"
    try:
        config = yaml.safe_load(config_path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return [f"{config_path}: cannot read: {exc}"]
    errors = [
        f"{config_path}: job {job.get('job_name')!r} sends no metrics token "
        "(authorization.credentials_file): every /metrics needs one"
        for job in scrape_jobs(config)
        if not (job.get("authorization") or {}).get("credentials_file")
    ]
    with tempfile.TemporaryDirectory(prefix="check-monitoring-") as tmp:
        copy = Path(tmp) / "prometheus"
        shutil.copytree(prometheus_dir, copy)
        token = Path(tmp) / "metrics_token"
        token.write_text("a-token-for-promtool-check-config\n", "utf-8")
        for job in scrape_jobs(config):
            if job.get("authorization"):
                job["authorization"]["credentials_file"] = str(token)
        (copy / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")
        checks = [
            ("check", "config", "prometheus.yml"),
            ("check", "rules", *[str(path) for path in rule_files(config)]),
            ("test", "rules", "alerts_test.yml"),
        ]
        for args in checks:
            if message := run_promtool(*args, cwd=copy):
                errors.append(message)
    for path in rule_files(config):
        errors.extend(rule_metric_errors(prometheus_dir / path))
    return errors


def rule_files(config: dict[str, Any]) -> list[str]:
    return [str(path) for path in config.get("rule_files") or []]


def rule_metric_errors(path: Path) -> list[str]:
    try:
        document = yaml.safe_load(path.read_text("utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return [f"{path}: cannot read: {exc}"]
    return [
        f"{path}: {rule.get('alert') or rule.get('record')}: unknown metric {name!r}"
        for group in document.get("groups") or []
        for rule in group.get("rules") or []
        for name in unknown_metrics(str(rule.get("expr", "")))
    ]


# --- Grafana -----------------------------------------------------------------------------------


def provisioned_datasource_uids(grafana_dir: Path = GRAFANA_DIR) -> set[str]:
    uids: set[str] = set()
    for path in sorted((grafana_dir / "provisioning" / "datasources").glob("*.y*ml")):
        document = yaml.safe_load(path.read_text("utf-8")) or {}
        uids.update(str(source.get("uid")) for source in document.get("datasources") or [])
    return uids


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def dashboard_errors(path: Path, datasource_uids: set[str]) -> tuple[list[str], dict[str, str]]:
    """The dashboard's errors, and its queries by a rule name that says where each one is."""
    try:
        dashboard = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{path}: not valid JSON: {exc}"], {}
    errors: list[str] = []
    queries: dict[str, str] = {}
    if not re.fullmatch(r"[\w-]{1,40}", str(dashboard.get("uid") or "")):
        errors.append(f"{path}: no fixed uid (1-40 letters, digits, - or _)")
    if not isinstance(dashboard.get("schemaVersion"), int):
        errors.append(f"{path}: no schemaVersion")
    ids = [panel.get("id") for panel in panels(dashboard)]
    if len(ids) != len(set(ids)):
        errors.append(f"{path}: panel ids are not unique")
    for panel in panels(dashboard):
        where = f"{path.name}: panel {panel.get('id')} {panel.get('title')!r}"
        if panel.get("type") == "row":
            continue
        targets = [t for t in panel.get("targets") or [] if str(t.get("expr", "")).strip()]
        if not targets:
            errors.append(f"{where}: no PromQL target")
        for source in [panel.get("datasource"), *(t.get("datasource") for t in targets)]:
            uid = (source or {}).get("uid") if isinstance(source, dict) else source
            if uid not in datasource_uids:
                errors.append(
                    f"{where}: data source uid {uid!r} is not a provisioned one "
                    f"({', '.join(sorted(datasource_uids))})"
                )
        for target in targets:
            expr = grafana_query_as_promql(str(target["expr"]))
            if "$" in expr:
                errors.append(f"{where}: query {target.get('refId')}: unknown variable in {expr}")
                continue
            queries[f"panel_{panel.get('id')}_{target.get('refId')}"] = expr
            errors.extend(
                f"{where}: query {target.get('refId')}: unknown metric {name!r}"
                for name in unknown_metrics(expr)
            )
    return errors, queries


def promql_syntax_errors(queries: dict[str, str]) -> list[str]:
    """promtool parses the queries: each one a recording rule of a temporary rule file."""
    if not queries:
        return []
    rules = [{"record": name, "expr": expr} for name, expr in queries.items()]
    with tempfile.TemporaryDirectory(prefix="check-monitoring-") as tmp:
        path = Path(tmp) / "dashboard_queries.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
        message = run_promtool("check", "rules", "--lint=none", path.name, cwd=Path(tmp))
    return [f"dashboard queries (rule names say which panel): {message}"] if message else []


def grafana_errors(grafana_dir: Path = GRAFANA_DIR) -> list[str]:
    uids = provisioned_datasource_uids(grafana_dir)
    if not uids:
        return [f"{grafana_dir}/provisioning/datasources: no data source with a uid"]
    dashboards = sorted((grafana_dir / "dashboards").glob("*.json"))
    if not dashboards:
        return [f"{grafana_dir}/dashboards: no dashboard"]
    errors: list[str] = []
    queries: dict[str, str] = {}
    for path in dashboards:
        dashboard_problems, dashboard_queries = dashboard_errors(path, uids)
        errors.extend(dashboard_problems)
        queries.update({f"{path.stem}_{name}": expr for name, expr in dashboard_queries.items()})
    return errors + promql_syntax_errors(queries)


# --- docker-compose.yml mounts -----------------------------------------------------------------


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """A service's volumes as {target: source}, short syntax."""
    found = {}
    for volume in service.get("volumes") or []:
        source, _, rest = str(volume).partition(":")
        found[rest.split(":")[0]] = source
    return found


def mounted_from(service: dict[str, Any], directory: Path, target: str) -> bool:
    """Whether `target` is a bind mount of `directory` (a path relative to the compose file)."""
    source = mounts(service).get(target)
    return source is not None and (COMPOSE_FILE.parent / source).resolve() == directory.resolve()


def compose_errors(compose_file: Path = COMPOSE_FILE) -> list[str]:
    document = yaml.safe_load(compose_file.read_text("utf-8")) or {}
    services = document.get("services") or {}
    missing = [name for name in ("prometheus", "grafana", "metrics-token") if name not in services]
    if missing:
        return [f"{compose_file}: no service {', '.join(missing)}"]
    errors = [
        f"{compose_file}: {name} is not in the monitoring profile"
        for name in ("prometheus", "grafana", "metrics-token")
        if "monitoring" not in (services[name].get("profiles") or [])
    ]
    prometheus = services["prometheus"]
    flags = [str(arg) for arg in prometheus.get("command") or []]
    config_file = next((f.split("=", 1)[1] for f in flags if f.startswith("--config.file=")), "")
    if not mounted_from(prometheus, PROMETHEUS_DIR, str(Path(config_file).parent)):
        errors.append(
            f"prometheus: --config.file={config_file!r} is not in a mount of {PROMETHEUS_DIR}"
        )
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text("utf-8"))
    writer = mounts(services["metrics-token"])
    for token_file in sorted(token_files(config)):
        volume = mounts(prometheus).get(str(Path(token_file).parent))
        if volume is None or volume not in writer.values():
            errors.append(
                f"prometheus: the token file {token_file} is in no volume that metrics-token writes"
            )
    grafana = services["grafana"]
    provisioning = GRAFANA_DIR / "provisioning"
    for kind in ("datasources", "dashboards"):
        if not mounted_from(grafana, provisioning / kind, f"/etc/grafana/provisioning/{kind}"):
            errors.append(f"grafana: {provisioning / kind} is not mounted for provisioning")
    for provider_path in dashboard_provider_paths():
        if not mounted_from(grafana, GRAFANA_DIR / "dashboards", provider_path):
            errors.append(f"grafana: dashboard provider path {provider_path} is not a mount")
    return errors


def dashboard_provider_paths() -> Iterable[str]:
    for path in sorted((GRAFANA_DIR / "provisioning" / "dashboards").glob("*.y*ml")):
        document = yaml.safe_load(path.read_text("utf-8")) or {}
        for provider in document.get("providers") or []:
            yield str((provider.get("options") or {}).get("path", ""))


def check() -> list[str]:
    return prometheus_errors() + grafana_errors() + compose_errors()


def main() -> int:
    errors = check()
    for error in errors:
        print(f"check-monitoring: {error}", file=sys.stderr)
    if errors:
        return 1
    print(
        "check-monitoring: prometheus.yml, alerts.yml (+ unit tests), the Grafana provisioning "
        "and dashboards are valid; every query names known metrics; compose mounts them"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
