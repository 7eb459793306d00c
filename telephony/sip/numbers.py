"""Plain helpers shared by SIP trunks, the `sip` provider and the SIP agent (no SIP stack here)."""

from __future__ import annotations

import ipaddress
import re

import phonenumbers
from django.db import models

# A DNS name or an IPv4 address; IPv6 gateways go in brackets: [2001:db8::1]:5060.
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)


class CallerIdFormat(models.TextChoices):
    E164 = "e164", "E.164 with + (+15551234567)"
    DIGITS = "digits", "E.164 digits without + (15551234567)"
    NATIONAL = "national", "National number (5551234567)"


def parse_gateway(gateway: str) -> tuple[str, int | None]:
    """`host[:port]` → (host, port or None). Raises ValueError with a sentence for people."""
    text = gateway.strip()
    host, port_text = text, ""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest and not rest.startswith(":"):
            raise ValueError("Write the gateway as host[:port].")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError("The bracketed part must be an IPv6 address.") from None
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    if not host or (not text.startswith("[") and not _HOSTNAME.match(host)):
        raise ValueError("Write the gateway as host[:port], e.g. sip.example.net:5060.")
    if not port_text:
        return host, None
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError("The gateway's port must be a number from 1 to 65535.")
    return host, int(port_text)


def format_number(e164: str, caller_id_format: str) -> str:
    """An E.164 number written the way a trunk wants it in SIP URIs."""
    if caller_id_format == CallerIdFormat.DIGITS:
        return e164.lstrip("+")
    if caller_id_format == CallerIdFormat.NATIONAL:
        return str(phonenumbers.parse(e164).national_number)
    return e164
