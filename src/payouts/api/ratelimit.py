"""Per-client rate limits: a read and a write budget per API client, shared through Redis.

Every authenticated API request spends one unit of its client's read budget (GET, HEAD,
OPTIONS) or write budget (everything else). A client with several keys has one pair of budgets:
the limits are a client's, overridable per client in the admin. The check is GCRA (the generic
cell rate algorithm, as the redis-cell module implements it) in one Lua script run by redis-py's
Script (EVALSHA): one Redis round-trip, atomic across every process and host, on Redis's clock,
with nothing to clean up (a key expires once its budget is full again). Why not a library: the
`limits` package answers "allowed?" and "how many left?" in two round-trips, and DRF's own
throttles keep a list per client in the cache with a racy read-then-write.

Redis unreachable: the request is let through (fail open), counted in
RATE_LIMIT_BACKEND_ERRORS, and a warning is logged at most once a minute per process; Redis is
not asked again for five seconds, so a hung Redis costs one short timeout
(PAYOUTS_RATE_LIMIT_TIMEOUT_SECONDS) per process every five seconds, not one per request.
"""

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.http import HttpRequest, HttpResponse
from redis.backoff import NoBackoff
from redis.retry import Retry
from rest_framework.permissions import SAFE_METHODS
from rest_framework.request import Request
from rest_framework.throttling import BaseThrottle

from ..models import ApiClient
from ..observability.metrics import RATE_LIMIT_BACKEND_ERRORS, RATE_LIMITED

logger = logging.getLogger(__name__)

# After a failed check, Redis is left alone this long (requests pass unchecked meanwhile).
BACKEND_RETRY_SECONDS = 5.0
# The fail-open warning, at most this often per process.
WARN_EVERY_SECONDS = 60.0
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")

# KEYS[1]: the budget; ARGV[1]: requests allowed per second. The key holds the budget's
# theoretical arrival time (TAT, microseconds on Redis's clock, which every process shares):
# each request moves it one emission interval (1 s / limit) on; a request is refused while the
# TAT is more than a second ahead of now. Integer microseconds throughout: Lua numbers are
# doubles, exact for these magnitudes. Returns {allowed, remaining, retry_us, reset_us}.
GCRA = """
local limit = tonumber(ARGV[1])
local period = 1000000
local interval = math.max(1, math.floor(period / limit))
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allowed_at = new_tat - period
if now < allowed_at then
  return {0, 0, allowed_at - now, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
local remaining = math.min(limit - 1, math.floor((now - allowed_at) / interval))
return {1, remaining, 0, new_tat - now}
"""


@dataclass(frozen=True)
class Budget:
    """Reads or writes: which requests spend it and where its limit is configured."""

    name: str
    setting: str  # the default, requests per second
    field: str  # the client's override (None: the default)

    def limit_of(self, client: ApiClient) -> int:
        override = getattr(client, self.field)
        return int(getattr(settings, self.setting) if override is None else override)


READS = Budget("read", "PAYOUTS_RATE_LIMIT_READS_PER_SECOND", "rate_limit_reads_per_second")
WRITES = Budget("write", "PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND", "rate_limit_writes_per_second")


def budget_of(method: str) -> Budget:
    return READS if method in SAFE_METHODS else WRITES


