"""Settings for the Payout Requests Service.

Twelve-factor: every deployment difference is an environment variable with a safe default
(listed in `.env.example`). Production unless DJANGO_ENV=local; production refuses DEBUG and a
missing or weak secret key. With DJANGO_ENV=local and nothing else the service runs embedded:
SQLite in `.local/` and a Redis broker on localhost (which `make run` starts for you).
"""

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_float, env_int, env_int_list, env_list, env_str
from config.logs import log_format_from_env, logging_config
from config.queues import QueueLayout

BASE_DIR = Path(__file__).resolve().parent.parent  # src/
REPO_DIR = BASE_DIR.parent

# --- Core -------------------------------------------------------------------------------------

# Fail closed: production unless the environment says DJANGO_ENV=local. `make run` and the test
# runner (manage.py test) set local; every deployment (the image, compose) is production.
DJANGO_ENV = env_str("DJANGO_ENV", "production")
if DJANGO_ENV not in {"production", "local"}:
    raise ImproperlyConfigured(f"DJANGO_ENV must be production or local, got {DJANGO_ENV!r}")
PRODUCTION = DJANGO_ENV == "production"

INSECURE_SECRET_KEY = "django-insecure-local-only-never-use-in-production"


def read_secret_key() -> str:
    """DJANGO_SECRET_KEY, else the file DJANGO_SECRET_KEY_FILE names, else (local only) a
    public development key.

    The image's entrypoint creates that file in a volume on first start when no key is given,
    so `docker compose up` needs no setup and `docker compose exec` finds the same key.
    """
    if key := os.environ.get("DJANGO_SECRET_KEY", "").strip():
        return key
    if path := os.environ.get("DJANGO_SECRET_KEY_FILE", "").strip():
        try:
            key = Path(path).read_text("utf-8").strip()
        except OSError as exc:
            raise ImproperlyConfigured(
                f"DJANGO_SECRET_KEY_FILE={path!r} cannot be read: {exc.strerror}"
            ) from None
        if not key:
            raise ImproperlyConfigured(f"DJANGO_SECRET_KEY_FILE={path!r} is empty")
        return key
    return "" if PRODUCTION else INSECURE_SECRET_KEY


def is_strong_secret_key(key: str) -> bool:
    # Django's own deploy check (security.W009) uses the same bar.
    return not key.startswith("django-insecure") and len(set(key)) >= 5 and len(key) >= 50


SECRET_KEY = read_secret_key()
DEBUG = env_bool("DJANGO_DEBUG", False)
# Keep localhost and 127.0.0.1: health checks call them.
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", "")

# Clients reach the service over HTTPS through a proxy that terminates TLS and sets
# X-Forwarded-Proto itself (otherwise a client could claim HTTPS).
BEHIND_TLS_PROXY = env_bool("DJANGO_BEHIND_TLS_PROXY", False)
# The service answers only to loopback names: the zero-config `docker compose up` (published on
# 127.0.0.1) and `make run`. Plain http is then all there is, and no remote client is served.
LOOPBACK_HOSTS = {"localhost", "127.0.0.1", "[::1]"}
LOOPBACK_ONLY = set(ALLOWED_HOSTS) <= LOOPBACK_HOSTS
# The deploy checks that only make sense when clients use HTTPS (manage.py check --deploy).
TLS_ONLY_CHECKS = [
    "security.W004",  # SECURE_HSTS_SECONDS: HSTS over plain http is ignored by browsers
    "security.W008",  # SECURE_SSL_REDIRECT: there is no https to redirect to
    "security.W012",  # SESSION_COOKIE_SECURE: a Secure cookie is never sent back over http
    "security.W016",  # CSRF_COOKIE_SECURE: likewise, the admin login would fail
]
SILENCED_SYSTEM_CHECKS: list[str] = []

