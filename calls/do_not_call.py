"""The organization's do-not-call list: a number on it is never dialled, by `POST /calls/initiate`,
by a campaign or by anything else that places a call (`call_initiate` checks it first, before
anything is recorded or held).

`do_not_call_check` is the one question every dialling path asks.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction

from calls.errors import NumberOnDoNotCallList
from calls.models import DoNotCallNumber
from telephony.e164 import parse_e164

# Rows one CSV import may hold.
MAX_IMPORT_ROWS = 100_000


def do_not_call_listed(*, organization_id: int, number: str) -> bool:
    """One indexed lookup (the list's unique (organization, number) index)."""
    return DoNotCallNumber.objects.filter(organization_id=organization_id, number=number).exists()


def do_not_call_check(*, organization_id: int, number: str) -> None:
    """Raise NumberOnDoNotCallList when `number` (E.164) may not be dialled by the organization."""
    if do_not_call_listed(organization_id=organization_id, number=number):
        raise NumberOnDoNotCallList(number)


def do_not_call_add(
    *, organization_id: int, number: str, added_by: str, reason: str = ""
) -> tuple[DoNotCallNumber, bool]:
    """Put `number` (E.164) on the list; returns the entry and whether it is new (a number
    already listed keeps who added it first, and when)."""
    try:
        with transaction.atomic():
            entry = DoNotCallNumber.objects.create(
                organization_id=organization_id,
                number=number,
                added_by=added_by[:200],
                reason=reason[:200],
            )
            return entry, True
    except IntegrityError:
        return DoNotCallNumber.objects.get(organization_id=organization_id, number=number), False


def do_not_call_remove(*, organization_id: int, number: str) -> bool:
    deleted, _ = DoNotCallNumber.objects.filter(
        organization_id=organization_id, number=number
    ).delete()
    return bool(deleted)


@dataclass
class ImportReport:
    added: int = 0
    already_listed: int = 0
    errors: list[str] = field(default_factory=list)  # "line 3: ..." for each refused row


def do_not_call_import_csv(*, organization_id: int, text: str, added_by: str) -> ImportReport:
    """Add the numbers of a CSV with a header row holding `number` (and optionally `reason`).

    All or nothing: a file with any bad row adds no number, and the report names every bad
    line (line 1 is the header)."""
    report = ImportReport()
    try:
        return _import(organization_id=organization_id, text=text, added_by=added_by)
    except csv.Error as exc:
        report.errors.append(f"the file is not CSV: {exc}")
        return report


def _import(*, organization_id: int, text: str, added_by: str) -> ImportReport:
    report = ImportReport()
    reader = csv.DictReader(io.StringIO(text))
    headers = [name.strip().lower() for name in reader.fieldnames or []]
    if "number" not in headers:
        report.errors.append("line 1: the header row must have a `number` column")
        return report
    reader.fieldnames = headers
    rows: list[tuple[str, str]] = []
    for line, row in enumerate(reader, start=2):
        if len(rows) >= MAX_IMPORT_ROWS:
            report.errors.append(f"line {line}: at most {MAX_IMPORT_ROWS} rows per file")
            break
        raw = (row.get("number") or "").strip()
        try:
            rows.append((parse_e164(raw), (row.get("reason") or "").strip()))
        except ValueError as exc:
            report.errors.append(f"line {line}: {raw or 'an empty number'} {exc}")
    if report.errors:
        return report
    with transaction.atomic():
        for number, reason in rows:
            _, created = do_not_call_add(
                organization_id=organization_id, number=number, added_by=added_by, reason=reason
            )
            if created:
                report.added += 1
            else:
                report.already_listed += 1
    return report
