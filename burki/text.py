"""What text an assistant can be given to say: anything but control characters.

Text goes into every provider's answer document (TwiML is XML 1.0, which cannot carry C0 controls
other than tab, newline and carriage return, nor U+FFFE/U+FFFF), into Telnyx's stream URL and
into Vonage's NCCO headers; a speech engine can say none of them anyway. Tabs and newlines are
kept: they are how people lay out a long agenda.
"""

from __future__ import annotations

import unicodedata

from django.core.exceptions import ValidationError

ALLOWED_CONTROLS = frozenset("\t\n\r")
NONCHARACTERS = frozenset("\ufffe\uffff")


def unspeakable(text: str) -> bool:
    """True if `text` holds a control character (other than tab, newline, carriage return), a
    lone surrogate or a noncharacter XML cannot carry."""
    return any(
        (unicodedata.category(ch) in ("Cc", "Cs") and ch not in ALLOWED_CONTROLS)
        or ch in NONCHARACTERS
        for ch in text
    )


def validate_speakable(text: str) -> None:
    """The model-field form (e.g. an assistant's greeting, edited in the admin)."""
    if unspeakable(text):
        raise ValidationError(
            "Must not contain control characters (tabs and newlines are allowed).",
            code="unspeakable",
        )
