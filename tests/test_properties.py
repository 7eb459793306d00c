"""Property tests (Hypothesis) for the parsers of untrusted text on the initiate path:
`{{variable}}` substitution, E.164 phone numbers, and the text an assistant is given to say."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from urllib.parse import parse_qs, urlsplit

import phonenumbers
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from burki.text import unspeakable
from calls.serializers import SpokenTextField
from calls.templating import TemplateError, format_value, render
from telephony.e164 import parse_e164
from telephony.providers import get_provider
from telephony.providers.base import CallContext

# Deterministic: the same inputs on every run and machine, so CI cannot flake on a new find.
PROPERTIES = settings(
    derandomize=True,
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

names = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,63}", fullmatch=True)
scalars = st.one_of(
    st.text(max_size=30),
    # Values that read like placeholders: they must go in as text, never be expanded.
    names.map(lambda name: "{{" + name + "}}"),
    st.sampled_from(["{{", "}}", "{{a}}", "{{ b }}", "}}{{"]),
    st.integers(min_value=-(10**15), max_value=10**15),
    st.floats(),
    st.booleans(),
)
variables = st.dictionaries(names, scalars, max_size=6)
# Text rich in braces and in the names above, so placeholders (broken ones too) are common.
template_text = st.lists(
    st.sampled_from(["{", "}", "{{", "}}", " ", "\n", "a", "b", "_", "1", "é", "x y"]),
    max_size=20,
).map("".join)


def literals() -> st.SearchStrategy[str]:
    """Text between placeholders that cannot itself open or close one."""
    return st.text(max_size=12).filter(
        lambda s: "{{" not in s and "}}" not in s and not s.endswith("{") and not s.startswith("}")
    )


@st.composite
def templates(draw: st.DrawFn) -> tuple[list[tuple[str, str]], dict[str, object]]:
    """A template as (kind, text) parts, and variables supplying every name it uses."""
    parts: list[tuple[str, str]] = []
    for _ in range(draw(st.integers(0, 5))):
        parts.append(("literal", draw(literals())))
        parts.append(("name", draw(names)))
    parts.append(("literal", draw(literals())))
    used = {text for kind, text in parts if kind == "name"}
    supplied = draw(st.fixed_dictionaries({name: scalars for name in used}))
    supplied.update(draw(variables))
    return parts, supplied


def written(parts: list[tuple[str, str]], spacing: str) -> str:
    return "".join(
        text if kind == "literal" else "{{" + spacing + text + spacing + "}}"
        for kind, text in parts
    )


class TestTemplating:
    @PROPERTIES
    @given(text=st.one_of(template_text, st.text()), supplied=variables)
    @example(text="{{a}", supplied={"a": "x"})
    @example(text="{{{a}}}", supplied={"a": "x"})
    @example(text="{{ a }}{{", supplied={"a": "}}"})
    def test_any_text_renders_or_raises_template_error_only(
        self, text: str, supplied: dict[str, object]
    ) -> None:
        try:
            rendered = render(text, supplied, field="welcome_message")  # type: ignore[arg-type]
        except TemplateError as error:
            assert "welcome_message" in str(error)  # the 400 says which field is wrong
        else:
            assert isinstance(rendered, str)

    @PROPERTIES
    @given(template=templates(), spacing=st.sampled_from(["", " ", "  ", "\n"]))
    def test_with_every_name_supplied_each_placeholder_becomes_its_value_and_nothing_else(
        self, template: tuple[list[tuple[str, str]], dict[str, object]], spacing: str
    ) -> None:
        parts, supplied = template

        rendered = render(written(parts, spacing), supplied, field="agenda")  # type: ignore[arg-type]

        # Values go in as they are, once: a value that reads `{{other}}` stays that text.
        assert rendered == "".join(
            text if kind == "literal" else format_value(supplied[text])  # type: ignore[arg-type]
            for kind, text in parts
        )

    @PROPERTIES
    @given(template=templates(), missing=names)
    def test_one_missing_name_renders_nothing_and_names_it(
        self, template: tuple[list[tuple[str, str]], dict[str, object]], missing: str
    ) -> None:
        parts, supplied = template
        supplied.pop(missing, None)
        text = written([*parts, ("name", missing), ("literal", "")], "")

        with pytest.raises(TemplateError) as raised:
            render(text, supplied, field="welcome_message")  # type: ignore[arg-type]

        assert f"Variable '{missing}' is used in welcome_message" in str(raised.value)

    @PROPERTIES
    @given(
        text=template_text,
        supplied=st.dictionaries(
            names, st.one_of(st.text(alphabet="abc xyz_1"), st.integers()), max_size=4
        ),
    )
    @example(text="{{a}}", supplied={"a": "x"})
    def test_no_placeholder_of_a_supplied_name_survives_rendering(
        self, text: str, supplied: dict[str, object]
    ) -> None:
        try:
            rendered = render(text, supplied, field="agenda")  # type: ignore[arg-type]
        except TemplateError:
            return
        for name in supplied:
            assert not re.search(r"\{\{\s*" + re.escape(name) + r"\s*\}\}", rendered), rendered


def formatted(number: phonenumbers.PhoneNumber, style: int, separator: str) -> str:
    text = phonenumbers.format_number(number, style)
    return text.replace(" ", separator)


def example_numbers() -> list[phonenumbers.PhoneNumber]:
    found = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE):
            number = phonenumbers.example_number_for_type(region, kind)
            if number is not None:
                found.append(number)
    for code in sorted(phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS):
        number = phonenumbers.example_number_for_non_geo_entity(code)
        if number is not None:
            found.append(number)
    return found


real_looking_numbers = st.builds(
    formatted,
    st.sampled_from(example_numbers()),
    st.sampled_from(
        [phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL]
    ),
    st.sampled_from([" ", "-", ".", "", "  "]),
)
plus_and_digits = st.from_regex(r"\+[0-9 ()\-.]{0,30}", fullmatch=True)
# What people put after a number: extensions, notes, other punctuation.
with_a_tail = st.builds(
    str.__add__,
    real_looking_numbers,
    st.one_of(
        st.sampled_from([" ext. 89", ";ext=89", " x89", "#89", ",89", " (home)", "/2", "\t"]),
        st.text(max_size=8),
    ),
)
phone_texts = st.one_of(real_looking_numbers, with_a_tail, plus_and_digits, st.text(max_size=40))


class TestE164:
    @PROPERTIES
    @given(text=phone_texts)
    @example(text="+1 (555) 123-4567")
    @example(text="+" + "9" * 300)
    @example(text="+1 555 123 4567 ext. 89")  # was accepted, the extension silently dropped
    @example(text="+15551234567;ext=89")
    @example(text="+270000000")  # was accepted as +27000000: one zero lost
    @example(text="+8110000000000000")  # was accepted: 16 digits
    def test_it_parses_to_canonical_e164_or_raises_value_error(self, text: str) -> None:
        try:
            number = parse_e164(text)
        except ValueError:
            return

        assert re.fullmatch(r"\+[1-9][0-9]{1,14}", number), number
        # The canonical text is the same number as what was given, with nothing dropped.
        assert phonenumbers.parse(number, None) == phonenumbers.parse(text, None)
        assert parse_e164(number) == number

    @PROPERTIES
    @given(text=real_looking_numbers)
    def test_every_countrys_example_numbers_are_accepted_however_spaced(self, text: str) -> None:
        number = parse_e164(text)

        assert number == phonenumbers.format_number(
            phonenumbers.parse(text, None), phonenumbers.PhoneNumberFormat.E164
        )


class TestSpokenText:
    """Whatever text the API accepts to be said goes into every provider's answer document
    intact, and that document is well-formed (TwiML is XML 1.0, which cannot carry most
    control characters)."""

    field = SpokenTextField(max_length=4000, allow_blank=True, trim_whitespace=False)

    @PROPERTIES
    @given(st.text(max_size=40))
    @example("Hello\x01there")
    @example("a\x0bb")
    @example("\x1b[31m")
    @example("tab\tnew\nline\r")
    @example("\ufffe")
    def test_accepted_text_makes_a_well_formed_answer_on_every_provider(self, text: str) -> None:
        try:
            value = self.field.run_validation(text)
        except Exception:
            assert (
                unspeakable(text)
                or "\x00" in text
                or any("\ud800" <= ch <= "\udfff" for ch in text)
            )
            return
        context = CallContext(
            call_id="c",
            assistant_id=1,
            conversation_flow_id=None,
            welcome_message=value,
            agenda=value,
        )
        url = "wss://example.test/media-stream"

        twiml = ET.fromstring(get_provider("twilio").answer(context, url).body)  # noqa: S314 (ours)
        said = {p.get("name"): p.get("value") for p in twiml.iter("Parameter")}
        assert said["welcome_message"] == value
        ncco = json.loads(get_provider("vonage").answer(context, url).body)
        assert ncco[0]["endpoint"][0]["headers"]["agenda"] == value
        telnyx = json.loads(get_provider("telnyx").answer(context, url).body)
        query = parse_qs(urlsplit(telnyx["stream_url"]).query, keep_blank_values=True)
        assert query["welcome_message"] == [value]
