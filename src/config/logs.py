"""Log format and log context, shared by settings.py (Django, the Celery worker) and gunicorn.

- LOG_FORMAT=json (the default in production) writes one JSON object per line, through
  python-json-logger: timestamp (ISO 8601, UTC), level, logger, message, and the context fields
  below only when they are set. LOG_FORMAT=console (the default with DJANGO_ENV=local, as under
  `make run`) writes `time LEVEL logger message`, the context fields appended as `name=value`.
- The context: `request_id` (the request being served, config.request_id), `task_id` and
  `payout_id` (the Celery task being run, config.task_logs). Each is a ContextVar, so threads
  (gunicorn's gthread workers, Celery's thread pool) never see each other's; ContextFilter, on
  every handler, copies whatever is set onto each record.

Nothing here imports Django settings: gunicorn.conf.py uses it before Django is set up.
"""

import logging
from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from pythonjsonlogger.json import JsonFormatter

from config.env import env_str

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
task_id: ContextVar[str | None] = ContextVar("task_id", default=None)
payout_id: ContextVar[str | None] = ContextVar("payout_id", default=None)

# Record attribute (and JSON field) name -> the variable it comes from, in output order.
CONTEXT: tuple[tuple[str, ContextVar[str | None]], ...] = (
    ("request_id", request_id),
    ("task_id", task_id),
    ("payout_id", payout_id),
)

LOG_FORMATS = ("json", "console")
CONSOLE_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
JSON_FIELDS = "%(levelname)s %(name)s %(message)s"
JSON_RENAMES = {"levelname": "level", "name": "logger"}


def log_format_from_env() -> str:
    """LOG_FORMAT, by default json in production and console with DJANGO_ENV=local."""
    default = "console" if env_str("DJANGO_ENV", "production") == "local" else "json"
    log_format = env_str("LOG_FORMAT", default).strip().lower()
    if log_format not in LOG_FORMATS:
        raise ImproperlyConfigured(f"LOG_FORMAT must be json or console, got {log_format!r}")
    return log_format


class ContextFilter(logging.Filter):
    """Copies the context variables that are set onto the record (never overwriting a field
    the record already has, such as an `extra=`).

    A line Django logs once the request is over (django.request's "Service Unavailable: ...",
    written after every middleware has returned) finds the id on the request it carries.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        for name, variable in CONTEXT:
            value = variable.get()
            if value is not None and name not in fields:
                fields[name] = value
        if "request_id" not in fields:
            value = getattr(fields.get("request"), "request_id", None)
            if value is not None:
                fields["request_id"] = value
        return True


class GunicornAccessFilter(logging.Filter):
    """Lifts the fields of gunicorn's access line out of its atoms (the record's args), so a
    JSON line carries method, path, status, duration and request id as fields of their own.

    The access line is written after the application returned, so the request id comes from
    the response's X-Request-ID header, not the context.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping):
            fields = record.__dict__
            fields["method"] = atoms["m"]
            fields["path"] = atoms["U"]
            status = str(atoms["s"])
            fields["status"] = int(status) if status.isdigit() else status
            fields["duration_ms"] = atoms["M"]
            if (value := atoms["{x-request-id}o"]) != "-":
                fields["request_id"] = value
        return True


class ConsoleFormatter(logging.Formatter):
    """CONSOLE_FORMAT, the context fields appended as ` name=value` (before any traceback)."""

    def __init__(self) -> None:
        super().__init__(CONSOLE_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        fields = record.__dict__
        context = "".join(f" {name}={fields[name]}" for name, _ in CONTEXT if name in fields)
        return line + context


def make_formatter(log_format: str) -> logging.Formatter:
    """The formatter of `log_format` (one of LOG_FORMATS); dictConfig's factory for it."""
    if log_format == "console":
        return ConsoleFormatter()
    # Every attribute a record carries beyond the standard ones becomes a field: the context,
    # a logger's `extra=` (django.request's status_code, Celery's task data).
    return JsonFormatter(JSON_FIELDS, rename_fields=JSON_RENAMES, timestamp=True)


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """Django's LOGGING: one stderr handler on the root logger, `level` for our own loggers.

    The Celery worker keeps it (CELERY_WORKER_HIJACK_ROOT_LOGGER is off) and only raises the
    root level to its --loglevel.
    """
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"context": {"()": ContextFilter}},
        "formatters": {"default": {"()": make_formatter, "log_format": log_format}},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["context"],
            },
        },
        "root": {"handlers": ["console"], "level": "WARNING"},
        "loggers": {
            "payouts": {"level": level},
            "webhooks": {"level": level},
            "django.request": {"level": "ERROR"},
        },
    }


def gunicorn_logging_config(*, log_format: str) -> dict[str, Any]:
    """gunicorn's logconfig_dict: its error log (stderr) and access log (stdout) in the same
    format as the application's lines. Levels stay gunicorn's (loglevel; access at INFO)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "context": {"()": ContextFilter},
            "access": {"()": GunicornAccessFilter},
        },
        "formatters": {"default": {"()": make_formatter, "log_format": log_format}},
        "handlers": {
            "error": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["context"],
                "stream": "ext://sys.stderr",
            },
            "access": {
                "class": "logging.StreamHandler",
                "formatter": "default",
                "filters": ["access"],
                "stream": "ext://sys.stdout",
            },
        },
        "root": {"handlers": ["error"], "level": "WARNING"},
        "loggers": {
            "gunicorn.error": {"handlers": ["error"], "propagate": False},
            "gunicorn.access": {"handlers": ["access"], "propagate": False},
        },
    }
