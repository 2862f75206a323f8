from django.apps import AppConfig


class PayoutsConfig(AppConfig):
    name = "payouts"
    verbose_name = "Payouts"

    def ready(self) -> None:
        # Celery signals only fire in a worker; connecting them elsewhere costs nothing.
        from .observability import worker

        worker.connect()
