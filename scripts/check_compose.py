#!/usr/bin/env python3
"""Validate docker-compose.yml against the Compose Specification schema, with no Docker engine.

The schema is the compose-spec.json that check-jsonschema vendors (and pins by checksum); the
file is read as YAML (anchors and merge keys resolved) and checked as written, before variable
interpolation, like `check-jsonschema --builtin-schema vendor.compose-spec`. A few cross-references
the schema cannot express are checked too: every `depends_on` names a service, a service that
waits for `service_healthy` has a health check, one that waits for `service_completed_successfully`
is not restarted.

Usage: python scripts/check_compose.py [docker-compose.yml ...]   (exit status 1 on any error)
"""

from __future__ import annotations

import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from jsonschema.validators import validator_for

REPO_DIR = Path(__file__).resolve().parent.parent


def load_schema() -> dict[str, Any]:
    try:
        vendor = resources.files("check_jsonschema.builtin_schemas.vendor")
    except ModuleNotFoundError:
        sys.exit("check-jsonschema is not installed: pip install -r requirements-dev.txt")
    schema: dict[str, Any] = json.loads(vendor.joinpath("compose-spec.json").read_text("utf-8"))
    return schema


def schema_errors(document: Any, schema: dict[str, Any]) -> list[str]:
    validator_cls = validator_for(schema)
    validator_cls.check_schema(schema)
    validator = validator_cls(schema)
    errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
    return [f"{e.json_path}: {e.message}" for e in errors]


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


def check(path: Path, schema: dict[str, Any]) -> list[str]:
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        return [f"cannot read: {exc}"]
    if not isinstance(document, dict):
        return ["the top level must be a mapping"]
    return schema_errors(document, schema) + reference_errors(document)


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or [REPO_DIR / "docker-compose.yml"]
    schema = load_schema()
    failed = False
    for path in paths:
        errors = check(path, schema)
        for error in errors:
            print(f"{path}: {error}", file=sys.stderr)
        if errors:
            failed = True
        else:
            print(f"{path}: valid against the Compose Specification ({schema.get('title', '')})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
