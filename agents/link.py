"""A site agent's link to its central: it dials out over a WebSocket on TLS and keeps it up.

The first start trades the one-time join token for the agent's own credential
(`POST /api/v1/agents/join`), kept in the data folder (0600); every start after that needs
only the central's address and the folder. On the link the agent says `Hello`, the central
answers `Welcome` (or a `Refusal`: a final one stops the agent with the reason), and both beat
every few seconds; a link silent for three beats is dead. A dropped link is dialled again with
exponential back-off and jitter (capped at 30 s); what the agent was doing when it dropped is
stopped, since the central has already ended it or given it to the site's other agent.

Nothing here needs the central's stack: no database, no FastAPI.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import random
import ssl
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from agents.agent import Agent, version
from agents.protocol import (
    FINAL_REFUSALS,
    PROTOCOL,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOutput,
    FromAgent,
    Heartbeat,
    Hello,
    Message,
    Refusal,
    RefusedBecause,
    Welcome,
    decode,
    encode,
)

log = logging.getLogger("agents.link")

ENROLMENT_FILE = "agent.json"
LINK_PATH = "/api/v1/agents/link"
JOIN_PATH = "/api/v1/agents/join"
MAX_FRAME = 4 * 1024 * 1024
WELCOME_WAIT = 10.0  # s for the central's answer to the hello
LINK_ERRORS = (OSError, TimeoutError, ConnectionClosed, InvalidHandshake, ValueError)
STEADY = 30.0  # s a link must have lasted for the back-off to start again from the bottom


class Refused(Exception):
    """The central refused the agent for a reason another try cannot mend."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal


class BadCentral(ValueError):
    """The central's address cannot be used (a plain-text one that is not loopback, say)."""


def central_urls(central: str) -> tuple[str, str]:
    """The central's https (or loopback http) base URL and its link's wss (or ws) URL.

    Plain text is refused unless the central is on loopback: the link carries BMC secrets.
    """
    parts = urlsplit(central if "://" in central else f"https://{central}")
    secure = {"https": True, "wss": True, "http": False, "ws": False}.get(parts.scheme)
    if secure is None or not parts.hostname:
        raise BadCentral(f"{central!r} is not a central's address; give https://HOST[:PORT]")
    if not secure and not _loopback(parts.hostname):
        raise BadCentral(
            f"{central} is plain text and not on this machine: the link carries BMC secrets, "
            "so give the central's https:// address (with --ca-cert if its certificate is "
            "your own CA's)"
        )
    base = urlunsplit(("https" if secure else "http", parts.netloc, parts.path.rstrip("/"), "", ""))
    link = urlunsplit(("wss" if secure else "ws", parts.netloc, parts.path.rstrip("/"), "", ""))
    return base, link + LINK_PATH


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Enrolment:
    """Who this agent is, as the central knows it; the credential is its only secret."""

    central: str
    agent_id: int
    name: str
    site: str
    credential: str

    def __repr__(self) -> str:
        return f"Enrolment({self.site}/{self.name} id {self.agent_id} at {self.central})"

    @classmethod
    def load(cls, folder: Path) -> Enrolment | None:
        file = folder / ENROLMENT_FILE
        if not file.exists():
            return None
        return cls(**json.loads(file.read_text()))

    def save(self, folder: Path) -> None:
        """Written 0600 in a 0700 folder: the credential opens the site's link."""
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        file = folder / ENROLMENT_FILE
        temporary = file.with_suffix(".tmp")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w") as out:
            json.dump(asdict(self), out)
        os.replace(temporary, file)


async def join(central: str, token: str, tls: ssl.SSLContext | None) -> Enrolment:
    """Trade the join token for the agent's credential (once)."""
    base, _ = central_urls(central)
    async with httpx.AsyncClient(verify=tls or True, timeout=30) as client:
        answer = await client.post(base + JOIN_PATH, json={"join_token": token})
    if answer.status_code != 200:
        try:
            detail = answer.json().get("detail", answer.text)
        except ValueError:
            detail = answer.text[:200]
        refusal = Refusal(
            RefusedBecause.CREDENTIAL, f"the central refused the join token: {detail}"
        )
        raise Refused(refusal)
    body = answer.json()
    return Enrolment(central, body["id"], body["name"], body["site"], body["credential"])


