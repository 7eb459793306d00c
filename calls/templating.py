"""`{{variable}}` substitution for welcome messages and agendas.

One pass over the text: a value is inserted as-is and never read again, so a value that itself
contains `{{...}}` cannot pull in another variable. Anything between `{{` and `}}` must be a
variable name that was supplied; otherwise nothing is rendered and the caller gets an error,
so no call is ever placed with a raw placeholder in what the assistant says.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from burki.errors import DomainError

PLACEHOLDER = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

Scalar = str | int | float | bool


class TemplateError(DomainError):
    """A placeholder that is not a name, or names a variable that was not supplied."""

    code = "placeholder_invalid"


def format_value(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def placeholders(text: str) -> list[str]:
    return [match.group(1).strip() for match in PLACEHOLDER.finditer(text)]


def render(text: str, variables: Mapping[str, Scalar], *, field: str) -> str:
    """Substitute every `{{ name }}` in `text`; raise TemplateError naming what is wrong."""
    for name in placeholders(text):
        if not NAME.fullmatch(name):
            raise TemplateError(f"{field} has an invalid placeholder {{{{{name}}}}}.")
        if name not in variables:
            raise TemplateError(
                f"Variable '{name}' is used in {field} but was not supplied in variables."
            )
    return PLACEHOLDER.sub(lambda match: format_value(variables[match.group(1).strip()]), text)