if PRODUCTION:
    if DEBUG:
        raise ImproperlyConfigured("DJANGO_DEBUG must be off when DJANGO_ENV=production.")
    if not is_strong_secret_key(SECRET_KEY):
        raise ImproperlyConfigured(
            "DJANGO_ENV=production needs a secret key: set DJANGO_SECRET_KEY (50+ random "
            'characters, e.g. python -c "import secrets; print(secrets.token_urlsafe(50))") or '
            "DJANGO_SECRET_KEY_FILE, or set DJANGO_ENV=local for a local run."
        )
    SECURE_CONTENT_TYPE_NOSNIFF = True
    if BEHIND_TLS_PROXY:
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
        SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", True)
        # The probes are called over plain http from inside (container health checks, load
        # balancers): a redirect would fail them.
        SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
        SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 31_536_000)
        SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
        SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", True)
        SESSION_COOKIE_SECURE = True
        CSRF_COOKIE_SECURE = True
    elif LOOPBACK_ONLY:
        # Plain http on loopback: the TLS-only checks cannot pass and do not apply, by name.
        SILENCED_SYSTEM_CHECKS = list(TLS_ONLY_CHECKS)
    else:
        # Served to other hosts without the TLS setting: cookies stay HTTPS-only (fail closed)
        # and check --deploy keeps warning about HSTS and the redirect.
        SESSION_COOKIE_SECURE = True
        CSRF_COOKIE_SECURE = True
        SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
        SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_api_key",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "axes",
    "payouts",
    "webhooks",
]

MIDDLEWARE = [
    # First: every line logged while a request is served carries its id (config/request_id.py).
    "config.request_id.request_id_middleware",
    # Second: its latency covers the whole stack (payouts/observability/http.py).
    "payouts.observability.http.http_metrics_middleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "payouts.api.ratelimit.RateLimitHeadersMiddleware",
    # Last, as django-axes asks.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------

LOCAL_DATA_DIR = Path(env_str("PAYOUTS_LOCAL_DATA_DIR", str(REPO_DIR / ".local")))
# Persistent connections: opening a PostgreSQL connection per request costs ~10 ms.
DATABASE_CONN_MAX_AGE = env_int("DATABASE_CONN_MAX_AGE", 600)

# PostgreSQL connections come from a psycopg pool per process. Persistent connections
# (CONN_MAX_AGE) would not do for the worker: Celery closes Django's connections around every
# task, and with a pool that close only hands the connection back.
DATABASE_POOL = env_bool("DATABASE_POOL", True)
# Per process; a process needs at most one per thread (gunicorn threads, worker threads).
DATABASE_POOL_MAX_SIZE = env_int("DATABASE_POOL_MAX_SIZE", 32)
# How long a request waits for a pooled connection before it answers 503: with the database
# down (the pool cannot connect) or every connection busy. Short, so an outage fails fast
# instead of holding every web thread.
DATABASE_POOL_TIMEOUT_SECONDS = env_float("DATABASE_POOL_TIMEOUT_SECONDS", 1.0)

if env_str("DATABASE_URL", ""):
    DATABASES = {"default": dj_database_url.parse(os.environ["DATABASE_URL"])}
    # Health checks: hand out only live connections, so a database restart fails no requests.
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # A hung database host: give up connecting after libpq's minimum (2 s), whether a
        # request connects (no pool) or the pool's background workers do.
        DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", 2)
    if DATABASE_POOL and DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        DATABASES["default"]["CONN_MAX_AGE"] = 0  # the pool keeps them instead
        DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
            "min_size": 1,
            "max_size": DATABASE_POOL_MAX_SIZE,
            "timeout": DATABASE_POOL_TIMEOUT_SECONDS,
            # A failed connect is retried with doubling delays until this many seconds have
            # passed (psycopg's default, 300, would let a process keep answering 503 for as
            # long as the outage lasted once the database is back). Then the next request
            # starts a fresh attempt at once.
            "reconnect_timeout": 2,
        }
    else:
        DATABASES["default"]["CONN_MAX_AGE"] = DATABASE_CONN_MAX_AGE
else:
    # Embedded mode. Django's SQLite defaults (deferred transactions, rollback journal, 5 s
    # timeout) make concurrent writers from the API and the worker fail with "database is
    # locked"; IMMEDIATE transactions + WAL + a generous busy timeout serialize them instead.
    LOCAL_DATA_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(LOCAL_DATA_DIR / "db.sqlite3"),
            "CONN_MAX_AGE": DATABASE_CONN_MAX_AGE,
            "OPTIONS": {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
    }

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Auth, i18n, static -----------------------------------------------------------------------

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# No API body is anywhere near this; refusing larger ones bounds what a request can make us buffer.
DATA_UPLOAD_MAX_MEMORY_SIZE = 256 * 1024

STATIC_URL = "static/"
# Where collectstatic puts the admin and Swagger UI assets (the Docker image sets it and collects
# at build time). Unset, whitenoise serves them straight from the installed apps (make run).
STATIC_ROOT = env_str("DJANGO_STATIC_ROOT", "") or None
WHITENOISE_USE_FINDERS = STATIC_ROOT is None

