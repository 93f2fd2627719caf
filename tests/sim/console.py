"""A minimal RMCP+ remote console that drives `Bmc.receive` directly, for unit tests."""

from __future__ import annotations

import os
import random
import socket
import struct

from sim import rmcp
from sim.ipmi import Bmc
from sim.rmcp import Keys, Payload

CONSOLE_ADDRESS = 0x81


class Console:
    """Speaks RMCP+ to one in-memory BMC, step by step so tests can poke each message."""

    def __init__(
        self, bmc: Bmc, user: str = "admin", password: str = "password", suite: int = 3
    ) -> None:
        self.bmc = bmc
        self.user = user.encode()
        self.password = password.encode()
        self.suite = rmcp.SUITES[suite]
        self.console_id = int.from_bytes(os.urandom(4), "little") | 1
        self.bmc_id = 0
        self.role = 0x14  # name-only lookup, ADMINISTRATOR
        self.rm = os.urandom(16)
        self.rc = b""
        self.guid = b""
        self.keys: Keys | None = None
        self.sequence = 0
        self.rq_seq = 0

    def setup(self, kind: Payload, payload: bytes) -> bytes:
        """Send a session-setup message; the reply payload (AssertionError if none)."""
        reply = self.bmc.receive(rmcp.seal(kind, 0, 0, payload, None))
        assert reply is not None, f"no answer to {kind.name}"
        frame = rmcp.parse_frame(reply)
        assert frame.payload_type == kind + 1
        return frame.payload

    def open_request(self, algorithms: tuple[int, int, int] | None = None) -> bytes:
        auth, integrity, confidentiality = algorithms or (
            self.suite.auth,
            self.suite.integrity,
            self.suite.confidentiality,
        )
        return (
            bytes([1, 0, 0, 0])
            + struct.pack("<I", self.console_id)
            + bytes([0, 0, 0, 8, auth, 0, 0, 0])
            + bytes([1, 0, 0, 8, integrity, 0, 0, 0])
            + bytes([2, 0, 0, 8, confidentiality, 0, 0, 0])
        )

    def open_session(self) -> int:
        """Open Session Request; the RMCP+ status code."""
        reply = self.setup(Payload.OPEN_REQUEST, self.open_request())
        self.bmc_id = struct.unpack_from("<I", reply, 8)[0]
        return reply[1]

    def rakp1_payload(self) -> bytes:
        return (
            bytes([2, 0, 0, 0])
            + struct.pack("<I", self.bmc_id)
            + self.rm
            + bytes([self.role, 0, 0, len(self.user)])
            + self.user
        )

    def rakp1(self) -> int:
        """RAKP 1; the status, after checking the BMC's HMAC when the status is 0."""
        reply = self.setup(Payload.RAKP1, self.rakp1_payload())
        if reply[1]:
            return reply[1]
        self.rc, self.guid = reply[8:24], reply[24:40]
        ids = struct.pack("<II", self.console_id, self.bmc_id)
        expected = self.suite.mac(
            self.password, ids + self.rm + self.rc + self.guid + self._role_and_name()
        )
        return 0 if reply[40:] == expected else -1  # -1: "wrong password", seen by the client

    def rakp3_payload(self) -> bytes:
        authcode = self.suite.mac(
            self.password, self.rc + struct.pack("<I", self.console_id) + self._role_and_name()
        )
        return bytes([3, 0, 0, 0]) + struct.pack("<I", self.bmc_id) + authcode

    def rakp3(self) -> int:
        """RAKP 3; the status of RAKP 4, after which the session keys are set."""
        reply = self.setup(Payload.RAKP3, self.rakp3_payload())
        if reply[1]:
            return reply[1]
        sik = self.suite.mac(self.password, self.rm + self.rc + self._role_and_name())
        icv = self.suite.mac(sik, self.rm + struct.pack("<I", self.bmc_id) + self.guid)
        assert reply[8:] == icv[: self.suite.icv]
        self.keys = Keys(
            self.suite, self.suite.mac(sik, b"\x01" * 20), self.suite.mac(sik, b"\x02" * 20)[:16]
        )
        return 0

    def login(self, privilege: int | None = 4) -> None:
        """The whole handshake, then Set Session Privilege Level unless privilege is None."""
        assert self.open_session() == 0
        assert self.rakp1() == 0
        assert self.rakp3() == 0
        if privilege is not None:
            assert self.command(0x06, 0x3B, bytes([privilege])) == (0, bytes([privilege]))

    def packet(
        self, netfn: int, command: int, data: bytes = b"", rq_seq: int | None = None
    ) -> bytes:
        """A sealed request datagram (new session sequence number; rqSeq as given or next)."""
        if rq_seq is None:
            self.rq_seq = (self.rq_seq + 1) % 64
            rq_seq = self.rq_seq
        head = bytes([rmcp.BMC_ADDRESS, netfn << 2])
        body = bytes([CONSOLE_ADDRESS, rq_seq << 2, command]) + data
        message = head + bytes([rmcp.checksum(head)]) + body + bytes([rmcp.checksum(body)])
        self.sequence += 1
        return rmcp.seal(Payload.IPMI, self.bmc_id, self.sequence, message, self.keys)

    def answer(self, reply: bytes | None) -> tuple[int, bytes]:
        """Completion code and data of a reply datagram."""
        assert reply is not None
        assert self.keys is not None
        frame = rmcp.parse_frame(reply)
        assert frame.session_id == self.console_id
        assert rmcp.verify(frame, self.keys)
        message = rmcp.decrypt(self.keys, frame.payload)
        return message[6], message[7:-1]

    def command(self, netfn: int, command: int, data: bytes = b"") -> tuple[int, bytes]:
        return self.answer(self.bmc.receive(self.packet(netfn, command, data)))

    def _role_and_name(self) -> bytes:
        return bytes([self.role, len(self.user)]) + self.user


def free_ports(count: int, kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    """The first of `count` consecutive ports (UDP, or `SOCK_STREAM` for TCP) free right now."""
    for _ in range(50):
        base = random.randrange(20000, 60000 - count)
        sockets: list[socket.socket] = []
        try:
            for port in range(base, base + count):
                sockets.append(socket.socket(socket.AF_INET, kind))
                sockets[-1].bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
        return base
    raise RuntimeError(f"no {count} consecutive free {kind.name} ports")


def free_tcp_ports(count: int) -> int:
    return free_ports(count, socket.SOCK_STREAM)
