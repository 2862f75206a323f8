"""The log context of Celery tasks: what the publisher was doing travels in the message.

- Publishing (before_task_publish, in the API or in a task): the request id and payout id of
  the log context, when set, go into the message's headers, so a task queued by a request logs
  that request's id, and a webhook dispatch queued while a payout was processed logs its payout.
- Running (task_prerun / task_postrun, in the worker's thread that runs the task): the context
  is set for the task's lifetime and reset after it: the task's id, the request id of its
  headers, and the payout id, taken from the task's own arguments when PAYOUT_ID_ARGUMENTS
  names the task, else from its headers.

config/celery.py imports this module, which connects the handlers, in every process that has
the Celery app: web, worker and beat.
"""

from typing import Any

from celery import Task, signals

from config import logs
from config.request_id import VALID_REQUEST_ID

REQUEST_ID_HEADER = "request_id"
PAYOUT_ID_HEADER = "payout_id"

# Task name -> (position, keyword) of its payout id argument. A task that works on one payout
# and takes its id as an argument belongs here.
PAYOUT_ID_ARGUMENTS: dict[str, tuple[int, str]] = {
    "payouts.tasks.process_payout": (0, "payout_id"),
}

_TOKENS = "log_context_tokens"  # the attribute of task.request that keeps them till postrun


@signals.before_task_publish.connect
def carry_log_context(headers: dict[str, Any] | None = None, **_: Any) -> None:
    if headers is None:
        return
    if (request_id := logs.request_id.get()) is not None:
        headers[REQUEST_ID_HEADER] = request_id
    if (payout_id := logs.payout_id.get()) is not None:
        headers[PAYOUT_ID_HEADER] = payout_id


def payout_id_of(task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The payout the task works on: its argument (PAYOUT_ID_ARGUMENTS), else its headers'.

    Else the current one, which is none in a worker (the context is reset after each task) and
    the caller's when a task runs in process (`apply()`: no message, no headers).
    """
    if (argument := PAYOUT_ID_ARGUMENTS.get(task.name)) is not None:
        position, keyword = argument
        value = kwargs.get(keyword, args[position] if len(args) > position else None)
        if value is not None:
            return str(value)
    value = task.request.get(PAYOUT_ID_HEADER)
    return value if isinstance(value, str) else logs.payout_id.get()


@signals.task_prerun.connect
def enter_task_log_context(
    task_id: str, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any], **_: Any
) -> None:
    request_id = task.request.get(REQUEST_ID_HEADER)
    if not (isinstance(request_id, str) and VALID_REQUEST_ID.fullmatch(request_id)):
        request_id = logs.request_id.get()  # as for the payout id above
    tokens = (
        logs.request_id.set(request_id),
        logs.task_id.set(task_id),
        logs.payout_id.set(payout_id_of(task, args or (), kwargs or {})),
    )
    setattr(task.request, _TOKENS, tokens)


@signals.task_postrun.connect
def leave_task_log_context(task: Task, **_: Any) -> None:
    tokens = getattr(task.request, _TOKENS, None)
    if tokens is None:
        return
    delattr(task.request, _TOKENS)
    request_token, task_token, payout_token = tokens
    logs.payout_id.reset(payout_token)
    logs.task_id.reset(task_token)
    logs.request_id.reset(request_token)
