"""Processing a payout: one attempt of the worker, through the provider.

An attempt is one delivery of the processing task that holds the payout's lease. It counts
one against the payout's retry budget (PAYOUTS_MAX_RETRIES retries after the first attempt),
whatever it does or however it fails, so nothing loops for ever. What it does:

1. If an earlier call's outcome is unknown, or the budget is spent after a call started, ask
   the provider (`lookup`) before anything else. Its settled answer finishes the payout.
2. With budget left, mark the execute as started (a compare-and-set a cancel races against),
   then `execute`. Executed, declined or canceled: finish. Not executed: retry later.
   Unknown: retry later, starting with a lookup.
3. With the budget spent and the provider still without an answer: never guess. A payout the
   provider confirms it does not have is voided there (`cancel`) before it is FAILED; one whose
   outcome stays unknown is looked up again on a backoff, and flagged for review after
   PAYOUTS_REVIEW_AFTER_SECONDS.
"""

import logging
import random
import uuid
from collections.abc import Callable
from datetime import timedelta

from django.conf import settings
from django.db import InterfaceError, OperationalError
from django.db.models import Q
from django.utils import timezone

from ..heartbeat import lease_heartbeat
from ..models import EventActor, PayoutRequest, PayoutStatus, ProviderCallKind
from ..observability.metrics import PAYOUT_RETRIES
from ..providers import (
    CancelAnswer,
    Canceled,
    Declined,
    ExecuteAnswer,
    Executed,
    LookupAnswer,
    NotExecuted,
    NotFound,
    PayoutInstruction,
    PayoutProvider,
    Pending,
    Settled,
    Unknown,
    get_provider,
)
from ..transitions import (
    lease_extend,
    lease_take_over,
    mark_execute_started,
    outcome_unknown_clear,
    outcome_unknown_mark,
    review_flag,
    transition,
)
from .provider_calls import ADAPTER_ERROR, Answer, apply_settled, call_provider, cancel_requested
from .queueing import lease_deadline

logger = logging.getLogger(__name__)


class AttemptDeferred(Exception):
    """Try this payout again in `countdown` seconds (its lease covers the wait)."""

    def __init__(self, countdown: float, reason: str) -> None:
        super().__init__(reason)
        self.countdown = countdown


def payout_process(
    *,
    payout_id: uuid.UUID,
    attempt_id: str,
    recovered: bool = False,
    provider: PayoutProvider | None = None,
) -> PayoutStatus | None:
    """One processing attempt: take the lease, work the payout, return the status it is left in.

    `attempt_id` identifies the delivery (the Celery task id, which a retry keeps). Safe to run
    any number of times for the same payout: the claim NEW -> PROCESSING and the lease takeover
    are compare-and-set updates, so of concurrent deliveries only the lease holder works on it
    until its lease expires (the heartbeat renews it meanwhile); the others return at once.
    Raises AttemptDeferred when the task should run again later.
    """
    actor = EventActor.RECOVERY if recovered else EventActor.WORKER
    claimed = transition(
        payout_id,
        to=PayoutStatus.PROCESSING,
        actor=actor,
        reason="claimed",
        lease_owner=attempt_id,
        lease_expires_at=lease_deadline(),
        count_attempt=True,
    ) is not None or lease_take_over(
        # Already PROCESSING: resume if the lease is ours (a retry, a redelivery of our message)
        # or has expired (its holder died); a live lease belongs to a delivery still at work.
        payout_id,
        owner=attempt_id,
        expires_at=lease_deadline(),
    )
    payout = PayoutRequest.objects.filter(pk=payout_id).first()
    if not claimed or payout is None or payout.status != PayoutStatus.PROCESSING:
        # Finished or canceled, or another delivery holds the lease: nothing to do here.
        return PayoutStatus(payout.status) if payout else None
    attempt = _Attempt(payout, attempt_id, actor, provider)
    # The longest an attempt can honestly take: a lookup, an execute and a void, each bounded
    # by its deadline. A hung one (an adapter ignoring its deadline) loses its lease after this.
    longest = 3 * settings.PAYOUTS_PROVIDER_TIMEOUT_SECONDS + settings.PAYOUTS_LEASE_SECONDS
    with lease_heartbeat.hold(payout.pk, attempt_id, at_most=longest):
        try:
            return attempt.run()
        except (AttemptDeferred, OperationalError, InterfaceError):
            raise  # a retry, or our own database unavailable: the task tries again later
        except Exception as exc:
            # A bug, here or in what we call. It spends the budget like any failed attempt.
            logger.exception("payout %s: attempt %d failed", payout.pk, payout.attempts)
            return attempt.unresolved(f"{type(exc).__name__}: {exc}", error=True)


