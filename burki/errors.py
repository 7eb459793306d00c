"""The base of every domain error: a rule of ours that a request did not meet.

Services raise these and know nothing of HTTP. Each app keeps its own (`billing/errors.py`,
`calls/errors.py`); `burki.exceptions` maps each class to its HTTP status in one table, and a
management command prints the sentence.
"""

from __future__ import annotations

from typing import ClassVar


class DomainError(Exception):
    """A stable `code` for programs and one sentence (`message`) for people."""

    code: ClassVar[str] = "invalid"
    # The sentence, for errors whose sentence never varies; others pass theirs in.
    default_message: ClassVar[str] = "The request could not be carried out."

    def __init__(self, message: str | None = None) -> None:
        self.message = self.default_message if message is None else message
        # What the error body carries beside `detail`, e.g. the id of a call to follow.
        self.extra: dict[str, str] = {}
        super().__init__(self.message)