# --- Logging ----------------------------------------------------------------------------------

# JSON lines in production, `time LEVEL logger message` locally (LOG_FORMAT overrides), with the
# request id, task id and payout id of the line's context (config/logs.py).
LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
LOG_FORMAT = log_format_from_env()
LOGGING = logging_config(log_format=LOG_FORMAT, level=LOG_LEVEL)

# --- Metrics ----------------------------------------------------------------------------------


def read_metrics_token() -> str:
    """PAYOUTS_METRICS_TOKEN, else the file PAYOUTS_METRICS_TOKEN_FILE names (when it exists).

    Empty means /metrics is not served at all. The image's entrypoint creates that file on
    first start when no token is given (docker-entrypoint.sh), as it does the secret key;
    compose names it, so its /metrics is always behind a random token.
    """
    if token := env_str("PAYOUTS_METRICS_TOKEN", "").strip():
        return token
    if path := env_str("PAYOUTS_METRICS_TOKEN_FILE", "").strip():
        try:
            return Path(path).read_text("utf-8").strip()
        except FileNotFoundError:
            return ""
        except OSError as exc:
            raise ImproperlyConfigured(
                f"PAYOUTS_METRICS_TOKEN_FILE={path!r} cannot be read: {exc.strerror}"
            ) from None
    return ""


PAYOUTS_METRICS_TOKEN = read_metrics_token()
if PAYOUTS_METRICS_TOKEN and len(PAYOUTS_METRICS_TOKEN) < 16:
    raise ImproperlyConfigured("PAYOUTS_METRICS_TOKEN must be at least 16 characters.")
# The port each Celery worker serves its own /metrics on (0: none; it needs the token too).
PAYOUTS_WORKER_METRICS_PORT = env_int("PAYOUTS_WORKER_METRICS_PORT", 0)
# django-prometheus: no export server or migration metrics of its own; /metrics is ours.
PROMETHEUS_EXPORT_MIGRATIONS = False

