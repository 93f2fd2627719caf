"""`redact_urls`: what stays of a URL (or a message quoting one) when it may be shown."""

from __future__ import annotations

import logging

import pytest

from app.urls import REDACT_URLS, redact_urls


@pytest.mark.parametrize(
    ("given", "shown"),
    [
        ("https://h.example/hooks", "https://h.example/hooks"),
        ("https://h.example/hooks?token=abc&x=1", "https://h.example/hooks?token=***&x=***"),
        ("https://h.example/hooks?abc123", "https://h.example/hooks?***"),
        ("https://h.example/hooks?empty=&a=b", "https://h.example/hooks?empty=&a=***"),
        ("https://user:pw@h.example:8443/p", "https://***@h.example:8443/p"),
        ("https://tok@h.example/p", "https://***@h.example/p"),
        ("https://h.example/p#access_token=x", "https://h.example/p#***"),
        ("wss://h.example/s?key=k", "wss://h.example/s?key=***"),
        ("http://[::1/broken?token=abc", "http://***"),
        (
            "ConnectError: cannot reach 'https://u:p@h.example/a?t=1' (refused)",
            "ConnectError: cannot reach 'https://***@h.example/a?t=***' (refused)",
        ),
        ("Cannot POST /hooks?token=abc", "Cannot POST /hooks?token=***"),
        ("is it up? no", "is it up? no"),
        ("no URL here", "no URL here"),
    ],
)
def test_user_info_query_values_and_fragments_are_hidden(given: str, shown: str) -> None:
    assert redact_urls(given) == shown
    assert redact_urls(shown) == shown  # what is shown stays as it is


def _record(message: str, *args: object, failure: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(failure), failure, failure.__traceback__) if failure else None
    return logging.LogRecord("httpx", logging.INFO, __file__, 1, message, args, exc_info)


def test_the_log_filter_redacts_the_message_and_its_traceback() -> None:
    request = _record("HTTP Request: %s %s", "POST", "https://h.example/hooks?token=abc")
    assert REDACT_URLS.filter(request)
    assert request.getMessage() == "HTTP Request: POST https://h.example/hooks?token=***"
    try:
        raise ValueError("bad answer from https://h.example/hooks?token=abc")
    except ValueError as exc:
        failed = _record("failed", failure=exc)
    REDACT_URLS.filter(failed)
    assert failed.exc_text is not None
    assert "hooks?token=***" in failed.exc_text
    assert "token=abc" not in failed.exc_text
