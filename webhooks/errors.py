"""Customer webhooks' rules, as domain errors (the API maps them in burki.exceptions)."""

from __future__ import annotations

from burki.errors import DomainError


class WebhookUrlRefused(DomainError):
    """A URL we will not deliver to (a private address, not http or https)."""

    code = "webhook_url_refused"
