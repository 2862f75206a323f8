#!/usr/bin/env python3
"""Validate docker-compose.yml against the Compose Specification schema, with no Docker engine.

The schema part is `check-jsonschema --builtin-schema vendor.compose-spec` (the maintained
validator, which pins the schema it vendors), on the file as written. A few cross-references the
schema cannot express are checked here: every `depends_on` names a service, a service that
waits for `service_healthy` has a health check, one that waits for `service_completed_successfully`
is not restarted. scripts/compose_smoke.py then runs the resolved file's services.

Usage: python scripts/check_compose.py [docker-compose.yml ...]   (exit status 1 on any error)
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

REPO_DIR = Path(__file__).resolve().parent.parent


def schema_errors(path: Path) -> list[str]:
    validator = shutil.which("check-jsonschema") or str(
        Path(sys.executable).parent / "check-jsonschema"
    )
    if not Path(validator).exists():
        return ["check-jsonschema is not installed: pip install -r requirements-dev.txt"]
    result = subprocess.run(
        [validator, "--builtin-schema", "vendor.compose-spec", str(path)],
        capture_output=True,
        text=True,
    )
    return [] if result.returncode == 0 else [(result.stdout + result.stderr).strip()]


def reference_errors(document: dict[str, Any]) -> list[str]:
    services: dict[str, Any] = document.get("services") or {}
    errors: list[str] = []
    for name, service in services.items():
        depends_on = (service or {}).get("depends_on") or {}
        if isinstance(depends_on, list):
            depends_on = {dep: {"condition": "service_started"} for dep in depends_on}
        for dep, options in depends_on.items():
            if dep not in services:
                errors.append(f"$.services.{name}.depends_on: unknown service {dep!r}")
                continue
            target = services[dep] or {}
            condition = (options or {}).get("condition", "service_started")
            healthcheck = target.get("healthcheck") or {}
            if condition == "service_healthy" and (not healthcheck or healthcheck.get("disable")):
                errors.append(
                    f"$.services.{name}.depends_on.{dep}: service_healthy, but {dep!r} has no "
                    "health check (an image's HEALTHCHECK may exist; declare it here to be sure)"
                )
            restart = str(target.get("restart", "no"))
            completes = condition == "service_completed_successfully"
            if completes and restart not in {"no", "on-failure"}:
                errors.append(
                    f"$.services.{name}.depends_on.{dep}: waits for completion, but {dep!r} "
                    f"restarts ({restart!r})"
                )
    return errors


def check(path: Path) -> list[str]:
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return [f"cannot read: {exc}"]
    if not isinstance(document, dict):
        return ["the top level must be a mapping"]
    return schema_errors(path) or reference_errors(document)


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or [REPO_DIR / "docker-compose.yml"]
    failed = False
    for path in paths:
        errors = check(path)
        for error in errors:
            print(f"{path}: {error}", file=sys.stderr)
        if errors:
            failed = True
        else:
            print(f"{path}: valid against the Compose Specification, cross-references hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
