"""One simulated BMC on the wire: RMCP+ login (RAKP), sessions, and IPMI request dispatch."""

from __future__ import annotations

import asyncio
import logging
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import cast

from sim import rmcp
from sim.commands import (
    BAD_LENGTH,
    INVALID_COMMAND,
    INVALID_FIELD,
    NETFN_APP,
    OK,
    Privilege,
    Target,
    execute,
)
from sim.machine import Clock, Machine
from sim.rmcp import Dropped, Frame, Keys, Payload, Request, Suite
from sim.sol import Peer, SolPort

log = logging.getLogger(__name__)

SESSION_TIMEOUT = 60.0
DUPLICATE_WINDOW = 5.0  # a request seen again this soon is a retransmission, not a new order
MAX_SESSIONS = 32
SEQUENCE_WINDOW = 32  # inbound session sequence numbers accepted around the highest seen
LAN_CHANNEL = 1

# RMCP+ and RAKP status codes (IPMI 2.0 table 13-15)
INSUFFICIENT_RESOURCES = 0x01
INVALID_SESSION_ID = 0x02
INVALID_ROLE = 0x09
INVALID_NAME_LENGTH = 0x0C
UNAUTHORIZED_NAME = 0x0D
INVALID_INTEGRITY_CHECK = 0x0F
NO_CIPHER_SUITE_MATCH = 0x11

# completion codes of the session commands (IPMI 2.0 §22.18, §22.19)
PRIVILEGE_ABOVE_LIMIT = 0x81
INVALID_SESSION_IN_REQUEST = 0x87

GET_CHANNEL_AUTH_CAPABILITIES = 0x38
SET_SESSION_PRIVILEGE = 0x3B
CLOSE_SESSION = 0x3C
GET_CHANNEL_CIPHER_SUITES = 0x54

Address = tuple[str | object, int]


@dataclass
class Faults:
    """Misbehaviour switched on at run time: slow answers, silence, refused logins."""

    slow_ms: int = 0
    mute: bool = False
    refuse_password: bool = False


@dataclass(slots=True)
class _Answer:
    request: tuple[int, int, int, bytes]  # rqSeq, netfn, command, data
    at: float
    message: bytes


@dataclass(frozen=True, slots=True)
class _Setup:
    """The last session-setup message of a session and our reply, both without their tag."""

    kind: Payload
    request: bytes
    reply: bytes


@dataclass(slots=True)
class Session:
    """One RMCP+ session, from Open Session Request until closed or idle too long."""

    bmc_id: int
    console_id: int
    suite: Suite
    last_seen: float
    handshake: _Setup | None = None
    user: bytes = b""
    role: int = 0
    rm: bytes = b""
    rc: bytes = b""
    kuid: bytes = b""
    keys: Keys | None = None
    limit: int = Privilege.ADMINISTRATOR
    privilege: int = Privilege.USER
    out_sequence: int = 0
    in_sequence: int | None = None
    last_answer: _Answer | None = None
    address: Address | None = None  # where the console last spoke from: SOL output goes there


