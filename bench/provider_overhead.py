"""What our side of a Telnyx or Vonage call costs in CPU: placing it through the real SDK (its
HTTP answered by a transport fake, so no network time is counted) and verifying a webhook.

    PYTHONPATH=. .venv/bin/python bench/provider_overhead.py
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")

import django

django.setup()

import jwt  # noqa: E402
import responses  # noqa: E402
import respx  # noqa: E402
from cryptography.hazmat.primitives import serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa  # noqa: E402

from telephony.providers import get_provider  # noqa: E402
from telephony.providers.base import (  # noqa: E402
    Account,
    CallContext,
    OutboundCall,
    WebhookRequest,
)

ROUNDS = 300


def per_call(label: str, fn: Callable[[], object], rounds: int = ROUNDS) -> None:
    fn()  # warm: imports, connection pools, caches
    start = time.perf_counter()
    for _ in range(rounds):
        fn()
    elapsed = (time.perf_counter() - start) / rounds
    print(f"{label:<55} {elapsed * 1000:8.3f} ms")


def main() -> None:
    context = CallContext(str(uuid.uuid4()), 1, None, "Hello Ann", "Confirm the order.")
    call = OutboundCall(
        "+15551234567",
        "+15559876543",
        600,
        30,
        "https://burki.test/a",
        "https://burki.test/s",
        "wss://media.burki.test/stream",
        context,
    )

    signing = ed25519.Ed25519PrivateKey.generate()
    public = signing.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    telnyx = get_provider("telnyx")
    telnyx_account = Account(
        {"connection_id": "1", "public_key": base64.b64encode(public).decode()}, {"api_key": "K"}
    )
    pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    secret = "vonage-signature-secret-0123456789abcdef"
    vonage = get_provider("vonage")
    vonage_account = Account(
        {"application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"},
        {"private_key": pem, "signature_secret": secret},
    )

    with respx.mock() as mock:
        mock.post("https://api.telnyx.com/v2/calls").respond(
            200, json={"data": {"call_control_id": "v3:call"}}
        )
        per_call(
            "telnyx place_call (SDK, httpx fake)", lambda: telnyx.place_call(call, telnyx_account)
        )
    with responses.RequestsMock() as mock:
        mock.post(
            "https://api.nexmo.com/v1/calls",
            json={
                "uuid": "u",
                "status": "started",
                "direction": "outbound",
                "conversation_uuid": "c",
            },
            status=201,
        )
        per_call(
            "vonage place_call (SDK, RS256 token, requests fake)",
            lambda: vonage.place_call(call, vonage_account),
        )

    body = json.dumps({"data": {"event_type": "call.answered", "payload": {}}}).encode()
    timestamp = str(int(time.time()))
    signature = base64.b64encode(signing.sign(timestamp.encode() + b"|" + body)).decode()
    telnyx_hook = WebhookRequest(
        "https://burki.test/s",
        "POST",
        {"telnyx-signature-ed25519": signature, "telnyx-timestamp": timestamp},
        body,
        {},
    )
    per_call(
        "telnyx verify_webhook (Ed25519 over timestamp|body)",
        lambda: telnyx.verify_webhook(telnyx_hook, telnyx_account),
        rounds=2000,
    )
    claims = {"iat": int(time.time()), "payload_hash": hashlib.sha256(body).hexdigest()}
    token = jwt.encode(claims, secret, algorithm="HS256")
    vonage_hook = WebhookRequest(
        "https://burki.test/s", "POST", {"Authorization": f"Bearer {token}"}, body, {}
    )
    per_call(
        "vonage verify_webhook (HS256 JWT + payload_hash)",
        lambda: vonage.verify_webhook(vonage_hook, vonage_account),
        rounds=2000,
    )


if __name__ == "__main__":
    main()
