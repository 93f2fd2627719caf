"""The IPMI-over-LAN wire format: RMCP framing, IPMI messages, RMCP+ integrity and AES."""

from __future__ import annotations

import hmac
import os
import struct
from dataclasses import dataclass
from enum import IntEnum

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

RMCP_IPMI = b"\x06\x00\xff\x07"  # RMCP 1.0, no RMCP ACK, class IPMI (IPMI 2.0 §13.1.3)
RMCP_ASF = b"\x06\x00\xff\x06"
ASF_IANA = b"\x00\x00\x11\xbe"
AUTH_NONE = 0x00
AUTH_RMCPPLUS = 0x06
BMC_ADDRESS = 0x20
NEXT_HEADER = 0x07  # the only value IPMI 2.0 table 13-8 allows
BLOCK = 16  # AES-CBC-128 block and IV size


class Dropped(ValueError):
    """A datagram the BMC ignores: malformed, or not acceptable where it is sent."""


class Payload(IntEnum):
    """RMCP+ payload types (IPMI 2.0 table 13-16)."""

    IPMI = 0x00
    SOL = 0x01
    OPEN_REQUEST = 0x10
    OPEN_RESPONSE = 0x11
    RAKP1 = 0x12
    RAKP2 = 0x13
    RAKP3 = 0x14
    RAKP4 = 0x15


@dataclass(frozen=True, slots=True)
class Suite:
    """A cipher suite (IPMI 2.0 §22.15.2) as numbers on the wire and the hash behind it."""

    id: int
    auth: int  # table 13-17: 1 RAKP-HMAC-SHA1, 3 RAKP-HMAC-SHA256
    integrity: int  # table 13-18: 1 HMAC-SHA1-96, 4 HMAC-SHA256-128
    confidentiality: int  # table 13-19: 1 AES-CBC-128
    digest: str
    icv: int  # truncated MAC length: RAKP 4 ICV and the per-packet AuthCode

    def mac(self, key: bytes, data: bytes) -> bytes:
        """Full-length HMAC with this suite's hash."""
        return hmac.digest(key, data, self.digest)


SUITES = {3: Suite(3, 1, 1, 1, "sha1", 12), 17: Suite(17, 3, 4, 1, "sha256", 16)}


@dataclass(frozen=True, slots=True)
class Keys:
    """Session keys (IPMI 2.0 §13.32): K1 signs, the first 16 bytes of K2 encrypt."""

    suite: Suite
    k1: bytes
    aes: bytes


@dataclass(frozen=True, slots=True)
class Frame:
    """An IPMI packet as framed on the wire, not yet checked or decrypted."""

    rmcpplus: bool
    payload_type: int
    encrypted: bool
    authenticated: bool
    session_id: int
    sequence: int
    payload: bytes
    raw: bytes


@dataclass(frozen=True, slots=True)
class Request:
    """An IPMI request message (IPMI 2.0 §13.8, figure 13-4)."""

    netfn: int
    command: int
    data: bytes
    rs_lun: int
    rq_addr: int
    rq_seq: int
    rq_lun: int


def parse_frame(data: bytes) -> Frame:
    """Split a datagram of RMCP class IPMI into its session header fields and payload."""
    if data[:4] != RMCP_IPMI or len(data) < 14:
        raise Dropped("not RMCP class IPMI")
    if data[4] == AUTH_NONE:  # IPMI 1.5 session header, only sessionless use is supported
        sequence, session_id, length = struct.unpack_from("<IIB", data, 5)
        payload = data[14 : 14 + length]
        if len(payload) != length:
            raise Dropped("truncated IPMI 1.5 message")
        return Frame(False, Payload.IPMI, False, False, session_id, sequence, payload, data)
    if data[4] != AUTH_RMCPPLUS or len(data) < 16:
        raise Dropped(f"unsupported authentication type {data[4]:#x}")
    kind = data[5]
    session_id, sequence, length = struct.unpack_from("<IIH", data, 6)
    payload = data[16 : 16 + length]
    if len(payload) != length:
        raise Dropped("truncated RMCP+ payload")
    return Frame(
        True, kind & 0x3F, bool(kind & 0x80), bool(kind & 0x40), session_id, sequence, payload, data
    )


