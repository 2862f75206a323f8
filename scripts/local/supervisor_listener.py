#!/usr/bin/env python3
"""supervisord event listener for `make run` (see scripts/local/bootstrap.py).

supervisord restarts and gives up on programs by itself; two things it does not do are added
here, through its event listener protocol:

- When a program's main process ends (PROCESS_STATE_EXITED or _STOPPED), whatever is left in its
  process group is SIGKILLed: a SIGKILLed gunicorn master leaves workers that still hold the port
  the restarted one must bind, a prefork Celery worker its pool processes.
- When a program goes FATAL (it kept dying within startsecs of starting, startretries times in a
  row), the whole run is shut down instead of running on without it. The program's name goes to
  PAYOUTS_RUN_FATAL_FILE so the bootstrap can exit non-zero and say which one.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys

from supervisor import childutils


def kill_process_group(pid: int) -> None:
    """SIGKILL the group the program's main process led (supervisord gives each its own)."""
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def stop_the_run(program: str) -> None:
    with open(os.environ["PAYOUTS_RUN_FATAL_FILE"], "w") as fatal_file:
        fatal_file.write(program + "\n")
    sys.stderr.write(f"supervisor_listener: {program} is FATAL, stopping everything\n")
    sys.stderr.flush()
    try:
        childutils.getRPCInterface(os.environ).supervisor.shutdown()
    except Exception as exc:
        # Should not happen; a SIGTERM makes supervisord shut down just the same.
        sys.stderr.write(f"supervisor_listener: RPC shutdown failed ({exc!r}), sending SIGTERM\n")
        os.kill(os.getppid(), signal.SIGTERM)


def main() -> None:
    # supervisord stops the listener last, with SIGTERM: that is the normal end, exit 0.
    signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))
    while True:
        headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        fields = childutils.get_headers(payload)
        event = headers["eventname"]
        if event in ("PROCESS_STATE_EXITED", "PROCESS_STATE_STOPPED"):
            kill_process_group(int(fields.get("pid", 0)))
        elif event == "PROCESS_STATE_FATAL":
            group, name = fields["groupname"], fields["processname"]
            stop_the_run(name if group == name else f"{group}:{name}")
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
