"""Rejected credentials are counted, not copied: a flood of bogus tokens writes a few small
events (docs/security.md, Before authentication)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from fastapi.testclient import TestClient

from app.audit.models import EventType
from app.audit.service import Actor, Event
from app.config import Settings
from app.identity import rejections
from app.identity.rejections import Presented, RefusalLog, Rejection
from app.main import create_app
from tests.factories import error
from tests.identity.conftest import ManualClock, audit_log

BOGUS = {"Authorization": "Bearer rh_not-a-token-of-ours"}


class _Recorder:
    """Stands for the audit recorder: keeps what it is given."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def record(self, *events: Event) -> None:
        self.events += events

    async def record_all(self, events: object) -> None:
        self.events += list(events)  # type: ignore[call-overload]


def _log() -> tuple[RefusalLog, _Recorder, ManualClock]:
    recorder, clock = _Recorder(), ManualClock()
    log = RefusalLog(recorder, window=60.0, clock=clock)  # type: ignore[arg-type]
    return log, recorder, clock


def _rejection(source: str = "198.51.100.1", kind: Presented = Presented.TOKEN) -> Rejection:
    return Rejection.of(kind, source, "rh_abcdefghijkl", "/api/v1/sites", "curl/8")


def _counts(recorder: _Recorder) -> list[tuple[str | None, str, int]]:
    return [(e.source_ip, e.details["credential"], e.details["count"]) for e in recorder.events]


def test_one_event_a_minute_per_source_and_credential_with_a_count() -> None:
    async def scenario() -> None:
        log, recorder, clock = _log()
        for _ in range(300):
            await log.record(_rejection())
        await log.record(_rejection(kind=Presented.SESSION))
        await log.record(_rejection("198.51.100.2"))
        assert _counts(recorder) == [
            ("198.51.100.1", "token", 1),
            ("198.51.100.1", "session", 1),
            ("198.51.100.2", "token", 1),
        ]
        await log.flush()
        assert len(recorder.events) == 3  # the minute is not over
        clock.advance(60)
        await log.flush()
        assert _counts(recorder)[3:] == [("198.51.100.1", "token", 299)]
        await log.record(_rejection())  # that event was this minute's
        assert len(recorder.events) == 4
        clock.advance(60)
        await log.record(_rejection())  # a minute after it: at once, with the one before
        assert _counts(recorder)[4:] == [("198.51.100.1", "token", 2)]
        await log.record(_rejection(kind=Presented.SESSION))  # its own minute is long over
        await log.record(_rejection(kind=Presented.SESSION))
        await log.close()  # shutdown writes what is pending
        assert _counts(recorder)[5:] == [
            ("198.51.100.1", "session", 1),
            ("198.51.100.1", "session", 1),
        ]
        assert sum(count for _, _, count in _counts(recorder)) == 306  # every one counted

    asyncio.run(scenario())


def test_other_events_are_written_as_they_come() -> None:
    async def scenario() -> None:
        log, recorder, _ = _log()
        denied = Event(EventType.ACCESS_DENIED, Actor("user", 1, "bob"), outcome="denied")
        await log.record(denied)
        await log.record(denied)
        assert recorder.events == [denied, denied]

    asyncio.run(scenario())


def test_a_flood_of_sources_shares_one_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rejections, "MAX_KEYS", 3)

    async def scenario() -> None:
        log, recorder, _ = _log()
        for n in range(10):
            await log.record(_rejection(f"192.0.2.{n}"))
        await log.close()
        assert _counts(recorder) == [
            ("192.0.2.0", "token", 1),
            ("192.0.2.1", "token", 1),
            ("192.0.2.2", "token", 1),
            (None, "token", 1),  # the others, together
            (None, "token", 6),
        ]

    asyncio.run(scenario())


def test_three_hundred_bogus_tokens_make_two_events(settings: Settings) -> None:
    """The attack: every request with a bogus token wrote an audit event of its own."""
    with TestClient(create_app(settings), raise_server_exceptions=False) as anonymous:
        for _ in range(300):
            assert "unknown, expired or revoked" in error(
                anonymous.get("/api/v1/sites", headers=BOGUS), 401
            )
        assert [e.details["count"] for e in audit_log(settings, "auth.rejected")] == [1]
    events = audit_log(settings, "auth.rejected")  # the rest, written at shutdown
    assert [e.details["count"] for e in events] == [1, 299]
    assert {e.details["prefix"] for e in events} == {"rh_not-a-t"}


def test_a_huge_bogus_request_makes_a_small_event(settings: Settings) -> None:
    """The attack: 60 KB of token, user agent and path, copied into the chain."""
    huge = {"Authorization": "Bearer rh_" + "x" * 60_000, "User-Agent": "u" * 60_000}
    with TestClient(create_app(settings), raise_server_exceptions=False) as anonymous:
        error(anonymous.get("/api/v1/devices/" + "d" * 60_000, headers=huge), 401)
    (event,) = audit_log(settings, "auth.rejected")
    assert len(orjson.dumps(event.details)) < 400
    assert event.details["prefix"] == "rh_xxxxxxx"
    assert event.details["path"].endswith("…")
    assert len(event.details["user_agent"]) == rejections.TEXT_CHARS
