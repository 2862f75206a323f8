"""The client's address as the admin's login lockout (django-axes) sees it."""

from django.conf import settings
from django.http import HttpRequest


def client_ip(request: HttpRequest) -> str | None:
    """REMOTE_ADDR; behind the TLS proxy (DJANGO_BEHIND_TLS_PROXY), the address the proxy
    appended to X-Forwarded-For.

    Only the right-most entry is the proxy's own: anything left of it came from the client and
    could name any address, which would let an attacker dodge the lockout (or aim it at someone
    else). Without the setting the header is ignored, as it is for X-Forwarded-Proto.
    """
    if settings.BEHIND_TLS_PROXY:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "").rpartition(",")[2].strip()
        if forwarded:
            return forwarded
    return request.META.get("REMOTE_ADDR")
