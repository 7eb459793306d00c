"""What our side of a Telnyx or Vonage call costs in CPU: placing it through the real SDK (its
HTTP answered by a transport fake, so no network time is counted) and verifying a webhook; then
call control on every provider that has it: reading a machine-detection verdict, and the
requests that leave a voicemail message and transfer a call.

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
    CallRecordQuery,
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

    call_control(telnyx_account, vonage_account)


def call_control(telnyx_account: Account, vonage_account: Account) -> None:
    from django.utils import timezone

    query = CallRecordQuery(
        str(uuid.uuid4()), "CALL-ID", "+15559876543", 600, timezone.now(), "+15551234567"
    )
    twilio = get_provider("twilio")
    twilio_account = Account({"account_sid": "AC" + "a" * 32}, {"auth_token": "t"})
    telnyx, vonage = get_provider("telnyx"), get_provider("vonage")
    verdicts = {
        "twilio": WebhookRequest(
            "", "POST", {}, b"", {"CallSid": "CA1", "AnsweredBy": "machine_end_beep"}
        ),
        "telnyx": WebhookRequest(
            "",
            "POST",
            {},
            json.dumps(
                {
                    "data": {
                        "event_type": "call.machine.detection.ended",
                        "payload": {"call_control_id": "v3:call", "result": "machine"},
                    }
                }
            ).encode(),
            {},
        ),
        "vonage": WebhookRequest(
            "",
            "POST",
            {},
            json.dumps({"call_uuid": "u", "status": "machine", "sub_state": "beep_start"}).encode(),
            {},
        ),
    }
    for name, request in verdicts.items():
        provider = get_provider(name)
        per_call(
            f"{name} parse_detection (a verdict)",
            lambda p=provider, r=request: p.parse_detection(r),
            rounds=2000,
        )

    twilio_call = f"https://api.twilio.com/2010-04-01/Accounts/AC{'a' * 32}/Calls/CALL-ID.json"
    with responses.RequestsMock() as mock:
        mock.post(twilio_call, json={"sid": "CALL-ID", "status": "in-progress"})
        per_call(
            "twilio leave_message (TwiML <Say>, requests fake)",
            lambda: twilio.leave_message(query, twilio_account, message="Please call back."),
        )
        per_call(
            "twilio transfer (TwiML <Dial>, requests fake)",
            lambda: twilio.transfer(query, twilio_account, to_number="+15557654321"),
        )
    with respx.mock() as mock:
        for action in ("streaming_stop", "speak", "transfer"):
            mock.post(f"https://api.telnyx.com/v2/calls/CALL-ID/actions/{action}").respond(
                200, json={"data": {"result": "ok"}}
            )
        per_call(
            "telnyx leave_message (stop stream + speak, httpx fake)",
            lambda: telnyx.leave_message(query, telnyx_account, message="Please call back."),
        )
        per_call(
            "telnyx transfer (stop stream + transfer, httpx fake)",
            lambda: telnyx.transfer(query, telnyx_account, to_number="+15557654321"),
        )
    with responses.RequestsMock() as mock:
        mock.put("https://api.nexmo.com/v1/calls/CALL-ID", status=204)
        per_call(
            "vonage leave_message (NCCO talk, requests fake)",
            lambda: vonage.leave_message(query, vonage_account, message="Please call back."),
        )
        per_call(
            "vonage transfer (NCCO connect, requests fake)",
            lambda: vonage.transfer(query, vonage_account, to_number="+15557654321"),
        )


if __name__ == "__main__":
    main()