def verify(frame: Frame, keys: Keys) -> bool:
    """Check the integrity trailer of an authenticated packet (IPMI 2.0 table 13-8)."""
    icv = keys.suite.icv
    raw = frame.raw
    pad_at = 16 + len(frame.payload)
    if len(raw) < pad_at + 2 + icv or raw[-icv - 1] != NEXT_HEADER:
        return False
    if pad_at + raw[-icv - 2] + 2 + icv != len(raw):
        return False
    expected = keys.suite.mac(keys.k1, raw[4:-icv])[:icv]
    return hmac.compare_digest(expected, raw[-icv:])


def decrypt(keys: Keys, body: bytes) -> bytes:
    """AES-CBC-128 payload: IV, then data + pad 1, 2, 3… + pad length (IPMI 2.0 §13.29)."""
    if len(body) < 2 * BLOCK or len(body) % BLOCK:
        raise Dropped("encrypted payload is not whole AES blocks")
    decryptor = Cipher(algorithms.AES(keys.aes), modes.CBC(body[:BLOCK])).decryptor()
    plain = decryptor.update(body[BLOCK:]) + decryptor.finalize()
    pad = plain[-1]
    if pad >= BLOCK or plain[-1 - pad : -1] != bytes(range(1, pad + 1)):
        raise Dropped("bad confidentiality pad")
    return plain[: -1 - pad]


def seal(
    payload_type: int, session_id: int, sequence: int, payload: bytes, keys: Keys | None
) -> bytes:
    """Frame an RMCP+ packet; with keys it is encrypted and signed."""
    if keys is None:
        header = struct.pack(
            "<BBIIH", AUTH_RMCPPLUS, payload_type, session_id, sequence, len(payload)
        )
        return RMCP_IPMI + header + payload
    pad = (BLOCK - (len(payload) + 1) % BLOCK) % BLOCK
    plain = payload + bytes(range(1, pad + 1)) + bytes([pad])
    iv = os.urandom(BLOCK)
    encryptor = Cipher(algorithms.AES(keys.aes), modes.CBC(iv)).encryptor()
    body = iv + encryptor.update(plain) + encryptor.finalize()
    kind = payload_type | 0xC0
    signed = bytearray(struct.pack("<BBIIH", AUTH_RMCPPLUS, kind, session_id, sequence, len(body)))
    signed += body
    integrity_pad = -(len(signed) + 2) % 4  # AuthType through Next Header: a multiple of 4
    signed += b"\xff" * integrity_pad + bytes([integrity_pad, NEXT_HEADER])
    icv = keys.suite.icv
    return RMCP_IPMI + bytes(signed) + keys.suite.mac(keys.k1, bytes(signed))[:icv]


def sessionless_v15(message: bytes) -> bytes:
    """An IPMI 1.5 packet outside any session (authentication type none, IPMI 2.0 §13.6)."""
    return RMCP_IPMI + struct.pack("<BIIB", AUTH_NONE, 0, 0, len(message)) + message


def checksum(data: bytes) -> int:
    """The two's-complement checksum of IPMI messages."""
    return -sum(data) & 0xFF


def parse_request(message: bytes) -> Request:
    """Decode an IPMI LAN request message, checking both checksums."""
    if len(message) < 7 or message[0] != BMC_ADDRESS:
        raise Dropped("short IPMI message or not for the BMC")
    if checksum(message[:2]) != message[2] or checksum(message[3:-1]) != message[-1]:
        raise Dropped("bad IPMI message checksum")
    return Request(
        netfn=message[1] >> 2,
        command=message[5],
        data=bytes(message[6:-1]),
        rs_lun=message[1] & 3,
        rq_addr=message[3],
        rq_seq=message[4] >> 2,
        rq_lun=message[4] & 3,
    )


def response(request: Request, code: int, data: bytes = b"") -> bytes:
    """Encode the response message to a request."""
    head = bytes([request.rq_addr, ((request.netfn | 1) << 2) | request.rq_lun])
    body = (
        bytes([BMC_ADDRESS, (request.rq_seq << 2) | request.rs_lun, request.command, code]) + data
    )
    return head + bytes([checksum(head)]) + body + bytes([checksum(body)])


def pong(data: bytes) -> bytes | None:
    """Answer an ASF Presence Ping (DSP0136 §3.2.4.3), or None if it is not one."""
    if data[:4] != RMCP_ASF or data[4:8] != ASF_IANA or len(data) < 12 or data[8] != 0x80:
        return None
    supported = ASF_IANA + bytes(4) + b"\x81\x00" + bytes(6)  # entities: IPMI; no interactions
    return RMCP_ASF + ASF_IANA + bytes([0x40, data[9], 0, len(supported)]) + supported