class Bmc:
    """A BMC: answers datagrams for one machine; the network side lives in `BmcProtocol`."""

    def __init__(
        self,
        machine: Machine,
        users: Mapping[str, str],
        suites: Iterable[int] = (3, 17),
        *,
        guid: bytes | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.users = dict(users)
        self.suites = tuple(suites)
        self.faults = Faults()
        self.target = Target(machine, guid or uuid.uuid4().bytes)
        self.sessions: dict[int, Session] = {}
        self.duplicates = 0  # retransmitted requests answered from the cache, not run again
        self.sol = SolPort(machine.serial)
        self.transmit: Callable[[bytes, Address], None] | None = None  # set by the network side
        self._clock = clock

    @property
    def machine(self) -> Machine:
        return self.target.machine

    @property
    def suites(self) -> tuple[int, ...]:
        """Cipher suites offered, strongest first."""
        return self._suites

    @suites.setter
    def suites(self, suites: Iterable[int]) -> None:
        offered = sorted(set(suites), reverse=True)
        unknown = [suite for suite in offered if suite not in rmcp.SUITES]
        if unknown or not offered:
            raise ValueError(f"cipher suites must be among {sorted(rmcp.SUITES)}: {unknown}")
        self._suites = tuple(offered)

    def drop_sessions(self) -> None:
        """Forget every session, as a BMC that rebooted does."""
        for bmc_id in list(self.sessions):
            self._forget(bmc_id)

    def _forget(self, bmc_id: int) -> None:
        """End a session; its SOL payload, if any, is deactivated with it."""
        self.sessions.pop(bmc_id, None)
        self.sol.release(bmc_id)

    def receive(self, datagram: bytes, address: Address | None = None) -> bytes | None:
        """The reply to one datagram (from `address`, where SOL output will go), or None."""
        if self.faults.mute:
            return None
        try:
            if datagram[:4] == rmcp.RMCP_ASF:
                return rmcp.pong(datagram)
            return self._receive(rmcp.parse_frame(datagram), address)
        except (Dropped, IndexError, struct.error) as error:
            log.debug("dropped a datagram: %s", error)
            return None

    def _receive(self, frame: Frame, address: Address | None) -> bytes | None:
        if not frame.rmcpplus:
            if frame.session_id:
                raise Dropped("IPMI 1.5 sessions are not supported")
            return rmcp.sessionless_v15(self._sessionless(frame.payload))
        if frame.payload_type in (Payload.IPMI, Payload.SOL) and frame.session_id:
            return self._in_session(frame, address)
        if frame.authenticated or frame.encrypted or frame.session_id:
            raise Dropped("session setup messages travel in the clear, session 0")
        if frame.payload_type == Payload.IPMI:
            reply = self._sessionless(frame.payload)
            return rmcp.seal(Payload.IPMI, 0, 0, reply, None)
        if frame.payload_type == Payload.OPEN_REQUEST:
            return self._open_session(frame.payload)
        if frame.payload_type == Payload.RAKP1:
            return self._rakp1(frame.payload)
        if frame.payload_type == Payload.RAKP3:
            return self._rakp3(frame.payload)
        raise Dropped(f"unexpected payload type {frame.payload_type:#x}")

    # --- outside sessions -----------------------------------------------------------------

    def _sessionless(self, message: bytes) -> bytes:
        request = rmcp.parse_request(message)
        code, data = self._channel_command(request)
        return rmcp.response(request, code, data)

    def _channel_command(self, request: Request) -> tuple[int, bytes]:
        """Commands a client may send before it has a session (IPMI 2.0 §13.5)."""
        if request.netfn != NETFN_APP:
            return INVALID_COMMAND, b""
        if request.command == GET_CHANNEL_AUTH_CAPABILITIES:
            return self._auth_capabilities(request.data)
        if request.command == GET_CHANNEL_CIPHER_SUITES:
            return self._cipher_suites(request.data)
        return INVALID_COMMAND, b""

    def _auth_capabilities(self, data: bytes) -> tuple[int, bytes]:
        # IPMI 2.0 §22.13: v2.0 extended data available; no IPMI 1.5 authentication types;
        # non-null user names; per-message and user-level authentication on; IPMI 2.0 only.
        if len(data) != 2:
            return BAD_LENGTH, b""
        if data[0] & 0x0F not in (LAN_CHANNEL, 0x0E):
            return INVALID_FIELD, b""
        return OK, bytes([LAN_CHANNEL, 0x80, 0x04, 0x02, 0, 0, 0, 0])

    def _cipher_suites(self, data: bytes) -> tuple[int, bytes]:
        # IPMI 2.0 §22.15: records C0h + suite id + algorithm bytes, served 16 bytes a call.
        if len(data) != 3:
            return BAD_LENGTH, b""
        suites = [rmcp.SUITES[suite_id] for suite_id in self.suites]
        algorithms = [(s.auth, 0x40 | s.integrity, 0x80 | s.confidentiality) for s in suites]
        if data[2] & 0x80:  # listed by cipher suite
            records = b"".join(
                bytes([0xC0, s.id, *a]) for s, a in zip(suites, algorithms, strict=True)
            )
        else:
            records = bytes(sorted({byte for triple in algorithms for byte in triple}))
        start = (data[2] & 0x3F) * 16
        return OK, bytes([LAN_CHANNEL]) + records[start : start + 16]

    # --- session setup: IPMI 2.0 §13.17 to §13.23 -----------------------------------------

    def _open_session(self, payload: bytes) -> bytes:
        if len(payload) < 32:
            raise Dropped("short Open Session Request")
        tag, requested = payload[0], payload[1] & 0x0F
        console_id = struct.unpack_from("<I", payload, 4)[0]
        now = self._clock()
        for session in self.sessions.values():  # a retransmitted request gets the same session
            replayed = self._replay(session, Payload.OPEN_REQUEST, payload)
            if replayed is not None and session.console_id == console_id:
                return replayed
        suite = self._choose_suite(
            [self._algorithm(payload, 8 + 8 * kind, kind) for kind in range(3)]
        )
        self._expire(now)
        status = OK
        if suite is None:
            status = NO_CIPHER_SUITE_MATCH  # refuse; never answer with another suite
        elif requested > Privilege.ADMINISTRATOR:
            status = INVALID_ROLE
        elif len(self.sessions) >= MAX_SESSIONS:
            status = INSUFFICIENT_RESOURCES
        if suite is None or status != OK:
            refusal = bytes([tag, status, 0, 0]) + struct.pack("<I", console_id) + bytes(28)
            return rmcp.seal(Payload.OPEN_RESPONSE, 0, 0, refusal, None)
        bmc_id = self._new_session_id()
        reply = (
            bytes([tag, OK, requested or Privilege.ADMINISTRATOR, 0])
            + struct.pack("<II", console_id, bmc_id)
            + bytes([0, 0, 0, 8, suite.auth, 0, 0, 0])
            + bytes([1, 0, 0, 8, suite.integrity, 0, 0, 0])
            + bytes([2, 0, 0, 8, suite.confidentiality, 0, 0, 0])
        )
        session = self.sessions[bmc_id] = Session(bmc_id, console_id, suite, now)
        return self._answer_setup(session, Payload.OPEN_REQUEST, payload, reply)

    def _choose_suite(self, proposal: list[int | None]) -> Suite | None:
        """The strongest offered suite that fits the proposal (None in it: any algorithm)."""
        for suite in (rmcp.SUITES[suite_id] for suite_id in self.suites):
            offered = (suite.auth, suite.integrity, suite.confidentiality)
            if all(wanted in (None, mine) for wanted, mine in zip(proposal, offered, strict=True)):
                return suite
        return None

    @staticmethod
    def _algorithm(payload: bytes, offset: int, kind: int) -> int | None:
        """One proposed algorithm; None when the proposal leaves the choice to the BMC."""
        if payload[offset] != kind:
            raise Dropped("Open Session Request payloads out of order")
        if payload[offset + 3] == 0:
            return None
        return payload[offset + 4] & 0x3F

    def _new_session_id(self) -> int:
        while True:
            bmc_id = int.from_bytes(os.urandom(4), "little")
            if bmc_id and bmc_id not in self.sessions:
                return bmc_id

    def _expire(self, now: float) -> None:
        for bmc_id in [
            bmc_id
            for bmc_id, session in self.sessions.items()
            if now - session.last_seen > SESSION_TIMEOUT
        ]:
            self._forget(bmc_id)

    def _rakp1(self, payload: bytes) -> bytes:
        if len(payload) < 28:
            raise Dropped("short RAKP 1")
        tag, role, name_length = payload[0], payload[24], payload[27]
        session = self.sessions.get(struct.unpack_from("<I", payload, 4)[0])
        if session is None or session.keys is not None:
            return self._rakp_error(Payload.RAKP2, tag, INVALID_SESSION_ID, 0)
        replayed = self._replay(session, Payload.RAKP1, payload)
        if replayed is not None:
            return replayed
        user = payload[28:]
        if name_length > 16 or len(user) != name_length:
            return self._rakp_error(Payload.RAKP2, tag, INVALID_NAME_LENGTH, session.console_id)
        if role & 0x0F > Privilege.ADMINISTRATOR:
            return self._rakp_error(Payload.RAKP2, tag, INVALID_ROLE, session.console_id)
        password = self.users.get(user.decode("latin-1"))
        if password is None:
            return self._rakp_error(Payload.RAKP2, tag, UNAUTHORIZED_NAME, session.console_id)
        if self.faults.refuse_password:  # the client sees a RAKP 2 HMAC from another password
            password = os.urandom(16).hex()
        session.user, session.role, session.rm, session.rc = (
            user,
            role,
            payload[8:24],
            os.urandom(16),
        )
        session.kuid = password.encode()
        session.limit = role & 0x0F or Privilege.ADMINISTRATOR
        session.last_seen = self._clock()
        ids = struct.pack("<II", session.console_id, session.bmc_id)
        authcode = session.suite.mac(
            session.kuid,
            ids + session.rm + session.rc + self.target.guid + self._role_and_name(session),
        )
        reply = (
            bytes([tag, OK, 0, 0])
            + struct.pack("<I", session.console_id)
            + session.rc
            + self.target.guid
            + authcode
        )
        return self._answer_setup(session, Payload.RAKP1, payload, reply)

    def _rakp3(self, payload: bytes) -> bytes | None:
        if len(payload) < 8:
            raise Dropped("short RAKP 3")
        tag, status = payload[0], payload[1]
        session = self.sessions.get(struct.unpack_from("<I", payload, 4)[0])
        if session is None or not session.rc:
            return self._rakp_error(Payload.RAKP4, tag, INVALID_SESSION_ID, 0)
        replayed = self._replay(session, Payload.RAKP3, payload)
        if replayed is not None:
            return replayed
        if session.keys is not None:
            return self._rakp_error(Payload.RAKP4, tag, INVALID_SESSION_ID, session.console_id)
        suite = session.suite
        expected = suite.mac(
            session.kuid,
            session.rc + struct.pack("<I", session.console_id) + self._role_and_name(session),
        )
        if status != OK or payload[8:] != expected:
            del self.sessions[session.bmc_id]
            if status != OK:  # the console gave up on our RAKP 2; nothing to answer
                return None
            return self._rakp_error(Payload.RAKP4, tag, INVALID_INTEGRITY_CHECK, session.console_id)
        # §13.31, §13.32: SIK from Kg (= Kuid, no BMC key set), then K1 and K2 from the SIK
        sik = suite.mac(session.kuid, session.rm + session.rc + self._role_and_name(session))
        session.keys = Keys(suite, suite.mac(sik, b"\x01" * 20), suite.mac(sik, b"\x02" * 20)[:16])
        icv = suite.mac(sik, session.rm + struct.pack("<I", session.bmc_id) + self.target.guid)[
            : suite.icv
        ]
        reply = bytes([tag, OK, 0, 0]) + struct.pack("<I", session.console_id) + icv
        session.last_seen = self._clock()
        return self._answer_setup(session, Payload.RAKP3, payload, reply)

    @staticmethod
    def _answer_setup(session: Session, kind: Payload, request: bytes, reply: bytes) -> bytes:
        """Seal a setup reply, remembering it to answer a retransmission alike."""
        session.handshake = _Setup(kind, request[1:], reply[1:])
        return rmcp.seal(kind + 1, 0, 0, reply, None)

    @staticmethod
    def _replay(session: Session, kind: Payload, request: bytes) -> bytes | None:
        """Our earlier reply if this is a retransmission; ipmipower sends those with a new tag."""
        setup = session.handshake
        if setup is None or setup.kind != kind or setup.request != request[1:]:
            return None
        return rmcp.seal(kind + 1, 0, 0, request[:1] + setup.reply, None)

    @staticmethod
    def _role_and_name(session: Session) -> bytes:
        return bytes([session.role, len(session.user)]) + session.user

    @staticmethod
    def _rakp_error(kind: Payload, tag: int, status: int, console_id: int) -> bytes:
        log.debug("%s refused with status %#x", kind.name, status)
        return rmcp.seal(
            kind, 0, 0, bytes([tag, status, 0, 0]) + struct.pack("<I", console_id), None
        )

    # --- inside a session ------------------------------------------------------------------

    def _in_session(self, frame: Frame, address: Address | None) -> bytes | None:
        session = self.sessions.get(frame.session_id)
        now = self._clock()
        if session is None or session.keys is None:
            raise Dropped("no such active session")
        if now - session.last_seen > SESSION_TIMEOUT:
            self._forget(session.bmc_id)
            raise Dropped("session timed out")
        keys = session.keys
        if not (frame.authenticated and frame.encrypted and rmcp.verify(frame, keys)):
            raise Dropped("session packet failed the integrity check")
        if not self._in_window(session, frame.sequence):
            raise Dropped("session sequence number out of window")
        plain = rmcp.decrypt(keys, frame.payload)
        session.last_seen = now
        if address is not None:
            session.address = address
        if frame.payload_type == Payload.SOL:
            ack = self.sol.receive(session.bmc_id, plain)
            return None if ack is None else self._seal(session, Payload.SOL, ack)
        request = rmcp.parse_request(plain)
        # Clients keep one request outstanding per session and retransmit only that one, so
        # only the last answer is kept: rqSeq wraps at 64, a cache of more could eat new orders.
        key = (request.rq_seq, request.netfn, request.command, request.data)
        answer = session.last_answer
        closing = False
        if answer is None or answer.request != key or now - answer.at > DUPLICATE_WINDOW:
            code, data = self._session_command(session, request)
            closing = code == OK and key[1:3] == (NETFN_APP, CLOSE_SESSION)
            closing = closing and request.data[:4] == struct.pack("<I", session.bmc_id)
            answer = session.last_answer = _Answer(key, now, rmcp.response(request, code, data))
        else:
            self.duplicates += 1
        datagram = self._seal(session, Payload.IPMI, answer.message)
        if closing:  # the answer still goes out under the session's keys
            self._forget(session.bmc_id)
        return datagram

    @staticmethod
    def _seal(session: Session, kind: Payload, payload: bytes) -> bytes:
        """A packet of the session, with the session's next outbound sequence number."""
        session.out_sequence = (session.out_sequence + 1) & 0xFFFFFFFF or 1
        return rmcp.seal(kind, session.console_id, session.out_sequence, payload, session.keys)

    def _send_sol(self, session: Session, payload: bytes) -> None:
        """SOL output the BMC sends on its own (not as an answer) to the session's console."""
        if self.faults.mute or self.transmit is None or session.address is None:
            return
        self.transmit(self._seal(session, Payload.SOL, payload), session.address)

    def _alive(self, session: Session) -> bool:
        live = self.sessions.get(session.bmc_id) is session
        return live and self._clock() - session.last_seen <= SESSION_TIMEOUT

    def _peer(self, session: Session) -> Peer:
        return Peer(
            session.bmc_id,
            session.privilege,
            partial(self._send_sol, session),
            partial(self._alive, session),
        )

    @staticmethod
    def _in_window(session: Session, sequence: int) -> bool:
        # IPMI 2.0 §6.12.13: accept a sliding window around the highest number seen; a repeat
        # is let through so that the duplicate-request cache can answer it again.
        if sequence == 0:
            return False
        highest = session.in_sequence
        if highest is not None:
            ahead = (sequence - highest + 0x80000000) % 0x100000000 - 0x80000000
            if not -SEQUENCE_WINDOW < ahead <= SEQUENCE_WINDOW:
                return False
            if ahead <= 0:
                return True
        session.in_sequence = sequence
        return True

    def _session_command(self, session: Session, request: Request) -> tuple[int, bytes]:
        if request.netfn == NETFN_APP and request.command == SET_SESSION_PRIVILEGE:
            if len(request.data) != 1:
                return BAD_LENGTH, b""
            wanted = request.data[0] & 0x0F
            if wanted > session.limit:
                return PRIVILEGE_ABOVE_LIMIT, b""
            if wanted >= Privilege.USER:
                session.privilege = wanted
            elif wanted:
                return INVALID_FIELD, b""
            return OK, bytes([session.privilege])
        if request.netfn == NETFN_APP and request.command == CLOSE_SESSION:
            if len(request.data) not in (4, 5):
                return BAD_LENGTH, b""
            closing = struct.unpack_from("<I", request.data)[0]
            if closing == session.bmc_id:
                return OK, b""
            if closing in self.sessions and session.privilege >= Privilege.ADMINISTRATOR:
                self._forget(closing)
                return OK, b""
            return INVALID_SESSION_IN_REQUEST, b""
        if request.netfn == NETFN_APP and request.command in (
            GET_CHANNEL_AUTH_CAPABILITIES,
            GET_CHANNEL_CIPHER_SUITES,
        ):
            return self._channel_command(request)
        sol = self.sol.command(self._peer(session), request.netfn, request.command, request.data)
        if sol is not None:
            return sol
        return execute(self.target, request.netfn, request.command, request.data, session.privilege)


class BmcProtocol(asyncio.DatagramProtocol):
    """The BMC's UDP port: one per BMC, thousands sharing one event loop."""

    def __init__(self, bmc: Bmc) -> None:
        self.bmc = bmc
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.bmc.sol.config.port = transport.get_extra_info("sockname")[1]
        self.bmc.transmit = self._send

    def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
        reply = self.bmc.receive(data, addr)
        if reply is None or self.transport is None:
            return
        delay = self.bmc.faults.slow_ms / 1000
        if delay:
            asyncio.get_running_loop().call_later(delay, self._send, reply, addr)
        else:
            self.transport.sendto(reply, addr)

    def _send(self, reply: bytes, addr: tuple[str | object, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(reply, addr)

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error on a BMC port: %s", exc)
