"""`Authorization: Bearer <api key>` authentication against hashed, revocable API keys."""

import re
from typing import Any

from django.core.exceptions import ObjectDoesNotExist
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, permissions
from rest_framework.request import Request

from ..models import ApiClient, ApiKey

# What djangorestframework-api-key generates: "<8-char prefix>.<32-char secret>". Anything else
# is rejected before it reaches the database.
KEY_FORMAT = re.compile(r"[A-Za-z0-9]{8}\.[A-Za-z0-9]{32}")


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """Returns (ApiClient, ApiKey) for a valid key; request.user is then the client."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiClient, ApiKey] | None:
        header = request.META.get("HTTP_AUTHORIZATION", "")
        if not header:
            return None
        scheme, _, key = header.partition(" ")
        if scheme.lower() != self.keyword.lower():
            raise exceptions.AuthenticationFailed(
                "Use the Authorization header 'Bearer <api key>'."
            )
        key = key.strip()
        if not KEY_FORMAT.fullmatch(key):
            raise exceptions.AuthenticationFailed("Invalid API key.")
        prefix = key.partition(".")[0]
        try:
            api_key = ApiKey.objects.get_usable_keys().select_related("client").get(prefix=prefix)
        except ObjectDoesNotExist:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None
        if not api_key.is_valid(key) or not api_key.client.is_active:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        return api_key.client, api_key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (with WWW-Authenticate) rather than 403 when no key was sent.
        return f'{self.keyword} realm="api"'


def request_client(request: Request) -> ApiClient:
    """The authenticated client of a request that passed IsApiClient."""
    client = request.user
    if not isinstance(client, ApiClient):
        raise exceptions.NotAuthenticated()
    return client


class IsApiClient(permissions.BasePermission):
    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.user, ApiClient)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "payouts.api.auth.ApiKeyAuthentication"
    name = "ApiKeyAuth"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An API key from `python src/manage.py create_api_client NAME`.",
        }
