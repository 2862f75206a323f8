"""The Celery application: configured from Django settings (CELERY_* names)."""

import os

from celery import Celery

from config import task_logs  # noqa: F401  # connects the log context's signal handlers

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("payouts")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
