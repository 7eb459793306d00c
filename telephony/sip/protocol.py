"""What the web side and the SIP agent say to each other: typed messages, one JSON line each.

Both ends encode and decode through this module, so an operation or an error code is written
once (as a class or an `ErrorCode`) and never matched as a string anywhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

# The PyPI pjsua2 wheel's compile-time PJSUA_MAX_CALLS: a fifth makeCall in one process fails.
CALLS_PER_ENGINE = 4


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FULL = "full"  # every call slot taken (or the agent is stopping): try another agent
    UNKNOWN_CALL = "unknown_call"  # no such call is ours to place or carry
    NO_TRUNK = "no_trunk"
    REFUSED = "refused"  # no trunk would take the INVITE
    NOT_CARRIED = "not_carried"  # this agent is not carrying the call
    INTERNAL = "internal"


class ProtocolError(ValueError):
    """A line that is not one of our messages."""


@dataclass(frozen=True)
class MediaTarget:
    """Where the answered call's audio goes, and the call context the stream starts with."""

    stream_url: str
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dial:
    call_id: str  # ours (the Call's id), not SIP's
    from_number: str
    to_number: str
    time_limit_seconds: int
    ring_timeout_seconds: int
    media: MediaTarget


@dataclass(frozen=True)
class HangUp:
    call_id: str


@dataclass(frozen=True)
class Find:
    call_id: str


@dataclass(frozen=True)
class Status:
    """How many calls the agent carries, and how many it could."""


@dataclass(frozen=True)
class Transfer:
    """Hand the answered call to another number (SIP REFER, a cold transfer)."""

    call_id: str
    to_number: str


Request = Dial | HangUp | Find | Status | Transfer


@dataclass(frozen=True)
class Dialled:
    call_sid: str  # the first INVITE's SIP Call-ID


@dataclass(frozen=True)
class CarriedCall:
    state: str  # a telephony.states.CallState value
    sip_call_id: str


@dataclass(frozen=True)
class Found:
    calls: tuple[CarriedCall, ...]


@dataclass(frozen=True)
class Done:
    """The request was carried out (a hang-up sent, a transfer asked for)."""


@dataclass(frozen=True)
class Load:
    calls: int
    capacity: int


@dataclass(frozen=True)
class Failure:
    code: ErrorCode
    detail: str


Reply = Dialled | Found | Done | Load | Failure

_OPS: dict[str, type[Request]] = {
    "dial": Dial,
    "hangup": HangUp,
    "find": Find,
    "status": Status,
    "transfer": Transfer,
}
_OP_OF = {kind: op for op, kind in _OPS.items()}


def encode_request(request: Request) -> dict[str, Any]:
    body: dict[str, Any] = {"op": _OP_OF[type(request)]}
    if isinstance(request, Dial):
        media = {
            "stream_url": request.media.stream_url,
            "parameters": dict(request.media.parameters),
        }
        body |= {
            "call_id": request.call_id,
            "from_number": request.from_number,
            "to_number": request.to_number,
            "time_limit_seconds": request.time_limit_seconds,
            "ring_timeout_seconds": request.ring_timeout_seconds,
            "media": media,
        }
    elif isinstance(request, Transfer):
        body |= {"call_id": request.call_id, "to_number": request.to_number}
    elif isinstance(request, HangUp | Find):
        body["call_id"] = request.call_id
    return body


def decode_request(body: Mapping[str, Any]) -> Request:
    kind = _OPS.get(str(body.get("op", "")))
    if kind is None:
        raise ProtocolError("Unknown op.")
    try:
        if kind is Dial:
            media = body.get("media") or {}
            return Dial(
                call_id=_text(body["call_id"]),
                from_number=_text(body["from_number"]),
                to_number=_text(body["to_number"]),
                time_limit_seconds=int(body["time_limit_seconds"]),
                ring_timeout_seconds=int(body["ring_timeout_seconds"]),
                media=MediaTarget(
                    stream_url=_text(media.get("stream_url", "")),
                    parameters={
                        _text(k): _text(v) for k, v in dict(media.get("parameters", {})).items()
                    },
                ),
            )
        if kind is Transfer:
            return Transfer(call_id=_text(body["call_id"]), to_number=_text(body["to_number"]))
        if kind is HangUp:
            return HangUp(call_id=_text(body["call_id"]))
        if kind is Find:
            return Find(call_id=_text(body["call_id"]))
        return Status()
    except (KeyError, TypeError, ValueError, AttributeError):
        raise ProtocolError(f"Malformed {_OP_OF[kind]} request.") from None


def encode_reply(reply: Reply) -> dict[str, Any]:
    if isinstance(reply, Failure):
        return {"ok": False, "error": reply.code.value, "detail": reply.detail}
    if isinstance(reply, Dialled):
        return {"ok": True, "call_sid": reply.call_sid}
    if isinstance(reply, Found):
        calls = [{"state": c.state, "sip_call_id": c.sip_call_id} for c in reply.calls]
        return {"ok": True, "calls": calls}
    if isinstance(reply, Load):
        return {"ok": True, "calls": reply.calls, "capacity": reply.capacity}
    return {"ok": True}


def decode_reply(request: Request, body: Mapping[str, Any]) -> Reply:
    """The answer to `request`; what it may be follows from what was asked."""
    try:
        if not body.get("ok"):
            try:
                code = ErrorCode(str(body.get("error")))
            except ValueError:
                code = ErrorCode.INTERNAL
            return Failure(code, _text(body.get("detail") or "The SIP agent refused."))
        if isinstance(request, Dial):
            return Dialled(call_sid=_text(body["call_sid"]))
        if isinstance(request, Find):
            return Found(
                tuple(
                    CarriedCall(state=_text(c["state"]), sip_call_id=_text(c["sip_call_id"]))
                    for c in body["calls"]
                )
            )
        if isinstance(request, Status):
            capacity = body.get("capacity", CALLS_PER_ENGINE)
            return Load(calls=int(body["calls"]), capacity=int(capacity))
        return Done()
    except (KeyError, TypeError, ValueError) as exc:
        raise ProtocolError("Malformed answer from the SIP agent.") from exc


def _text(value: Any) -> str:
    if isinstance(value, dict | list) or value is None:
        raise TypeError("not a scalar")
    return str(value)
