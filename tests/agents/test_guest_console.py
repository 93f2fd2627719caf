"""A guest's console follows the guest across a restart, and ends when it stays off."""

from __future__ import annotations

import asyncio

from agents.drivers.base import ConsoleChannel, Unreachable
from agents.drivers.fake import FakeConsole
from agents.drivers.guest_console import REATTACHED, FollowingConsole
from agents.protocol import PowerState


def _ended(banner: bytes) -> FakeConsole:
    """A console that printed `banner` and whose command then ended (the domain stopped)."""
    console = FakeConsole(banner=banner)
    console._output.put_nowait(None)
    return console


async def _read(console: FollowingConsole) -> bytes:
    seen = b""
    async for data in console:
        seen += data
    return seen


def test_the_console_is_attached_again_when_the_guest_runs_again() -> None:
    states: list[PowerState | Exception] = [
        PowerState.OFF,
        Unreachable("between destroy and start"),
        PowerState.ON,
    ]  # then off for good
    attached: list[tuple[int, int]] = []
    second = _ended(b"SeaBIOS (version 1.16)\r\n")

    async def state() -> PowerState:
        answer = states.pop(0) if states else PowerState.OFF
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def attach(cols: int, rows: int) -> ConsoleChannel:
        attached.append((cols, rows))
        return second

    async def main() -> bytes:
        console = FollowingConsole(attach, state, _ended(b"login: "), cols=80, rows=25,
                                   follow=0.5, every=0.01)  # fmt: skip
        await console.resize(132, 43)
        return await asyncio.wait_for(_read(console), 5)

    seen = asyncio.run(main())
    assert seen.startswith(b"login: " + REATTACHED + b"SeaBIOS")
    assert attached[0] == (132, 43)  # the viewer's size, as it was last set


def test_a_guest_that_stays_off_ends_the_console() -> None:
    async def off() -> PowerState:
        return PowerState.OFF

    async def attach(cols: int, rows: int) -> ConsoleChannel:
        raise AssertionError("a guest that is off is not attached")

    async def main() -> bytes:
        console = FollowingConsole(attach, off, _ended(b"Power down.\r\n"), cols=80, rows=25,
                                   follow=0.2, every=0.01)  # fmt: skip
        return await asyncio.wait_for(_read(console), 5)

    assert asyncio.run(main()) == b"Power down.\r\n"


def test_closing_ends_the_console_at_once() -> None:
    async def main() -> None:
        first = FakeConsole()

        async def off() -> PowerState:
            return PowerState.OFF

        async def attach(cols: int, rows: int) -> ConsoleChannel:
            raise AssertionError("closed consoles are not attached")

        console = FollowingConsole(attach, off, first, cols=80, rows=25, follow=30)
        reading = asyncio.create_task(_read(console))
        await asyncio.sleep(0.05)
        await console.close()
        assert await asyncio.wait_for(reading, 2) == b""
        assert first.closed

    asyncio.run(main())