# --- REST API ---------------------------------------------------------------------------------

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["payouts.api.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["payouts.api.auth.IsApiClient"],
    "DEFAULT_PARSER_CLASSES": ["payouts.api.parsers.StrictJSONParser"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "EXCEPTION_HANDLER": "payouts.api.errors.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # After authentication: per API client, a read and a write budget (api/ratelimit.py).
    "DEFAULT_THROTTLE_CLASSES": ["payouts.api.ratelimit.ApiClientRateThrottle"],
    "UNAUTHENTICATED_USER": None,
}

# Requests per second per API client (all its keys together), reads (GET, HEAD, OPTIONS) and
# writes (every other method) apart; Stripe's live-mode figure. 0: unlimited. A client's own
# limits (admin, API clients) win over these.
PAYOUTS_RATE_LIMIT_READS_PER_SECOND = env_int("PAYOUTS_RATE_LIMIT_READS_PER_SECOND", 100)
PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND = env_int("PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND", 100)
if min(PAYOUTS_RATE_LIMIT_READS_PER_SECOND, PAYOUTS_RATE_LIMIT_WRITES_PER_SECOND) < 0:
    raise ImproperlyConfigured("PAYOUTS_RATE_LIMIT_*_PER_SECOND must be 0 (unlimited) or more.")
# The Redis every process shares the budgets through; empty: the broker's (CELERY_BROKER_URL).
# Unreachable, requests are let through (fail open), logged and counted.
PAYOUTS_RATE_LIMIT_REDIS_URL = env_str("PAYOUTS_RATE_LIMIT_REDIS_URL", "")
# The longest a check may wait for Redis (connect or answer), on every request. Well under the
# broker's timeout: a create with the broker's Redis frozen pays both (the check, then the
# bounded publish) and must still answer in 1.5 s. Redis answers in about a millisecond.
PAYOUTS_RATE_LIMIT_TIMEOUT_SECONDS = env_float("PAYOUTS_RATE_LIMIT_TIMEOUT_SECONDS", 0.25)

# --- Admin login: brute-force lockout (django-axes) -------------------------------------------

# Five failed logins for one username from one address lock that pair out for 15 minutes (the
# right password included); a success resets the count. Attempts are rows in axes's own tables.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = 5
AXES_COOLOFF_TIME = timedelta(minutes=15)
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
# The client's address: REMOTE_ADDR, or behind the TLS proxy the address it appended to
# X-Forwarded-For (config/proxy.py).
AXES_CLIENT_IP_CALLABLE = "config.proxy.client_ip"

SPECTACULAR_SETTINGS = {
    "TITLE": "Payout Requests API",
    "DESCRIPTION": (
        "Create payout requests idempotently by `client_reference`, follow them through "
        "NEW -> PROCESSING -> PAID / FAILED, cancel them while NEW or PROCESSING.\n\n"
        "Authenticate with `Authorization: Bearer <api key>`. Every error is an RFC 9457 "
        "problem document (`application/problem+json`) with a stable machine `code`.\n\n"
        "Rate limits: each API client has a read budget (GET, HEAD, OPTIONS) and a write "
        "budget (every other method) of requests per second, 100 each unless configured for "
        "it. Answers carry `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`; over "
        "the limit the answer is 429 `rate_limited` with `Retry-After`."
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.AllowAny"],
    "SERVE_AUTHENTICATION": [],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # The default hook, then the rate-limit headers on every operation (api/schema.py).
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "payouts.api.schema.rate_limit_headers",
        "payouts.api.schema.request_id_headers",
    ],
    "ENUM_NAME_OVERRIDES": {
        "PayoutStatusEnum": "payouts.models.PayoutStatus",
        "EventActorEnum": "payouts.models.EventActor",
        "EventTypeEnum": "webhooks.models.EventType",
        "SubscribedEventTypeEnum": "webhooks.api.serializers.EVENT_CHOICES",
    },
}

# --- Celery -----------------------------------------------------------------------------------

CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "redis://127.0.0.1:6379/0")
CELERY_TASK_IGNORE_RESULT = True
# The queue the API publishes to and the worker consumes. The test runner gives each run its own,
# so tests against a shared Redis never take (or purge) a live deployment's tasks.
CELERY_TASK_DEFAULT_QUEUE = env_str("CELERY_TASK_QUEUE", "payouts")
# The recovery sweep and the webhooks have queues of their own (config/queues.py); a worker
# started without -Q consumes every queue listed here.
CELERY_QUEUE_LAYOUT = QueueLayout.named_after(CELERY_TASK_DEFAULT_QUEUE)
PAYOUTS_SWEEP_QUEUE = CELERY_QUEUE_LAYOUT.sweep
PAYOUTS_WEBHOOKS_QUEUE = CELERY_QUEUE_LAYOUT.webhooks
CELERY_TASK_QUEUES = CELERY_QUEUE_LAYOUT.queues
CELERY_TASK_ROUTES = CELERY_QUEUE_LAYOUT.routes
# A task is acknowledged only after it finished: a worker that dies mid-task leaves its message
# unacknowledged, and Redis hands it out again after the visibility timeout (the prefork pool
# also rejects it at once when a child dies). Prefetch 1 keeps a busy worker from hoarding
# messages others could run.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Reconnect to the broker for as long as it takes (Celery's default gives up after 100 tries,
# about 46 minutes, and the worker and beat would exit): an outage must end in recovery.
CELERY_BROKER_CONNECTION_MAX_RETRIES = None
# Provider calls spend their time waiting on the network: a thread pool overlaps them, so a 1 s
# provider latency does not cap a worker at one payout per second per process. Threads ignore
# Celery's time limits below; every provider call carries its own deadline instead
# (PAYOUTS_PROVIDER_TIMEOUT_SECONDS). With "prefork" the time limits apply as well.
CELERY_WORKER_POOL = env_str("CELERY_WORKER_POOL", "threads")
CELERY_WORKER_CONCURRENCY = env_int("CELERY_WORKER_CONCURRENCY", 32)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# A frozen broker (a hung host: the TCP connection stays open and nothing answers) must not
# hold a create: every Redis command and connect gives up after this long, and a failed
# connection is not retried (kombu would otherwise retry for ~6 s). The API publishes without
# retries (services.queueing.payout_enqueue), so a create waits at most about this long for the
# broker; the recovery sweep queues the payout later. The worker's BRPOP is unaffected: it is
# read only once Redis answers (its own brpop_timeout), and kombu's health checks catch a
# half-open consumer connection.
CELERY_BROKER_SOCKET_TIMEOUT_SECONDS = env_float("CELERY_BROKER_SOCKET_TIMEOUT_SECONDS", 0.75)
CELERY_BROKER_CONNECTION_TIMEOUT = CELERY_BROKER_SOCKET_TIMEOUT_SECONDS
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Unacknowledged messages of a dead worker come back after this many seconds.
    "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT_SECONDS", 300),
    "socket_connect_timeout": CELERY_BROKER_SOCKET_TIMEOUT_SECONDS,
    "socket_timeout": CELERY_BROKER_SOCKET_TIMEOUT_SECONDS,
    "max_retries": 0,
}
# The worker's own publishes (a task's retry) may retry briefly; the API's do not (see above).
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0,
    "interval_step": 0.3,
    "interval_max": 0.5,
}

