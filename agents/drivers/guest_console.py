"""A guest's console that outlives a restart of the guest.

`virsh console` and `xl console` end when the domain stops, and a cycle or a reset through
destroy + start stops it for a moment: the viewer watching for the firmware's screen would lose
the console just before the screen it waits for. So when the host's console command ends, the
guest is watched for `follow` seconds; if it runs again the console is attached again (a line
says so) and the bytes go on. A guest that stays off ends the console as the device's close.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

from agents.drivers.base import ConsoleChannel, DriverError, Unreachable
from agents.protocol import PowerState

Attach = Callable[[int, int], Awaitable[ConsoleChannel]]
State = Callable[[], Awaitable[PowerState]]
REATTACHED = b"\r\n[rackhand: the host's console command ended; attached again]\r\n"


class FollowingConsole:
    """A `ConsoleChannel` over the host's console command, attached again after a restart."""

    def __init__(
        self,
        attach: Attach,
        state: State,
        first: ConsoleChannel,
        *,
        cols: int,
        rows: int,
        follow: float = 20.0,
        every: float = 0.2,
    ) -> None:
        self._attach = attach
        self._state = state
        self._channel = first
        self._size = (cols, rows)
        self._follow = follow
        self._every = every
        self._closed = False
        self._between = False  # the old console ended, the new one is not attached yet

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._output()

    async def _output(self) -> AsyncIterator[bytes]:
        while True:
            async for data in self._channel:
                yield data
            if self._closed or not await self._again():
                return
            yield REATTACHED

    async def _again(self) -> bool:
        """Attach again once the guest runs, within `follow` seconds; False if it does not."""
        self._between = True
        try:
            async with asyncio.timeout(self._follow):
                while not self._closed:
                    try:
                        if await self._state() is PowerState.ON:
                            await self._channel.close()
                            self._channel = await self._attach(*self._size)
                            if self._closed:  # closed while attaching: the new one goes too
                                await self._channel.close()
                            return not self._closed
                    except DriverError:
                        pass  # between destroy and start, or the host is busy: ask again
                    await asyncio.sleep(self._every)
        except TimeoutError:
            pass
        finally:
            self._between = False
        return False

    async def write(self, data: bytes) -> None:
        if self._closed:
            raise Unreachable("the guest's console is closed")
        if self._between:
            return  # no console to type into while the guest restarts: keys are dropped
        await self._channel.write(data)

    async def send_break(self) -> None:
        await self._channel.send_break()

    async def resize(self, cols: int, rows: int) -> None:
        self._size = (cols, rows)
        await self._channel.resize(cols, rows)

    async def close(self) -> None:
        self._closed = True
        await self._channel.close()