class Backoff:
    """Exponential back-off with full jitter, capped: agents of a site that lost the central
    at once do not all dial again in the same second."""

    def __init__(self, first: float = 1.0, cap: float = 30.0) -> None:
        self.first = first
        self.cap = cap
        self._attempt = 0

    def reset(self) -> None:
        self._attempt = 0

    def next(self) -> float:
        ceiling = min(self.cap, self.first * 2**self._attempt)
        self._attempt += 1
        return random.uniform(ceiling / 2, ceiling)


class Lanes:
    """What waits to go out on a link: urgent messages (orders, reports, cancels, heartbeats)
    always before console traffic, so a busy console never delays a power order. A console's
    own messages (bytes, controls, its end) share one lane and keep their order."""

    def __init__(self) -> None:
        self._urgent: deque[Message] = deque()
        self._bulk: deque[Message] = deque()
        self._ready = asyncio.Event()

    def put(self, message: Message) -> None:
        bulk = isinstance(message, ConsoleOutput | ConsoleInput | ConsoleControl | ConsoleClosed)
        (self._bulk if bulk else self._urgent).append(message)
        self._ready.set()

    async def get(self) -> Message:
        while not (self._urgent or self._bulk):
            self._ready.clear()
            await self._ready.wait()
        return (self._urgent or self._bulk).popleft()


