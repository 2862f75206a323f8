#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if sys.argv[1:2] == ["test"]:
        # A test run is not a deployment: local semantics (settings are production unless
        # DJANGO_ENV=local), also inside the image where compose says production. Set before
        # settings load; the processes the e2e tests start inherit it. Tests that need
        # production behaviour set it in their subprocesses' environment.
        os.environ["DJANGO_ENV"] = "local"
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
