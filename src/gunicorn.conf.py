"""Gunicorn settings, loaded automatically when gunicorn runs with src/ as its working directory.

Every value can be overridden by the environment (HOST, PORT, WEB_CONCURRENCY, ...) or on the
command line. Threaded workers: a few threads per process keep slow clients (or a slowloris) from
pinning every worker, and serve keep-alive connections; settings keep one database connection
open per thread (DATABASE_CONN_MAX_AGE).
"""

import multiprocessing
import os
import shutil
import sys
import tempfile
from typing import Any

# gunicorn executes this file without putting its directory on sys.path when started from
# elsewhere (gunicorn -c src/gunicorn.conf.py); the env parsing is shared with settings.py.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from config.env import env_int, env_str
from config.logs import gunicorn_logging_config, log_format_from_env

# An empty WEB_CONCURRENCY never reaches this file: gunicorn parses that variable itself when it
# is imported (int(""), exit 1). The image's entrypoint drops an empty one (docker-entrypoint.sh).

bind = f"{env_str('HOST', '127.0.0.1')}:{env_int('PORT', 8000)}"

# Gunicorn's classic 2 * cores + 1, capped: more workers than that only add memory and
# database connections.
workers = env_int("WEB_CONCURRENCY", min(2 * multiprocessing.cpu_count() + 1, 9))
worker_class = "gthread"
threads = env_int("GUNICORN_THREADS", 4)

# A worker whose main loop stops answering for this long is replaced (with threaded workers a
# single stuck request does not trigger it); a graceful stop (SIGTERM) lets in-flight requests
# finish for up to graceful_timeout seconds.
timeout = env_int("GUNICORN_TIMEOUT", 30)
graceful_timeout = env_int("GUNICORN_GRACEFUL_TIMEOUT", 20)
keepalive = env_int("GUNICORN_KEEPALIVE", 5)

# No recycling by default (gunicorn's own default). A recycled worker imports Django afresh,
# about a second of CPU here: at 1,000 requests it recycled every worker every few seconds
# under load, and `make bench` measured the bare view 1.5x faster and its p99 5x lower
# without it. Set GUNICORN_MAX_REQUESTS (jitter keeps workers from restarting together) if a
# leak ever shows.
max_requests = env_int("GUNICORN_MAX_REQUESTS", 0)
max_requests_jitter = env_int("GUNICORN_MAX_REQUESTS_JITTER", 100)

# Logs go to stdout/stderr, where the process supervisor (make run, Docker) collects them, in
# the application's LOG_FORMAT (config/logs.py); a JSON access line has method, path, status,
# duration_ms and request_id fields of its own.
accesslog = "-"
errorlog = "-"
loglevel = env_str("GUNICORN_LOG_LEVEL", "info")
logconfig_dict = gunicorn_logging_config(log_format=log_format_from_env())
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms "%(a)s"'
forwarded_allow_ips = env_str("FORWARDED_ALLOW_IPS", "127.0.0.1")

# Gunicorn's runtime control socket (gunicornc) defaults to one fixed path per user, which two
# instances on a machine (or a read-only home in a container) would fight over: off unless a
# path is given.
control_socket = env_str("GUNICORN_CONTROL_SOCKET", "")
control_socket_disable = not control_socket
if not control_socket:
    del control_socket

# Gunicorn reuses a keep-alive connection only after draining the part of a request body the
# application did not read, and it drains at most 64 KiB; past that it drops the connection
# after a response that already said keep-alive, and the client's next request on it is lost.
# The API reads no body over 64 KiB (413) and no chunked body (411), so such requests are
# answered with "Connection: close" from the start. Only the server can say so: gunicorn drops
# a Connection header set by the application.
UNREAD_BODY_DRAIN_BYTES = 64 * 1024


def pre_request(worker: Any, req: Any) -> None:
    worker.log.debug("%s %s", req.method, req.path)  # gunicorn's default hook
    headers = {name.upper(): value for name, value in req.headers}
    chunked = "chunked" in headers.get("TRANSFER-ENCODING", "").lower()
    # gunicorn has already refused a non-numeric Content-Length with 400.
    length = int(headers.get("CONTENT-LENGTH") or 0)
    if chunked or length > UNREAD_BODY_DRAIN_BYTES:
        req.force_close()


# Prometheus: every worker process writes its samples to files in PROMETHEUS_MULTIPROC_DIR and
# /metrics sums them (prometheus_client's multiprocess mode). Set here, in the master, so the
# workers inherit it before they import prometheus_client. Whoever names the directory empties
# it before any process starts (the image's entrypoint, `make run`); otherwise it is a fresh
# one of gunicorn's own, removed on exit.
METRICS_DIR_OWNED = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if METRICS_DIR_OWNED:
    shm = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="payouts-metrics-", dir=shm)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server: Any) -> None:
    if METRICS_DIR_OWNED:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)