class SiteAgent:
    """The agent at a site, on its link to the central; `run` returns only when refused."""

    def __init__(
        self,
        enrolment: Enrolment,
        tls: ssl.SSLContext | None,
        drivers: Mapping[str, Any] | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.enrolment = enrolment
        self._tls = tls
        self._backoff = backoff or Backoff()
        self._lanes: Lanes | None = None
        self.agent = Agent(self._send, drivers)
        self.connected = asyncio.Event()  # set while a link is welcomed (tests wait on it)

    async def run(self) -> None:
        _, url = central_urls(self.enrolment.central)
        await self.agent.start()
        try:
            while True:
                started = time.monotonic()
                try:
                    await self._link(url)
                    why = "the central closed the link"
                except (Refused, BadCentral):
                    raise
                except LINK_ERRORS as exc:
                    # ValueError: a frame that is no message; the link starts again
                    why = f"{type(exc).__name__}: {exc}"
                except InvalidURI as exc:
                    raise BadCentral(str(exc)) from exc
                finally:
                    self._lanes = None
                    self.connected.clear()
                    await self.agent.drop_all()
                if time.monotonic() - started > STEADY:
                    self._backoff.reset()
                delay = self._backoff.next()
                log.warning("link to %s down (%s); again in %.1f s", url, why, delay)
                await asyncio.sleep(delay)
        finally:
            await self.agent.close()

    async def _link(self, url: str) -> None:
        headers = {"Authorization": f"Bearer {self.enrolment.credential}"}
        async with connect(
            url,
            additional_headers=headers,
            ssl=self._tls if url.startswith("wss:") else None,
            max_size=MAX_FRAME,
            # No permessage-deflate: the link's messages are small, so it only cost CPU at both
            # ends (a fifth of the agent's link time), and compressing secrets next to bytes a
            # device chose is what CRIME-style attacks on TLS feed on.
            compression=None,
            ping_interval=None,  # the protocol's own heartbeats judge the link
            open_timeout=WELCOME_WAIT,
            close_timeout=2,
            user_agent_header=f"rackhand-agent/{version()}",
        ) as ws:
            hello = Hello(
                PROTOCOL,
                version(),
                self.enrolment.site,
                self.enrolment.name,
                self.agent.capabilities,
            )
            await ws.send(encode(hello))
            answer = _message(await asyncio.wait_for(ws.recv(), WELCOME_WAIT))
            if isinstance(answer, Refusal):
                _refused(answer)
                return
            if not isinstance(answer, Welcome):
                raise ConnectionError(f"the central answered the hello with {answer!r}")
            self.agent.resize_window(answer.window)
            lanes = self._lanes = Lanes()
            self.connected.set()
            log.info(
                "linked to %s as %s/%s (agent %d)",
                url,
                self.enrolment.site,
                self.enrolment.name,
                answer.agent_id,
            )
            await self._serve(ws, lanes, answer.heartbeat)

    async def _serve(self, ws: ClientConnection, lanes: Lanes, heartbeat: float) -> None:
        sender = asyncio.create_task(_send_loop(ws, lanes))
        beats = asyncio.create_task(self._beat(lanes, heartbeat))
        loop = asyncio.get_running_loop()
        silence = asyncio.timeout(3 * heartbeat)

        def sender_ended(_: asyncio.Task[None]) -> None:
            with contextlib.suppress(RuntimeError):  # the link has ended already
                silence.reschedule(loop.time())  # stop waiting for frames: raise why below

        sender.add_done_callback(sender_ended)
        try:
            # No task per frame: frames already received are handled in one loop turn, so a
            # burst of orders reaches the runner (and its worker processes) as one batch.
            async with silence:
                while True:
                    message = _message(await ws.recv())
                    silence.reschedule(loop.time() + 3 * heartbeat)
                    if isinstance(message, Refusal):
                        _refused(message)
                        return
                    if isinstance(message, Heartbeat | Welcome | Hello):
                        continue
                    self.agent.handle(message)  # type: ignore[arg-type]
        except TimeoutError:
            if sender.done():
                sender.result()  # the send failed: raise why
            raise TimeoutError("the central was silent for three heartbeats") from None
        finally:
            sender.remove_done_callback(sender_ended)
            await stopped(beats, sender)

    async def _beat(self, lanes: Lanes, every: float) -> None:
        while True:
            lanes.put(Heartbeat(self.agent.tasks, self.agent.consoles))
            await asyncio.sleep(every)

    async def _send(self, message: FromAgent) -> None:
        if self._lanes is not None:  # no link: the central has ended that work already
            self._lanes.put(message)


async def stopped(*tasks: asyncio.Task[None]) -> None:
    """Cancel a link's helper tasks and wait until they are gone, whatever they raised."""
    for task in tasks:
        task.cancel()
    with contextlib.suppress(BaseException):
        await asyncio.gather(*tasks)


async def _send_loop(ws: ClientConnection, lanes: Lanes) -> None:
    while True:
        await ws.send(encode(await lanes.get()))


def _message(frame: str | bytes) -> Message:
    return decode(frame.encode() if isinstance(frame, str) else frame)


def _refused(refusal: Refusal) -> None:
    """A final refusal stops the agent; others (replaced, stopping, silent) end this link."""
    if refusal.reason in FINAL_REFUSALS:
        raise Refused(refusal)
    log.warning("the central closed the link: %s", refusal.message)


def tls_context(ca_cert: Path | None) -> ssl.SSLContext | None:
    """The system's trust store, or only the given CA's certificate(s)."""
    return ssl.create_default_context(cafile=str(ca_cert)) if ca_cert is not None else None


async def start(
    central: str | None,
    join_token: str | None,
    data_dir: Path,
    ca_cert: Path | None,
    drivers: Mapping[str, Any] | None = None,
) -> SiteAgent:
    """The agent for this data folder, trading a join token on its first start."""
    tls = tls_context(ca_cert)
    enrolment = await asyncio.to_thread(Enrolment.load, data_dir)  # file I/O off the loop
    if enrolment is not None:
        if join_token:
            log.warning(
                "%s holds this agent's credential already; the join token is not used "
                "(remove the file to enrol anew)",
                data_dir / ENROLMENT_FILE,
            )
        if central and central != enrolment.central:
            central_urls(central)
            enrolment = Enrolment(
                central, enrolment.agent_id, enrolment.name, enrolment.site, enrolment.credential
            )
            await asyncio.to_thread(enrolment.save, data_dir)
    elif central is None or not join_token:
        raise BadCentral(
            f"{data_dir} holds no enrolment: give --central and --join-token (from "
            "`rackhand agents enrol SITE NAME` on the central)"
        )
    else:
        central_urls(central)
        enrolment = await join(central, join_token, tls)
        await asyncio.to_thread(enrolment.save, data_dir)
        log.info("enrolled as %s/%s", enrolment.site, enrolment.name)
    return SiteAgent(enrolment, tls, drivers)
