"""The provider registry, keyed on `PhoneNumber.provider`.

Adding a provider is one module in this package and one row in PROVIDERS. Modules are imported on
first use, so a web worker never loads an SDK (or a SIP stack) that no number of it uses; that is
why a provider's name and label live in its row, not on its class.
"""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from django.utils.module_loading import import_string

from telephony.providers.base import Provider


class Entry(NamedTuple):
    label: str  # how our sentences name it: "Unexpected error from Twilio."
    path: str  # its class
    choice: str = ""  # what the admin's choice says, when that is more than the label


PROVIDERS: dict[str, Entry] = {
    "sandbox": Entry(
        "Sandbox",
        "telephony.providers.sandbox.SandboxProvider",
        "Sandbox (test mode, no account, nothing is dialled)",
    ),
    "twilio": Entry("Twilio", "telephony.providers.twilio.TwilioProvider"),
    "telnyx": Entry("Telnyx", "telephony.providers.telnyx.TelnyxProvider"),
    "vonage": Entry("Vonage", "telephony.providers.vonage.VonageProvider"),
    "sip": Entry("BYO SIP trunk", "telephony.sip.provider.SipProvider"),
}


def provider_choices() -> list[tuple[str, str]]:
    return [(name, entry.choice or entry.label) for name, entry in PROVIDERS.items()]


@cache
def get_provider(name: str) -> Provider:
    try:
        entry = PROVIDERS[name]
    except KeyError:
        raise LookupError(f"Unknown telephony provider {name!r}.") from None
    provider: Provider = import_string(entry.path)(name=name, label=entry.label)
    return provider
