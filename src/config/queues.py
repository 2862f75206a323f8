"""The Celery queues, named after one base name (CELERY_TASK_QUEUE; the test runner's own).

- `<base>`: payouts, published by the API and the sweep.
- `<base>.sweep`: the recovery sweep: behind a backlog in the payouts' FIFO queue its message
  would outwait its expiry (one sweep interval) and be dropped unrun.
- `<base>.webhooks`: webhook dispatch and delivery, so a slow merchant never delays a payout.
"""

from dataclasses import dataclass

from kombu import Exchange, Queue


@dataclass(frozen=True)
class QueueLayout:
    payouts: str
    sweep: str
    webhooks: str

    @classmethod
    def named_after(cls, base: str) -> "QueueLayout":
        return cls(payouts=base, sweep=f"{base}.sweep", webhooks=f"{base}.webhooks")

    @property
    def queues(self) -> tuple[Queue, ...]:
        return tuple(
            Queue(name, Exchange(name), routing_key=name)
            for name in (self.payouts, self.sweep, self.webhooks)
        )

    @property
    def routes(self) -> dict[str, dict[str, str]]:
        return {
            "payouts.tasks.recover_stale_payouts": {"queue": self.sweep},
            "webhooks.tasks.*": {"queue": self.webhooks},
        }
