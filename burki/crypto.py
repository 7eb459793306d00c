"""Encryption at rest for secrets we must be able to read back (provider tokens, SIP passwords).

Fernet (AES-128-CBC + HMAC-SHA256) from `cryptography`; MultiFernet gives key rotation: the first
key in FIELD_ENCRYPTION_KEYS encrypts, all of them decrypt, and `rotate_secrets` re-encrypts.
"""

from __future__ import annotations

import base64
import hashlib
import json
from functools import cache
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db import models
from django.db.models.functions import Cast
from django.dispatch import receiver


@cache
def _fernet() -> MultiFernet:
    keys = list(settings.FIELD_ENCRYPTION_KEYS)
    if not keys:
        # Local development only (settings refuse to start without keys unless DEBUG).
        digest = hashlib.sha256(b"burki-field-encryption:" + settings.SECRET_KEY.encode()).digest()
        keys = [base64.urlsafe_b64encode(digest).decode()]
    try:
        return MultiFernet([Fernet(key) for key in keys])
    except ValueError as exc:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS must be url-safe base64 Fernet keys."
        ) from exc


@receiver(setting_changed)
def _forget_keys(*, setting: str, **kwargs: Any) -> None:
    if setting in ("FIELD_ENCRYPTION_KEYS", "SECRET_KEY"):
        _fernet.cache_clear()


def encrypt(plaintext: str) -> str:
    return _fernet().encrypt(plaintext.encode()).decode()


def decrypt(token: str) -> str:
    return _fernet().decrypt(token.encode()).decode()


def rotate(token: str) -> str:
    return _fernet().rotate(token.encode()).decode()


class EncryptedJSONField(models.TextField):
    """A dict of secrets, stored as one Fernet token. Never put one in `list_display`."""

    description = "Encrypted JSON object"
    # What type checkers (django-stubs) see on instances: a dict, not the text stored.
    _pyi_private_set_type: dict[str, Any]  # type: ignore[assignment]
    _pyi_private_get_type: dict[str, Any]  # type: ignore[assignment]

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> Any:
        if value is None or value == "":
            return {}
        try:
            return json.loads(decrypt(value))
        except InvalidToken as exc:
            raise ImproperlyConfigured(
                "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS "
                "(was a key removed before its secrets were rotated?)."
            ) from exc

    def to_python(self, value: Any) -> Any:
        return value if isinstance(value, dict) else {}

    def get_prep_value(self, value: Any) -> str:
        return encrypt(json.dumps(value or {}, sort_keys=True))


def secrets_rotate() -> int:
    """Re-encrypt every stored secret with the first key of FIELD_ENCRYPTION_KEYS; returns how
    many. Once it has run, keys after the first can be removed.

    Works on the stored tokens (never decrypting into Python objects), and writes a row only if
    its token is still the one read, so a secret changed meanwhile is not overwritten.
    """
    rotated = 0
    for model in apps.get_models():
        for field in model._meta.concrete_fields:
            if not isinstance(field, (EncryptedJSONField, EncryptedTextField)):
                continue
            rows = model._base_manager.annotate(
                token=Cast(field.attname, output_field=models.TextField())
            )
            for pk, token in rows.exclude(token="").values_list("pk", "token").iterator():
                if token is None:
                    continue
                fresh = models.Value(rotate(token), output_field=models.TextField())
                rotated += rows.filter(pk=pk, token=token).update(**{field.attname: fresh})
    return rotated


class EncryptedTextField(models.TextField):
    """One secret string (a SIP password), stored as a Fernet token; "" stays "" (no secret)."""

    description = "Encrypted text"

    def from_db_value(self, value: str | None, expression: Any, connection: Any) -> str:
        if not value:
            return ""
        try:
            return decrypt(value)
        except InvalidToken as exc:
            raise ImproperlyConfigured(
                "A stored secret cannot be decrypted with FIELD_ENCRYPTION_KEYS "
                "(was a key removed before its secrets were rotated?)."
            ) from exc

    def to_python(self, value: Any) -> str:
        return value if isinstance(value, str) else ""

    def get_prep_value(self, value: Any) -> str:
        return encrypt(value) if value else ""
