"""Cursor pagination over `created_at`, newest first, for every list the API serves."""

from __future__ import annotations

from typing import Any

from django.utils.dateparse import parse_datetime
from rest_framework.exceptions import NotFound
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request


class NewestFirstCursorPagination(CursorPagination):
    ordering = ("-created_at", "-id")
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 200
    # What a page holds, for the schema's description of `page_size`.
    items = "Items"

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["description"] = (
                    f"{self.items} per page: {self.page_size} by default, at most "
                    f"{self.max_page_size} (more is capped); a value that is not a positive "
                    "integer means the default."
                )
            elif parameter["name"] == self.cursor_query_param:
                parameter["description"] = "The cursor from a page's `next` or `previous` link."
        return parameters

    def decode_cursor(self, request: Request) -> Cursor | None:
        cursor = super().decode_cursor(request)
        # DRF hands the cursor's position to the ORM unchecked, so a forged one was a 500. We
        # only hand out aware created_at timestamps: anything else is a bad cursor.
        if cursor is not None and cursor.position is not None:
            try:
                position = parse_datetime(str(cursor.position))
            except ValueError:
                position = None
            if position is None or position.tzinfo is None:
                raise NotFound(self.invalid_cursor_message)
        return cursor