class _Attempt:
    def __init__(
        self,
        payout: PayoutRequest,
        attempt_id: str,
        actor: EventActor,
        provider: PayoutProvider | None,
    ) -> None:
        self.payout = payout
        self.attempt_id = attempt_id
        self.actor = actor
        self._provider = provider
        self.key = str(payout.pk)

    @property
    def provider(self) -> PayoutProvider:
        # Resolved inside the attempt: a misconfigured adapter spends the budget like any error.
        if self._provider is None:
            self._provider = get_provider()
        return self._provider

    @property
    def budget_left(self) -> bool:
        """May this attempt execute? The first attempt plus PAYOUTS_MAX_RETRIES retries."""
        return self.payout.attempts <= settings.PAYOUTS_MAX_RETRIES + 1

    @property
    def retries_left(self) -> bool:
        """Does another attempt remain after this one?"""
        return self.payout.attempts <= settings.PAYOUTS_MAX_RETRIES

    def run(self) -> PayoutStatus:
        payout = self.payout
        if payout.outcome_unknown_since is not None or (
            not self.budget_left and payout.execute_started_at is not None
        ):
            match known := self._call(ProviderCallKind.LOOKUP, self._lookup):
                case Executed() | Declined() | Canceled():
                    return self.settle(known)
                case Pending():
                    return self.unresolved("the provider has the payout pending")
                case Unknown():
                    return self.unresolved(
                        f"lookup: {known.code}: {known.reason}", error=known.code == ADAPTER_ERROR
                    )
                case NotFound():
                    # No payout was ever accepted under the key: what we sent never arrived.
                    outcome_unknown_clear(payout.pk)
                    payout.outcome_unknown_since = None
        if not self.budget_left:
            return self.give_up("retries exhausted")

        if not mark_execute_started(payout.pk, owner=self.attempt_id):
            # Canceled meanwhile (before any call: the provider is never asked), or our lease
            # went to another delivery.
            payout.refresh_from_db()
            return PayoutStatus(payout.status)
        payout.execute_started_at = payout.execute_started_at or timezone.now()
        match answer := self._call(ProviderCallKind.EXECUTE, self._execute):
            case Executed() | Declined() | Canceled():
                return self.settle(answer)
            case NotExecuted():
                if self.retries_left:
                    self.defer(f"{answer.code}: {answer.reason}")
                return self.give_up(f"{answer.code}: {answer.reason}")
            case Unknown():
                outcome_unknown_mark(payout.pk)
                payout.outcome_unknown_since = payout.outcome_unknown_since or timezone.now()
                return self.unresolved(
                    f"execute: {answer.code}: {answer.reason}", error=answer.code == ADAPTER_ERROR
                )
            case _:
                raise AssertionError(f"unexpected answer {answer!r}")

    def settle(self, answer: Settled) -> PayoutStatus:
        """Apply the provider's final answer; its Canceled is CANCELED only if someone asked.

        A key the worker voided itself (give_up, in an attempt that died before it could write
        FAILED) answers Canceled too: no money moved, but nobody canceled, so it is FAILED.
        """
        if isinstance(answer, Canceled) and not cancel_requested(self.payout):
            return self.fail(
                "provider_unavailable",
                "The provider did not execute the payout; it was voided there after "
                f"{self.payout.attempts} attempts.",
            )
        return apply_settled(self.payout, answer, actor=self.actor)

    # --- the provider's three calls, recorded -----------------------------------------------

    def _call(self, kind: ProviderCallKind, call: Callable[[float], Answer]) -> Answer | Unknown:
        return call_provider(
            self.payout,
            kind,
            call,
            timeout=settings.PAYOUTS_PROVIDER_TIMEOUT_SECONDS,
            requested_by=self.actor,
            attempt=self.payout.attempts,
        )

    def _execute(self, deadline: float) -> ExecuteAnswer:
        payout = self.payout
        instruction = PayoutInstruction(
            idempotency_key=self.key,
            amount=payout.amount,
            currency=payout.currency,
            destination=payout.destination,
        )
        return self.provider.execute(instruction, deadline=deadline)

    def _lookup(self, deadline: float) -> LookupAnswer:
        return self.provider.lookup(self.key, deadline=deadline)

    def _cancel(self, deadline: float) -> CancelAnswer:
        return self.provider.cancel(self.key, deadline=deadline)

    # --- when the provider did not finish it ------------------------------------------------

    def defer(self, reason: str) -> None:
        """Retry after a backoff (exponential, full jitter); the lease covers the wait."""
        ceiling = min(
            settings.PAYOUTS_RETRY_BACKOFF_MAX_SECONDS,
            settings.PAYOUTS_RETRY_BACKOFF_SECONDS * 2 ** (self.payout.attempts - 1),
        )
        countdown = random.uniform(0, ceiling)
        until = timezone.now() + timedelta(seconds=countdown + settings.PAYOUTS_LEASE_SECONDS)
        lease_extend(self.payout.pk, owner=self.attempt_id, until=until)
        PAYOUT_RETRIES.inc()
        logger.info(
            "payout %s: attempt %d did not finish it (%s); retrying in %.1f s",
            self.payout.pk,
            self.payout.attempts,
            reason,
            countdown,
        )
        raise AttemptDeferred(countdown, reason)

    def unresolved(self, reason: str, *, error: bool = False) -> PayoutStatus:
        """No answer settles the payout yet: retry while the budget lasts, else look it up later.

        Past the budget the payout stays PROCESSING: its lease is set to the next re-check and
        the recovery sweep (beat) queues it then, with a backoff up to
        PAYOUTS_RECHECK_MAX_SECONDS. It is flagged for review once its outcome has been unknown
        for PAYOUTS_REVIEW_AFTER_SECONDS, or at once if the budget went on an `error` (a bug of
        ours or of the adapter: waiting will not fix it).
        """
        if self.retries_left:
            self.defer(reason)
        payout = self.payout
        if payout.execute_started_at is None and payout.outcome_unknown_since is None:
            # Nothing was ever sent: no money can have moved, and no answer is to be awaited.
            return self.give_up(reason)
        now = timezone.now()
        # Unknown since the call that left it so; or, if the provider keeps refusing every
        # call (the void too), since the first call was sent.
        unknown_for = now - (payout.outcome_unknown_since or payout.execute_started_at or now)
        review_after = timedelta(seconds=settings.PAYOUTS_REVIEW_AFTER_SECONDS)
        needs_review = error or unknown_for >= review_after
        if needs_review and review_flag(
            payout.pk, reason=f"no answer of the provider after the retries: {reason}"
        ):
            logger.error(
                "payout %s flagged for review: %s (outcome unknown for %s)",
                payout.pk,
                reason,
                unknown_for,
            )
        past = max(payout.attempts - settings.PAYOUTS_MAX_RETRIES - 1, 0)
        delay = min(
            settings.PAYOUTS_RECHECK_MAX_SECONDS,
            settings.PAYOUTS_RETRY_BACKOFF_SECONDS * 2 ** min(past, 20),
        )
        lease_extend(payout.pk, owner=self.attempt_id, until=now + timedelta(seconds=delay))
        logger.warning(
            "payout %s: outcome not known (%s); it stays PROCESSING, next look in %d s",
            payout.pk,
            reason,
            delay,
        )
        return PayoutStatus.PROCESSING

    def give_up(self, reason: str) -> PayoutStatus:
        """FAILED, once the provider cannot execute it any more; no final status on a guess.

        Never sent: FAILED at once. Sent, and the provider has no payout under the key (it said
        so, or refused every call): the key is voided with `cancel` first, so a request still
        in flight cannot be executed later, and only a confirmed void fails the payout.
        """
        payout = self.payout
        code = "provider_unavailable" if payout.execute_started_at else "processing_error"
        if payout.execute_started_at is not None:
            match void := self._call(ProviderCallKind.CANCEL, self._cancel):
                case Executed() | Declined():
                    return apply_settled(payout, void, actor=self.actor)
                case Unknown():
                    return self.unresolved(
                        f"void: {void.code}: {void.reason}", error=void.code == ADAPTER_ERROR
                    )
                case Canceled():
                    pass
                case _:
                    raise AssertionError(f"unexpected answer {void!r}")
        why = (
            f"The provider did not execute the payout in {payout.attempts} attempts ({reason})."
            if code == "provider_unavailable"
            else f"The payout could not be processed ({reason}); the provider was never called."
        )
        logger.warning("payout %s: giving up, %s: %s", payout.pk, code, reason)
        return self.fail(code, why)

    def fail(self, code: str, why: str) -> PayoutStatus:
        """FAILED without a decline: only while this attempt holds the lease, and only for a
        payout never sent if the code says so (a call may start between our read and now)."""
        only_if = Q(lease_owner=self.attempt_id)
        if code == "processing_error":
            only_if &= Q(execute_started_at__isnull=True)
        moved = transition(
            self.payout.pk,
            to=PayoutStatus.FAILED,
            actor=self.actor,
            reason=f"{code}: {why}"[:500],
            only_if=only_if,
            failure_code=code,
            failure_reason=why[:500],
        )
        if moved:
            return PayoutStatus.FAILED
        self.payout.refresh_from_db()
        return PayoutStatus(self.payout.status)