# --- Payouts ----------------------------------------------------------------------------------

# The payment provider adapter: "sandbox" (default) is the built-in PSP simulator.
PAYOUTS_PROVIDER = env_str("PAYOUTS_PROVIDER", "sandbox")
PAYOUTS_SANDBOX_LATENCY_MS = env_int("PAYOUTS_SANDBOX_LATENCY_MS", 500)
PAYOUTS_SANDBOX_FAILURE_RATE = env_float("PAYOUTS_SANDBOX_FAILURE_RATE", 0.0)
if not 0.0 <= PAYOUTS_SANDBOX_FAILURE_RATE <= 1.0:
    raise ImproperlyConfigured("PAYOUTS_SANDBOX_FAILURE_RATE must be between 0 and 1.")
# Each provider call's deadline (execute, lookup), which adapters honour: past it the call's
# outcome is unknown, and the payout is looked up, never guessed.
PAYOUTS_PROVIDER_TIMEOUT_SECONDS = env_float("PAYOUTS_PROVIDER_TIMEOUT_SECONDS", 10.0)
# The deadline of the provider cancel a client's (or staff's) cancel waits for, once a call may
# have reached the provider; without an answer in time the cancel answers 503.
PAYOUTS_PROVIDER_CANCEL_TIMEOUT_SECONDS = env_float("PAYOUTS_PROVIDER_CANCEL_TIMEOUT_SECONDS", 5.0)
# Attempts after the first; every attempt counts, whatever ended it (the provider's refusal, a
# timeout, a lookup without an answer, a bug).
PAYOUTS_MAX_RETRIES = env_int("PAYOUTS_MAX_RETRIES", 5)
if PAYOUTS_MAX_RETRIES < 0:
    raise ImproperlyConfigured("PAYOUTS_MAX_RETRIES must be 0 or more.")
PAYOUTS_RETRY_BACKOFF_SECONDS = env_int("PAYOUTS_RETRY_BACKOFF_SECONDS", 2)
PAYOUTS_RETRY_BACKOFF_MAX_SECONDS = env_int("PAYOUTS_RETRY_BACKOFF_MAX_SECONDS", 60)
# Past the retries, a payout whose outcome is unknown is looked up again on a backoff up to this.
PAYOUTS_RECHECK_MAX_SECONDS = env_int("PAYOUTS_RECHECK_MAX_SECONDS", 900)
# A payout whose outcome stays unknown this long is flagged for review (admin, ERROR log).
PAYOUTS_REVIEW_AFTER_SECONDS = env_int("PAYOUTS_REVIEW_AFTER_SECONDS", 24 * 3600)
# A payout untouched for this long is re-queued by the recovery sweep: NEW ones whose task never
# reached the broker, PROCESSING ones whose worker died. While an attempt runs, the worker's
# heartbeat renews the lease every third of it (payouts/heartbeat.py), so it can be short.
PAYOUTS_LEASE_SECONDS = env_int("PAYOUTS_LEASE_SECONDS", 20)
if PAYOUTS_LEASE_SECONDS < 6:
    raise ImproperlyConfigured("PAYOUTS_LEASE_SECONDS must be at least 6 (3 heartbeats).")
PAYOUTS_SWEEP_INTERVAL_SECONDS = env_int("PAYOUTS_SWEEP_INTERVAL_SECONDS", 30)
PAYOUTS_SWEEP_BATCH_SIZE = env_int("PAYOUTS_SWEEP_BATCH_SIZE", 500)

# --- Notifications (webhooks) -----------------------------------------------------------------

