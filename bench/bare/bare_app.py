"""The floor: a bare Django JSON view, no apps, no middleware, no database.

`make bench` serves it with the service's own gunicorn settings (src/gunicorn.conf.py) beside
the service, so every ratio in the table is against what Django itself costs on this machine.
"""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.http import HttpRequest, JsonResponse
from django.urls import path

if not settings.configured:
    settings.configure(
        DEBUG=False,
        SECRET_KEY=os.environ.get("DJANGO_SECRET_KEY", "bench-bare-view-only"),
        ALLOWED_HOSTS=["127.0.0.1", "localhost"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=[],
        INSTALLED_APPS=[],
        USE_TZ=True,
    )


def ok(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


urlpatterns = [path("", ok)]

application = get_wsgi_application()
