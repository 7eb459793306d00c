"""The values more than one provider parses (telephony.providers.parsing)."""

from __future__ import annotations

from http.client import RemoteDisconnected

import pytest
import requests
import urllib3

from telephony.providers.parsing import error_detail, sent_before_it_failed, whole_seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("12", 12),
        ("0", 0),
        ("", None),
        (None, None),
        ("²", None),  # a digit to str.isdigit(), which int() refuses
        ("٣", None),  # an Arabic-Indic three, which int() would read
        ("1e3", None),
        ("3.5", None),
        ("-1", None),
    ],
)
def test_a_duration_is_whole_seconds_written_in_ascii_digits(
    text: str | None, seconds: int | None
) -> None:
    assert whole_seconds(text) == seconds


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(
            {"errors": [{"code": "10015", "title": "Invalid value for connection_id"}]},
            "Invalid value for connection_id.",
            id="telnyx-title",
        ),
        pytest.param(
            {"errors": [{"title": "Invalid", "detail": "The number is not enabled."}, {}]},
            "The number is not enabled.",
            id="telnyx-detail-first",
        ),
        pytest.param(
            {
                "type": "https://developer.nexmo.com/api-errors#bad-request",
                "title": "Bad Request",
                "detail": "Invalid To number.",
            },
            "Bad Request: Invalid To number.",
            id="problem-json",
        ),
        pytest.param(
            {"title": "Internal Server Error"}, "Internal Server Error.", id="problem-json-title"
        ),
        pytest.param({"errors": []}, "the request was not accepted.", id="no-errors"),
        pytest.param({"errors": ["down"]}, "the request was not accepted.", id="not-an-error"),
        pytest.param({}, "the request was not accepted.", id="empty"),
        pytest.param("<html>Bad gateway</html>", "the request was not accepted.", id="text"),
        pytest.param(None, "the request was not accepted.", id="no-body"),
    ],
)
def test_an_error_body_reads_as_one_sentence(body: object, detail: str) -> None:
    assert error_detail(body) == detail


@pytest.mark.parametrize(
    ("failure", "sent"),
    [
        (requests.ConnectTimeout("connect timed out"), False),
        (requests.ConnectionError(urllib3.exceptions.MaxRetryError(None, "/", OSError())), False),
        (requests.ConnectionError("refused"), False),
        (requests.ReadTimeout("read timed out"), True),
        (requests.exceptions.ChunkedEncodingError("cut short"), True),
        (
            requests.ConnectionError(
                urllib3.exceptions.ProtocolError("Connection aborted.", RemoteDisconnected("x"))
            ),
            True,
        ),
        (
            requests.ConnectionError(
                urllib3.exceptions.MaxRetryError(
                    None, "/", urllib3.exceptions.ProtocolError("Connection aborted.")
                )
            ),
            True,
        ),
    ],
    ids=repr,
)
def test_a_failure_after_the_request_was_sent_is_told_apart(failure, sent: bool) -> None:
    assert sent_before_it_failed(failure) is sent
