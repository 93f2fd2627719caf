"""Selectors are counted from their text before anything is expanded (issue 12: one
`GET /devices?select=n[1-10000000]` held the event loop 10.7 s and took 1.6 GB)."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
from ClusterShell.NodeSet import RESOLVER_NOGROUP, NodeSet
from fastapi.testclient import TestClient

from app.errors import InvalidInput, OverLimit
from app.inventory import selectors, transfer
from app.inventory.selectors import MAX_PIECES, MAX_SELECTED, check, count, expand
from tests.factories import device, error, ok, site

HUGE = "n[1-10000000]"
# 4,079 characters: 240 parts of ten million names each
MANY_HUGE = ",".join(f"n{i:03d}[1-10000000]" for i in range(240))
LIMIT = f"{MAX_SELECTED:,}"


@contextmanager
def peak_growth() -> Iterator[list[int]]:
    """The most memory allocated (in bytes, every thread) while the block ran."""
    found: list[int] = []
    tracemalloc.start()
    try:
        yield found
        found.append(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


@pytest.fixture
def never_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(selector: str) -> list[str]:
        raise AssertionError(f"expanded {selector[:40]!r}")

    monkeypatch.setattr(selectors, "_expand_checked", refuse)


def test_huge_ranges_are_counted_without_expanding() -> None:
    started = time.perf_counter()
    with peak_growth() as peak:
        assert count(HUGE) == (10_000_000, 2)
        assert count(MANY_HUGE) == (240 * 10_000_000, 480)
        assert count("n[1-1000000]x[1-1000000]y[1-1000000]")[0] == 10**18
        for selector in (HUGE, MANY_HUGE, "n[1-99999999999999999999]" * 40):
            with pytest.raises(OverLimit, match=f"more than the limit {LIMIT}"):
                check(selector)
    assert peak[0] < 1_000_000
    assert time.perf_counter() - started < 1


def test_what_counts() -> None:
    assert count("web01") == (1, 1)
    assert count("web[01-20],db1") == (21, 3)
    assert count("r[1-3]u[01-42]-[1,3]") == (3 * 42 * 2, 5)
    # excluded and intersected parts cost their expansion too, so they count
    assert count("n[1-60000]!n[1-60000]") == (120_000, 4)
    with pytest.raises(OverLimit, match=f"120,000 names, more than the limit {LIMIT}"):
        check("n[1-60000]!n[1-60000]")
    with pytest.raises(OverLimit, match=r"about 10\^81 names"):
        check("n[1-10]" * 81)


def test_too_many_pieces_is_refused_before_expanding() -> None:
    # one part and its ranges: 3,890 characters
    assert check(f"n[{','.join(str(i) for i in range(MAX_PIECES - 1))}]") == MAX_PIECES - 1
    with pytest.raises(OverLimit, match="1,001 names and ranges, more than the limit 1,000"):
        check(f"n[{','.join(str(i) for i in range(MAX_PIECES))}]")


@pytest.mark.parametrize(
    ("selector", "why"),
    [
        ("web[01-", "never closed"),
        ("web]01", "closes no"),
        ("n[[1-2]]", "do not nest"),
        ("n[]", "list of ranges"),
        ("n[a-b]", "list of ranges"),
        ("n[5-1]", "goes down"),
        ("web01,", "misses a name"),
        ("!web01", "misses a name"),
        ("n[01-100]", "padding"),  # ClusterShell's own rule, found when expanding
    ],
)
def test_bad_syntax_says_what_is_wrong(selector: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        expand(selector)


@pytest.mark.parametrize(
    "selector",
    [
        "web[01-03],db1",
        "web[01-12]!web[04-06]&web[01-09]",
        "n[1-3]^n[2-5]",
        "r[1-2]u[01-03]-[1,3]",
        "n1[0-2],n[1-2]0",
        "a[1-4]b[1-4],a[2-5]b[2-5]!a[3]b[3]",
    ],
)
def test_expansion_is_clustershells(selector: str) -> None:
    whole = sorted(str(node) for node in NodeSet(selector, resolver=RESOLVER_NOGROUP))
    assert expand(selector) == whole


def test_many_overlapping_multidimensional_parts_expand_in_linear_time() -> None:
    # As one NodeSet, ClusterShell folded these into each other for 79 s; part by part: 0.1 s.
    selector = ",".join(f"n[{i}-{i + 9}]x[{i}-{i + 9}]y[{i}-{i + 9}]" for i in range(90))
    assert count(selector)[0] == 90_000
    started = time.perf_counter()
    assert len(expand(selector)) == 25_119
    assert time.perf_counter() - started < 10


def _fleet(client: TestClient) -> None:
    site(client, "bj-dc1")
    for n in range(1, 4):
        device(client, f"web{n:02d}")


def _viewer(client: TestClient) -> TestClient:
    token = ok(client.post("tokens", json={"name": "look", "role": "viewer"}), 201)["token"]
    client.headers["Authorization"] = f"Bearer {token}"
    return client


@pytest.mark.usefixtures("never_expanded")
def test_a_viewer_listing_a_huge_range_gets_400_without_expansion(client: TestClient) -> None:
    _fleet(client)
    viewer = _viewer(client)
    with peak_growth() as peak:
        detail = error(viewer.get("devices", params={"select": HUGE}), 400)
    assert f"stands for 10,000,000 names, more than the limit {LIMIT}" in detail
    assert peak[0] < 20_000_000  # it was 1.6 GB
    detail = error(viewer.get("devices", params={"select": MANY_HUGE}), 400)
    assert f"stands for 2,400,000,000 names, more than the limit {LIMIT}" in detail
    assert viewer.get("devices", params={"select": HUGE}).json()["error"] == "InvalidInput"


@pytest.mark.usefixtures("never_expanded")
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_exporting_a_huge_range_gets_400_before_the_stream(client: TestClient, fmt: str) -> None:
    _fleet(client)
    for selector in (HUGE, MANY_HUGE):
        answer = client.get("devices/export", params={"select": selector, "format": fmt})
        assert f"more than the limit {LIMIT}" in error(answer, 400)


@pytest.mark.usefixtures("never_expanded")
@pytest.mark.parametrize("dry_run", [False, True])
def test_power_on_a_huge_range_gets_400(client: TestClient, dry_run: bool) -> None:
    _fleet(client)
    for selector in (HUGE, MANY_HUGE):
        body = {"select": selector, "action": "off", "dry_run": dry_run}
        assert f"more than the limit {LIMIT}" in error(client.post("power", json=body), 400)
    assert ok(client.get("jobs"))["items"] == []


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = selectors._expand_checked

    def counted(selector: str) -> list[str]:
        calls.append(selector)
        return real(selector)

    monkeypatch.setattr(selectors, "_expand_checked", counted)
    return calls


def test_an_export_expands_its_selector_once(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fleet(client)
    monkeypatch.setattr(transfer, "_CHUNK", 1)  # a page per device
    calls = _counting(monkeypatch)
    answer = client.get("devices/export", params={"select": "web[001-200],web[01-03]"})
    assert [row["name"] for row in ok(answer)] == ["web01", "web02", "web03"]
    assert len(calls) == 1


def _hold(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event, list[bool]]:
    """Expansion that waits to be released; `released` says whether it was, or timed out."""
    started, release, released = threading.Event(), threading.Event(), []
    real: Callable[[str], list[str]] = selectors._expand_checked

    def held(selector: str) -> list[str]:
        started.set()
        released.append(release.wait(10))
        return real(selector)

    monkeypatch.setattr(selectors, "_expand_checked", held)
    return started, release, released


def test_the_event_loop_answers_while_a_selector_is_expanded(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fleet(client)
    started, release, released = _hold(monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        listing = pool.submit(client.get, "devices", params={"select": "web[01-03],x[1-200]"})
        assert started.wait(10)
        assert ok(client.get("healthz"))  # on the loop, while the expansion is held
        release.set()
        assert [d["name"] for d in ok(listing.result(10))["items"]] == ["web01", "web02", "web03"]
    assert released == [True]