@dataclass(frozen=True)
class Decision:
    """One check's answer, in the units the headers use (whole seconds)."""

    allowed: bool
    limit: int
    remaining: int
    retry_after: int  # seconds, >= 1 when refused
    reset: int  # seconds until the budget is full again

    @classmethod
    def from_script(cls, limit: int, reply: list[int]) -> "Decision":
        allowed, remaining, retry_us, reset_us = (int(value) for value in reply)
        return cls(
            allowed=bool(allowed),
            limit=limit,
            remaining=max(remaining, 0),
            retry_after=0 if allowed else max(1, math.ceil(retry_us / 1e6)),
            reset=math.ceil(reset_us / 1e6),
        )

    def headers(self) -> dict[str, str]:
        """The IETF draft-ietf-httpapi-ratelimit-headers fields, as GitHub sends them."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


class RedisLimiter:
    """The budgets' store: a connection pool per process and the registered script."""

    def __init__(self, url: str) -> None:
        self.url = url
        timeout = settings.PAYOUTS_RATE_LIMIT_TIMEOUT_SECONDS
        # On every request: short timeouts and no retries (redis-py retries three times with
        # backoff by default), so an unreachable Redis costs at most one timeout.
        self.client = redis.Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
        )
        # EVALSHA, and EVAL once if Redis does not have the script yet (redis-py's Script).
        self.script = self.client.register_script(GCRA)
        self._pause_until = 0.0
        self._warned_at = -math.inf

    def check(self, key: str, limit: int) -> Decision | None:
        """Spend one unit of the budget at `key`; None when Redis could not say (fail open)."""
        if time.monotonic() < self._pause_until:
            RATE_LIMIT_BACKEND_ERRORS.inc()
            return None
        try:
            reply = self.script(keys=[key], args=[limit])
        except redis.RedisError as exc:
            self._failed(exc)
            return None
        return Decision.from_script(limit, reply)

    def _failed(self, exc: redis.RedisError) -> None:
        now = time.monotonic()
        self._pause_until = now + BACKEND_RETRY_SECONDS
        RATE_LIMIT_BACKEND_ERRORS.inc()
        if now - self._warned_at >= WARN_EVERY_SECONDS:
            self._warned_at = now
            logger.warning(
                "rate limits not enforced: Redis did not answer (%s: %s); requests pass "
                "unchecked (fail open), counted in payouts_rate_limit_backend_errors",
                type(exc).__name__,
                exc,
            )


_limiter: RedisLimiter | None = None
_limiter_lock = threading.Lock()


def limiter() -> RedisLimiter | None:
    """This process's limiter for the configured Redis; None when there is no Redis to share
    budgets through (Celery's in-memory broker of a test run without servers)."""
    global _limiter
    url = settings.PAYOUTS_RATE_LIMIT_REDIS_URL or settings.CELERY_BROKER_URL
    current = _limiter
    if current is not None and current.url == url:
        return current
    if not url.startswith(REDIS_SCHEMES):
        return None
    with _limiter_lock:
        if _limiter is None or _limiter.url != url:
            _limiter = RedisLimiter(url)
        return _limiter


def budget_key(client: ApiClient, budget: Budget) -> str:
    # Namespaced by the deployment's queue name, as its tasks are: two deployments (or a test
    # run) on one Redis never share budgets.
    return f"{settings.CELERY_TASK_DEFAULT_QUEUE}:ratelimit:{client.pk}:{budget.name}"


# Set on the Django request for RateLimitHeadersMiddleware.
DECISION_ATTRIBUTE = "payouts_rate_limit"


class ApiClientRateThrottle(BaseThrottle):
    """DRF throttle (after authentication): one unit of the client's read or write budget.

    Requests without an authenticated client are not limited here (they answer 401).
    """

    def __init__(self) -> None:
        self.retry_after = 0

    def allow_request(self, request: Request, view: Any) -> bool:
        client = request.user
        if not isinstance(client, ApiClient):
            return True
        budget = budget_of(request.method or "GET")
        limit = budget.limit_of(client)
        store = limiter() if limit > 0 else None  # 0: unlimited
        decision = store.check(budget_key(client, budget), limit) if store else None
        if decision is None:
            return True
        setattr(request._request, DECISION_ATTRIBUTE, decision)
        if decision.allowed:
            return True
        RATE_LIMITED.labels(budget=budget.name).inc()
        self.retry_after = decision.retry_after
        return False

    def wait(self) -> float:
        return self.retry_after  # DRF's Throttled, then errors.py: the 429 with Retry-After


class RateLimitHeadersMiddleware:
    """Adds the RateLimit-* headers to every response, 2xx or 429, whose request was checked."""

    def __init__(self, get_response: Any) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response: HttpResponse = self.get_response(request)
        decision: Decision | None = getattr(request, DECISION_ATTRIBUTE, None)
        if decision is not None:
            for name, value in decision.headers().items():
                response[name] = value
        return response
