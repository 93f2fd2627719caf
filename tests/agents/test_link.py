"""The site agent's link, without a central: addresses it accepts, back-off, its enrolment file."""

from __future__ import annotations

import asyncio
import stat
from pathlib import Path

import pytest

from agents.agent import CHUNK, Credits
from agents.link import Backoff, BadCentral, Enrolment, Lanes, central_urls
from agents.protocol import ConsoleOutput, Heartbeat, Report, TaskStatus


@pytest.mark.parametrize(
    ("central", "base", "link"),
    [
        ("https://central:8443", "https://central:8443", "wss://central:8443/api/v1/agents/link"),
        ("central.example", "https://central.example", "wss://central.example/api/v1/agents/link"),
        (
            "http://127.0.0.1:8000/",
            "http://127.0.0.1:8000",
            "ws://127.0.0.1:8000/api/v1/agents/link",
        ),
        ("ws://[::1]:80", "http://[::1]:80", "ws://[::1]:80/api/v1/agents/link"),
        (
            "http://localhost:8000",
            "http://localhost:8000",
            "ws://localhost:8000/api/v1/agents/link",
        ),
    ],
)
def test_the_central_address_becomes_the_link(central: str, base: str, link: str) -> None:
    assert central_urls(central) == (base, link)


@pytest.mark.parametrize(
    "central", ["http://10.0.0.5:8000", "ws://central:80", "ftp://x", "https://"]
)
def test_plain_text_is_refused_off_loopback(central: str) -> None:
    with pytest.raises(BadCentral):
        central_urls(central)


def test_back_off_doubles_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(first=1.0, cap=30.0)
    delays = [backoff.next() for _ in range(10)]
    ceilings = [min(30.0, 2.0**n) for n in range(10)]
    assert all(c / 2 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    backoff.reset()
    assert backoff.next() <= 1.0


def test_the_enrolment_is_private_to_its_owner(tmp_path: Path) -> None:
    folder = tmp_path / "agent"
    enrolment = Enrolment("https://central:8443", 3, "br12-a", "sh-br12", "rha_secret")
    enrolment.save(folder)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE((folder / "agent.json").stat().st_mode) == 0o600
    assert Enrolment.load(folder) == enrolment
    assert "rha_secret" not in repr(enrolment)


def test_reports_go_out_before_console_bytes() -> None:
    async def scenario() -> list[type]:
        lanes = Lanes()
        lanes.put(ConsoleOutput("s1", b"x" * CHUNK))
        lanes.put(ConsoleOutput("s1", b"y" * CHUNK))
        lanes.put(Report("t1", TaskStatus.SUCCEEDED))
        lanes.put(Heartbeat())
        return [type(await lanes.get()) for _ in range(4)]

    assert asyncio.run(scenario()) == [Report, Heartbeat, ConsoleOutput, ConsoleOutput]


def test_a_console_waits_for_credit_and_a_closed_one_for_nothing() -> None:
    async def scenario() -> None:
        credits = Credits(window=2 * CHUNK)
        credits.open("s1")
        await credits.take("s1", CHUNK)
        await credits.take("s1", CHUNK)
        waiting = asyncio.create_task(credits.take("s1", CHUNK))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        credits.grant("s1", CHUNK)
        await asyncio.wait_for(waiting, 1)
        blocked = asyncio.create_task(credits.take("s1", CHUNK))
        await asyncio.sleep(0.01)
        credits.forget("s1")  # the console closed: its pump must not hang
        await asyncio.wait_for(blocked, 1)
        await asyncio.wait_for(credits.take("never-opened", CHUNK), 1)

    asyncio.run(scenario())
