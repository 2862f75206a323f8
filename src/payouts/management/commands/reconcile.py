from collections import Counter
from datetime import datetime, timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from rest_framework.exceptions import ValidationError

from payouts.api.serializers import InstantField
from payouts.services.reconciliation import Verdict, payouts_reconcile

DEFAULT_PERIOD = timedelta(hours=24)
INSTANT_FORMATS = (
    "an ISO 8601 date-time such as 2026-01-10T12:00:00Z or 2026-01-10T15:00:00+03:00 (no offset "
    "means UTC), or a date such as 2026-01-10 (midnight UTC)"
)

# Exit codes, for cron and CI: 1 wins over 2 (a contradiction matters more than a gap).
MISMATCH_EXIT = 1
UNCHECKED_EXIT = 2  # also a usage error: either way the run gave no verdict


class Command(BaseCommand):
    help = (
        "Compare the payouts created in a period with the provider's records (one lookup each) "
        "and print every mismatch with both sides. The period is [--since, --until): by default "
        "the last 24 hours. Exit 0: all agree (payouts the worker has yet to finish are listed "
        "as UNFINISHED and do not count); 1: at least one mismatch; 2: no mismatch, but the "
        "provider did not answer for some payouts (COULD NOT CHECK), or bad arguments."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--since", help=f"created at or after (default: --until minus 24 h): {INSTANT_FORMATS}"
        )
        parser.add_argument("--until", help=f"created before (default: now): {INSTANT_FORMATS}")

    def handle(self, *args: Any, **options: Any) -> None:
        until = _instant("--until", options["until"]) if options["until"] else timezone.now()
        since = (
            _instant("--since", options["since"]) if options["since"] else until - DEFAULT_PERIOD
        )
        if since >= until:
            raise CommandError("--since must be before --until.", returncode=UNCHECKED_EXIT)

        counts: Counter[Verdict] = Counter()
        for check in payouts_reconcile(since=since, until=until):
            counts[check.verdict] += 1
            if check.verdict is not Verdict.AGREES:
                self.stdout.write(check.describe())
        summary = (
            f"{counts.total()} payouts created in [{since.isoformat()}, {until.isoformat()}): "
            f"{counts[Verdict.AGREES]} agree, {counts[Verdict.MISMATCH]} mismatch, "
            f"{counts[Verdict.UNFINISHED]} unfinished, "
            f"{counts[Verdict.UNCHECKED]} could not be checked."
        )
        self.stdout.write(summary)
        if counts[Verdict.MISMATCH]:
            raise CommandError(
                f"{counts[Verdict.MISMATCH]} payout(s) contradict the provider.",
                returncode=MISMATCH_EXIT,
            )
        if counts[Verdict.UNCHECKED]:
            raise CommandError(
                f"The provider did not answer for {counts[Verdict.UNCHECKED]} payout(s): "
                "run again later.",
                returncode=UNCHECKED_EXIT,
            )


def _instant(option: str, text: str) -> datetime:
    """The same instants the API's list filters take (one definition of what is accepted)."""
    try:
        instant: datetime = InstantField().to_internal_value(text)
    except ValidationError:
        raise CommandError(
            f"{option} {text!r}: use {INSTANT_FORMATS}.", returncode=UNCHECKED_EXIT
        ) from None
    return instant
