"""Campaign rules as domain errors (burki.exceptions maps them to statuses)."""

from __future__ import annotations

from dataclasses import dataclass

from burki.errors import DomainError


class CampaignInvalid(DomainError):
    code = "campaign_invalid"


class CampaignConflict(DomainError):
    """The campaign is not in a status the action applies to."""

    code = "campaign_conflict"


@dataclass(frozen=True)
class RowError:
    line: int
    reason: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "reason": self.reason}


class RecipientsInvalid(DomainError):
    """Some rows of a list are bad: none of the list was added (all or nothing)."""

    code = "recipients_invalid"

    def __init__(self, rows: list[RowError]) -> None:
        self.rows = rows
        first = rows[0]
        more = f" (and {len(rows) - 1} more bad rows)" if len(rows) > 1 else ""
        super().__init__(f"line {first.line}: {first.reason}{more}; no recipient was added.")
