"""Paging cursors come back from the caller: a forged one is a 400 that says to start again."""

from __future__ import annotations

import base64
import json

from fastapi.testclient import TestClient

from tests.factories import device, error, ok, site

START_AGAIN = "cursor is not one this server gave; start again without it"


def _cursor(key: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")


FORGED = [
    _cursor([{"a": 1}]),
    _cursor([2**70]),
    _cursor([-(2**70)]),
    _cursor([True]),
    _cursor([None]),
    _cursor([[[]]]),
    _cursor([1.5]),
    _cursor(["a\x00b"]),
    _cursor(["x" * 300]),
    _cursor([]),
    _cursor({"a": 1}),
    _cursor(["2026-01-01T00:00:00+14:00", "x", "extra"]),
    _cursor(["0001-01-01T00:00:00+14:00", "abc"]),  # no such time in UTC
    _cursor(["2026-01-01T00:00:00", "abc"]),  # no time zone
    _cursor(["not a date", "abc"]),
    _cursor(["2026-01-01T00:00:00Z", 7]),
    base64.urlsafe_b64encode(b"[" * 5000).decode(),
    "!!!not-base64",
    "",
    "W" * 5000,
]


def test_forged_cursors_are_refused_with_a_400(client: TestClient) -> None:
    site(client)
    device(client, "web01")
    for listing in ("devices", "devices?sort=-name", "jobs", "audit", "audit?type=auth.*"):
        for cursor in FORGED:
            response = client.get(listing, params={"cursor": cursor})
            assert error(response, 400) == START_AGAIN, (listing, cursor, response.text)


def test_the_cursors_given_still_page(client: TestClient) -> None:
    site(client)
    for name in ("web01", "web02", "web03"):
        device(client, name)
    for listing in ("devices", "audit"):
        first = ok(client.get(listing, params={"limit": 2}))
        rest = ok(client.get(listing, params={"limit": 2, "cursor": first["next_cursor"]}))
        assert rest["items"]
        assert {str(item) for item in rest["items"]}.isdisjoint(map(str, first["items"]))


def test_a_time_with_no_utc_equivalent_is_a_422(client: TestClient) -> None:
    for listing in ("jobs", "audit", "audit/export"):
        for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"):
            detail = error(client.get(listing, params={"since": moment}), 422)
            assert "`since` is out of range in UTC" in detail
        assert client.get(listing, params={"until": "9999-12-31T23:59:59Z"}).status_code == 200
