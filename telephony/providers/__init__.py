"""The provider registry, keyed on `PhoneNumber.provider`.

Adding a provider is one module in this package and one line here. Modules are imported on
first use, so a web worker never loads an SDK (or a SIP stack) that no number of it uses.
"""

from __future__ import annotations

from functools import cache

from django.utils.module_loading import import_string

from telephony.providers.base import Provider

REGISTRY: dict[str, str] = {
    "sandbox": "telephony.providers.sandbox.SandboxProvider",
    "twilio": "telephony.providers.twilio.TwilioProvider",
    "telnyx": "telephony.providers.telnyx.TelnyxProvider",
    "vonage": "telephony.providers.vonage.VonageProvider",
    "sip": "telephony.providers.sip.SipProvider",
}

LABELS: dict[str, str] = {
    "sandbox": "Sandbox (test mode, no account, nothing is dialled)",
    "twilio": "Twilio",
    "telnyx": "Telnyx",
    "vonage": "Vonage",
    "sip": "BYO SIP trunk",
}


def provider_choices() -> list[tuple[str, str]]:
    return [(name, LABELS.get(name, name)) for name in REGISTRY]


@cache
def get_provider(name: str) -> Provider:
    try:
        path = REGISTRY[name]
    except KeyError:
        raise LookupError(f"Unknown telephony provider {name!r}.") from None
    provider: Provider = import_string(path)()
    return provider
