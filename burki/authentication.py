from __future__ import annotations

import hmac
from datetime import timedelta

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from burki.models import ApiKey, Organization

# Recording every use would add a write to every request; once a minute is enough to audit.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiClient:
    """`request.user` for a request authenticated by an API key."""

    is_authenticated = True
    is_anonymous = False

    def __init__(self, api_key: ApiKey) -> None:
        self.api_key = api_key
        self.organization: Organization = api_key.organization

    def __str__(self) -> str:
        return f"api key {self.api_key.prefix}… of {self.organization}"


def request_api_key(request: Request) -> ApiKey:
    """The key an authenticated API request came with (after IsAuthenticated has passed)."""
    if not isinstance(request.auth, ApiKey):
        raise exceptions.NotAuthenticated()
    return request.auth


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[ApiClient, ApiKey] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Invalid Authorization header. Use 'Bearer <api key>'."
            )
        try:
            raw_key = header[1].decode("ascii")
        except UnicodeDecodeError:
            raise exceptions.AuthenticationFailed("Invalid API key.") from None

        # get(), not first(): the prefix is unique, and an ORDER BY costs CPU to compile.
        try:
            api_key: ApiKey | None = ApiKey.objects.select_related("organization").get(
                prefix=raw_key[: ApiKey.PREFIX_LENGTH]
            )
        except ApiKey.DoesNotExist:
            api_key = None
        # Compare in constant time even when the prefix matched nothing.
        expected = api_key.hashed_key if api_key else ApiKey.hash("")
        if not hmac.compare_digest(expected, ApiKey.hash(raw_key)) or api_key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        if not api_key.is_active:
            raise exceptions.AuthenticationFailed("This API key has been revoked.")

        now = timezone.now()
        if api_key.last_used_at is None or now - api_key.last_used_at > LAST_USED_RESOLUTION:
            ApiKey.objects.filter(pk=api_key.pk).update(last_used_at=now)
            api_key.last_used_at = now
        return ApiClient(api_key), api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