# Webhook URLs must be https and resolve to public addresses (webhooks/destinations.py): a client
# must not make us call into our own network. Local runs and tests, whose receivers listen on
# http://127.0.0.1, allow both (`make run` does; so does the test runner).
PAYOUTS_WEBHOOKS_ALLOW_HTTP = env_bool("PAYOUTS_WEBHOOKS_ALLOW_HTTP", False)
PAYOUTS_WEBHOOKS_ALLOW_PRIVATE = env_bool("PAYOUTS_WEBHOOKS_ALLOW_PRIVATE", False)
# After a secret rotation the previous secret keeps signing (beside the new one) this long.
PAYOUTS_WEBHOOK_SECRET_OVERLAP_SECONDS = env_int("PAYOUTS_WEBHOOK_SECRET_OVERLAP_SECONDS", 86400)
if PAYOUTS_WEBHOOK_SECRET_OVERLAP_SECONDS < 0:
    raise ImproperlyConfigured("PAYOUTS_WEBHOOK_SECRET_OVERLAP_SECONDS must be 0 or more.")
# Each delivery attempt's deadline (connect + answer), in seconds.
PAYOUTS_WEBHOOK_TIMEOUT_SECONDS = env_float("PAYOUTS_WEBHOOK_TIMEOUT_SECONDS", 15.0)
# The delay (seconds) before each attempt of a delivery: the first at once, the last 10 h after
# the one before it; after the last, the delivery is FAILED.
PAYOUTS_WEBHOOK_RETRY_SCHEDULE: tuple[int, ...] = tuple(
    env_int_list("PAYOUTS_WEBHOOK_RETRY_SCHEDULE", "0,5,300,1800,7200,18000,36000,36000")
)
if not PAYOUTS_WEBHOOK_RETRY_SCHEDULE or min(PAYOUTS_WEBHOOK_RETRY_SCHEDULE) < 0:
    raise ImproperlyConfigured("PAYOUTS_WEBHOOK_RETRY_SCHEDULE needs one or more delays >= 0.")
# An endpoint whose attempts have all failed for this long is disabled (5 days).
PAYOUTS_WEBHOOK_DISABLE_AFTER_SECONDS = env_int("PAYOUTS_WEBHOOK_DISABLE_AFTER_SECONDS", 432_000)
# How often beat runs the webhooks sweep (events on-commit missed, due retries), and how many of
# each one sweep takes.
PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS = env_int("PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS", 10)
PAYOUTS_WEBHOOK_SWEEP_BATCH_SIZE = env_int("PAYOUTS_WEBHOOK_SWEEP_BATCH_SIZE", 500)

# Enforced under the prefork pool only; an attempt makes at most three provider calls (lookup,
# execute, void), each bounded by its deadline.
CELERY_TASK_SOFT_TIME_LIMIT = int(3 * PAYOUTS_PROVIDER_TIMEOUT_SECONDS) + 20
CELERY_TASK_TIME_LIMIT = CELERY_TASK_SOFT_TIME_LIMIT + 10

CELERY_BEAT_SCHEDULE = {
    "payouts-recovery-sweep": {
        "task": "payouts.tasks.recover_stale_payouts",
        "schedule": PAYOUTS_SWEEP_INTERVAL_SECONDS,
        "options": {"expires": PAYOUTS_SWEEP_INTERVAL_SECONDS},
    },
    "webhooks-sweep": {
        "task": "webhooks.tasks.sweep_webhooks",
        "schedule": PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS,
        "options": {"expires": PAYOUTS_WEBHOOK_SWEEP_INTERVAL_SECONDS},
    },
}
# --- Notifications: retention ------------------------------------------------------------------

# Events (the feed, and their deliveries and attempts) are kept this many days, then deleted by
# beat's hourly prune (webhooks.retention); one still undispatched or with a delivery pending is
# kept until it is done.
PAYOUTS_EVENT_RETENTION_DAYS = env_int("PAYOUTS_EVENT_RETENTION_DAYS", 30)
if PAYOUTS_EVENT_RETENTION_DAYS < 1:
    raise ImproperlyConfigured("PAYOUTS_EVENT_RETENTION_DAYS must be at least 1.")
PAYOUTS_EVENT_PRUNE_INTERVAL_SECONDS = 3600
CELERY_BEAT_SCHEDULE["webhooks-prune-events"] = {
    "task": "webhooks.tasks.prune_events",
    "schedule": PAYOUTS_EVENT_PRUNE_INTERVAL_SECONDS,
    "options": {"expires": PAYOUTS_EVENT_PRUNE_INTERVAL_SECONDS},
}

TEST_RUNNER = "config.test_runner.PayoutsTestRunner"
