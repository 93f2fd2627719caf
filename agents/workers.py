"""Device I/O spread over child processes: a driver's work on several cores, off the caller's GIL.

pyghmi is pure Python and CPU-bound at login, and the IPMI driver runs one reactor thread per
process; in the central's process it also competes with the web server and the database. A
`WorkerPool` looks like a driver but forwards each call to one of N `python -m agents.worker`
children, chosen by a stable hash of the endpoint, so a BMC's warm session stays in one child
and the runner's one-request-per-BMC ordering holds there. Calls and answers travel as JSON
lines over the children's stdin and stdout; a child's stderr is the caller's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Any

import orjson

from agents.drivers.base import (
    AuthFailed,
    DeviceTimeout,
    DriverError,
    Refused,
    Unreachable,
    Unsupported,
)
from agents.protocol import BootDevice, Path, PowerAction, PowerState

log = logging.getLogger(__name__)

LINE_LIMIT = 16 * 1024 * 1024  # bytes of one JSON line, either way; far above any real message
CLOSE_TIMEOUT = 10.0  # s a child gets to close its driver after its stdin closes

# Errors that cross the pipe by class name; any other name arrives as Refused.
ERRORS: dict[str, type[DriverError]] = {
    cls.__name__: cls
    for cls in (DriverError, Unreachable, DeviceTimeout, AuthFailed, Unsupported, Refused)
}

_ROOT = str(FilePath(__file__).resolve().parents[1])  # where `agents` is: the children import it
_LABELS = {"ipmi": "IPMI", "redfish": "Redfish"}


@dataclass(eq=False)
class _Call:
    future: asyncio.Future[PowerState | None]
    status: bool  # a status read: nothing was done if the child died under it


@dataclass(eq=False)
class _Child:
    process: asyncio.subprocess.Process
    pending: dict[int, _Call] = field(default_factory=dict)
    outbox: list[bytes] = field(default_factory=list)
    alive: bool = True
    reader: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        """Queue one line; a loop turn's lines go out in one write."""
        if not self.outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self.outbox.append(orjson.dumps(message, option=orjson.OPT_APPEND_NEWLINE))

    def _flush(self) -> None:
        data = b"".join(self.outbox)
        self.outbox.clear()
        stdin = self.process.stdin
        if self.alive and stdin is not None and not stdin.is_closing():
            stdin.write(data)  # buffered by the transport; bounded by the calls in flight


class WorkerPool:
    """A driver (power, set_boot, close) whose calls run in `processes` child processes.

    `kind` names the driver each child runs ("ipmi", "redfish", "fake", or "module:Class"),
    `options` its keyword arguments (for IPMI each child gets its own `max_logins`). Children
    start on first use; one that dies fails the calls it held and is started again by the
    next call for it.
    """

    def __init__(
        self,
        kind: str = "ipmi",
        options: Mapping[str, Any] | None = None,
        *,
        processes: int | None = None,
    ) -> None:
        self._kind = kind
        self._options = orjson.dumps(dict(options or {})).decode()
        self._slots: list[_Child | None] = [None] * max(1, processes or os.cpu_count() or 1)
        self._starting = [asyncio.Lock() for _ in self._slots]
        self._ids = itertools.count()
        self._label = _LABELS.get(kind, kind)
        self._closed = False

    def pid(self, path: Path) -> int | None:
        """The process id of the child serving `path`'s endpoint, if it is running."""
        child = self._slots[self._slot(path)]
        return child.process.pid if child is not None and child.alive else None

    async def power(self, path: Path, action: PowerAction) -> PowerState:
        message = {"op": "power", "path": path, "action": action}
        state = await self._call(path, message, status=action is PowerAction.STATUS)
        assert state is not None
        return state

    async def set_boot(self, path: Path, device: BootDevice, persistent: bool) -> None:
        message = {"op": "boot", "path": path, "device": device, "persistent": persistent}
        await self._call(path, message, status=False)

    async def close(self) -> None:
        """Close each child's stdin so it closes its driver and exits; kill it if it lingers.

        Calls still pending fail as if the child had died.
        """
        self._closed = True
        await asyncio.gather(*(self._stop(slot) for slot in range(len(self._slots))))

    def _slot(self, path: Path) -> int:
        """Stable across runs and processes (unlike `hash`), so routing is reproducible."""
        return zlib.crc32(path.endpoint.encode()) % len(self._slots)

    async def _call(
        self, path: Path, message: dict[str, Any], *, status: bool
    ) -> PowerState | None:
        if self._closed:
            raise DriverError(f"the {self._label} worker pool is closed")
        child = await self._child(self._slot(path))
        call_id = next(self._ids)
        future: asyncio.Future[PowerState | None] = asyncio.get_running_loop().create_future()
        child.pending[call_id] = _Call(future, status)
        message["id"] = call_id
        child.send(message)
        try:
            return await future
        except asyncio.CancelledError:
            if child.pending.pop(call_id, None) is not None:
                child.send({"op": "cancel", "id": call_id})
            raise

    async def _child(self, slot: int) -> _Child:
        child = self._slots[slot]
        if child is not None and child.alive:
            return child
        async with self._starting[slot]:
            if self._closed:
                raise DriverError(f"the {self._label} worker pool is closed")
            child = self._slots[slot]
            if child is None or not child.alive:
                child = self._slots[slot] = await self._start()
            return child

    async def _start(self) -> _Child:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "agents.worker",
            self._kind,
            self._options,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=_ROOT,
            limit=LINE_LIMIT,
        )
        child = _Child(process)
        child.reader = asyncio.create_task(self._read(child), name=f"worker-{process.pid}")
        return child

    async def _read(self, child: _Child) -> None:
        """Answers to futures until the child's stdout ends; then its pending calls fail."""
        stdout = child.process.stdout
        assert stdout is not None
        try:
            while line := await stdout.readline():
                answer = orjson.loads(line)
                call = child.pending.pop(answer["id"], None)
                if call is None or call.future.done():
                    continue  # cancelled here meanwhile
                error = answer.get("error")
                if error is None:
                    state = answer["state"]
                    call.future.set_result(None if state is None else PowerState(state))
                else:
                    call.future.set_exception(ERRORS.get(error, Refused)(answer["message"]))
        except (ValueError, KeyError, TypeError):
            log.exception(
                "the %s worker %d wrote garbage; stopping it", self._kind, child.process.pid
            )
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        finally:
            child.alive = False
            self._fail(child)
            if child.process.stdin is not None:
                child.process.stdin.close()  # or its pipe outlives a killed child
        code = await child.process.wait()
        if not self._closed:
            log.warning(
                "the %s worker %d exited (code %s); the next call for it starts a new one",
                self._kind,
                child.process.pid,
                code,
            )

    def _fail(self, child: _Child) -> None:
        gone = f"the {self._label} worker process exited"
        for call in child.pending.values():
            if call.future.done():
                continue
            if call.status:
                error: DriverError = Unreachable(f"{gone} before the device answered; try again")
            else:
                error = DeviceTimeout(
                    f"{gone}; the action may or may not have run; check the power status"
                )
            call.future.set_exception(error)
        child.pending.clear()

    async def _stop(self, slot: int) -> None:
        async with self._starting[slot]:  # a child being started is stopped once it is up
            child = self._slots[slot]
        if child is None:
            return
        if child.process.stdin is not None:
            child.process.stdin.close()
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await child.process.wait()
        except TimeoutError:
            log.warning("the %s worker %d did not exit; killing it", self._kind, child.process.pid)
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()
        if child.reader is not None:
            await child.reader
