"""Celery tasks of the notifications: thin shells over dispatch and delivery."""

import uuid

from celery import shared_task

from .dispatch import event_dispatch


@shared_task
def dispatch_event(event_id: str) -> int:
    return len(event_dispatch(uuid.UUID(event_id)))
