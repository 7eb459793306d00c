"""How many initiations a web process works on at once (WEB_INITIATIONS_AT_ONCE; 0: no limit).

An initiation is CPU work (about 12 ms), then a wait on the provider. With the CPU saturated,
every request of the process queues behind every initiation that is not waiting; bounding the
initiations that work at once bounds that queue, so a cheap request (/health, a webhook) is
answered in the time a few of them take. An initiation takes a slot as it arrives and gives it
back when it starts waiting on the provider (burki.db.connection_release) or when it ends.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

_held = threading.local()
_slots: dict[int, threading.BoundedSemaphore] = {}
_slots_lock = threading.Lock()


def _semaphore(limit: int) -> threading.BoundedSemaphore:
    with _slots_lock:
        return _slots.setdefault(limit, threading.BoundedSemaphore(limit))


def initiation_slot_release() -> None:
    semaphore = getattr(_held, "semaphore", None)
    if semaphore is not None:
        _held.semaphore = None
        semaphore.release()


class InitiationAdmissionMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        limit = settings.WEB_INITIATIONS_AT_ONCE
        if not limit or request.method != "POST" or request.path != "/calls/initiate":
            return self.get_response(request)
        semaphore = _semaphore(limit)
        semaphore.acquire()
        _held.semaphore = semaphore
        try:
            return self.get_response(request)
        finally:
            initiation_slot_release()
