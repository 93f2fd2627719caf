"""Serial over LAN in the simulated BMC: payload type 1 over the RMCP+ session (IPMI 2.0 §15, §24).

One SOL payload instance per BMC, bound to the machine's serial line. This module owns the SOL
commands (activation, status, configuration parameters) and the SOL packet protocol; the
session layer in `sim.ipmi` hands it packets and gives it a way to send.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass

from sim.commands import (
    BAD_LENGTH,
    INSUFFICIENT_PRIVILEGE,
    INVALID_FIELD,
    NETFN_APP,
    OK,
    Privilege,
    Reply,
)
from sim.serial import SerialLine

log = logging.getLogger(__name__)

NETFN_TRANSPORT = 0x0C
SOL_PAYLOAD = 1
INSTANCE = 1  # the one serial port behind the BMC
LAN_CHANNELS = (1, 0x0E)  # our LAN channel, and "this channel"
PAYLOAD_SIZE = 255  # in and out: the 4-byte SOL header plus up to 251 characters
NO_VLAN = 0xFFFF
HISTORY = 2048
MAX_BUFFER = 64 * 1024  # output held while the console is slow to ack; the oldest goes first

# Activate/Deactivate Payload completion codes (IPMI 2.0 §24.1, §24.2)
PAYLOAD_ALREADY = 0x80  # already active (activate) or already deactivated (deactivate)
PAYLOAD_DISABLED = 0x81
ENCRYPTION_REQUIRED = 0x84
# Set/Get SOL Configuration Parameters (IPMI 2.0 §26.2, §26.3)
PARAMETER_NOT_SUPPORTED = 0x80
SET_IN_PROGRESS = 0x81
READ_ONLY = 0x82
PARAMETER_REVISION = 0x11
BIT_RATES = (0, 6, 7, 8, 9, 10)  # serial setting, 9600, 19.2k, 38.4k, 57.6k, 115.2k

# Operation/status byte of a SOL packet (IPMI 2.0 table 15-2)
NACK = 0x40
BREAK = 0x10  # console to BMC: generate a break
DEACTIVATING = 0x10  # BMC to console: SOL is being deactivated


@dataclass
class SolConfig:
    """SOL configuration parameters 0 to 8, as Get/Set SOL Configuration Parameters see them."""

    set_in_progress: int = 0
    enabled: bool = True
    authentication: int = 0xC0 | Privilege.USER  # force encryption and authentication; USER
    accumulate_interval: int = 2  # 5 ms units
    send_threshold: int = 96  # characters
    retry_count: int = 7
    retry_interval: int = 50  # 10 ms units
    bit_rate: int = 10  # 115.2 kbit/s
    volatile_bit_rate: int = 10
    port: int = 623  # the BMC's own UDP port: SOL rides on the session

    def get(self, parameter: int) -> bytes | None:
        values = {
            0: bytes([self.set_in_progress]),
            1: bytes([int(self.enabled)]),
            2: bytes([self.authentication]),
            3: bytes([self.accumulate_interval, self.send_threshold]),
            4: bytes([self.retry_count, self.retry_interval]),
            5: bytes([self.bit_rate]),
            6: bytes([self.volatile_bit_rate]),
            7: bytes([LAN_CHANNELS[0]]),
            8: struct.pack("<H", self.port),
        }
        return values.get(parameter)

    def set(self, parameter: int, value: bytes) -> int:
        """Write one parameter; the completion code."""
        sizes = {0: 1, 1: 1, 2: 1, 3: 2, 4: 2, 5: 1, 6: 1, 7: 1, 8: 2}
        if parameter not in sizes:
            return PARAMETER_NOT_SUPPORTED
        if parameter in (7, 8):
            return READ_ONLY  # the payload rides on the LAN channel's own port
        if len(value) != sizes[parameter]:
            return BAD_LENGTH
        if parameter == 0:
            if value[0] & 0x03 == 1 and self.set_in_progress == 1:
                return SET_IN_PROGRESS
            self.set_in_progress = value[0] & 0x03
        elif parameter == 1:
            self.enabled = bool(value[0] & 0x01)
        elif parameter == 2:
            if not Privilege.USER <= value[0] & 0x0F <= Privilege.ADMINISTRATOR:
                return INVALID_FIELD
            self.authentication = value[0] & 0xCF
        elif parameter == 3:
            if not (value[0] and value[1]):
                return INVALID_FIELD
            self.accumulate_interval, self.send_threshold = value[0], value[1]
        elif parameter == 4:
            self.retry_count, self.retry_interval = value[0] & 0x07, value[1]
        else:
            if value[0] & 0x0F not in BIT_RATES:
                return INVALID_FIELD
            if parameter == 5:
                self.bit_rate = value[0] & 0x0F
            else:
                self.volatile_bit_rate = value[0] & 0x0F
        return OK


@dataclass(frozen=True)
class Peer:
    """The session asking (or holding SOL): its id and privilege, how to reach it, if it lives."""

    session_id: int
    privilege: int
    send: Callable[[bytes], None]  # one SOL payload, sealed and sent by the session layer
    alive: Callable[[], bool]


@dataclass(slots=True)
class _Outbound:
    sequence: int
    data: bytes
    tries: int = 0


class SolPort:
    """The BMC's SOL payload instance: who holds it, and the packets both ways."""

    def __init__(self, serial: SerialLine) -> None:
        self.serial = serial
        self.config = SolConfig()
        self.owner: Peer | None = None
        # Real BMCs drop what the host printed while no one was attached (some keep a vendor
        # buffer, ipmi_sim only with `history=`); we keep the last 2 KB for the next session.
        self.history = bytearray()
        self.dropped = 0  # characters given up after the retries ran out, for tests
        self._pending = bytearray()
        self._unacked: _Outbound | None = None
        self._out_sequence = 0
        self._in_sequence = 0
        self._flush_timer: asyncio.TimerHandle | None = None
        self._retry_timer: asyncio.TimerHandle | None = None
        serial.attach(self._output)

    # --- commands ---------------------------------------------------------------------------

    def command(self, peer: Peer, netfn: int, command: int, data: bytes) -> Reply | None:
        """Run a SOL command for a session; None if (netfn, command) is not one of ours."""
        entry = COMMANDS.get((netfn, command))
        if entry is None:
            return None
        needed, handler = entry
        if peer.privilege < needed:
            return INSUFFICIENT_PRIVILEGE, b""
        return handler(self, peer, data)

    def _activate(self, peer: Peer, data: bytes) -> Reply:
        if len(data) != 6:
            return BAD_LENGTH, b""
        if data[0] & 0x3F != SOL_PAYLOAD or data[1] & 0x0F != INSTANCE:
            return INVALID_FIELD, b""
        if not self.config.enabled:
            return PAYLOAD_DISABLED, b""
        if peer.privilege < self.config.authentication & 0x0F:
            return INSUFFICIENT_PRIVILEGE, b""
        if not data[2] & 0x80 and not self.config.authentication & 0x80:
            return ENCRYPTION_REQUIRED, b""  # our suites always encrypt; no clear-text SOL
        if self.owner is not None and not self.owner.alive():
            self._deactivate()
        if self.owner is not None:
            return PAYLOAD_ALREADY, b""
        self.owner = peer
        self._out_sequence = self._in_sequence = 0
        self._pending = bytearray(self.history)  # the new session sees the recent past first
        self._schedule_flush(0)
        sizes = struct.pack("<HHHH", PAYLOAD_SIZE, PAYLOAD_SIZE, self.config.port, NO_VLAN)
        return OK, bytes(4) + sizes  # the port little-endian, as ipmiconsole insists

    def _deactivate_command(self, peer: Peer, data: bytes) -> Reply:
        if len(data) != 6:
            return BAD_LENGTH, b""
        if data[0] & 0x3F != SOL_PAYLOAD or data[1] & 0x0F != INSTANCE:
            return INVALID_FIELD, b""
        owner = self.owner
        if owner is None:
            return PAYLOAD_ALREADY, b""
        if owner.session_id != peer.session_id:  # taken over (pyghmi's force=True): say so
            self._notify_deactivation()
        self._deactivate()
        return OK, b""

    def _status(self, peer: Peer, data: bytes) -> Reply:
        if len(data) != 1:
            return BAD_LENGTH, b""
        if data[0] & 0x3F != SOL_PAYLOAD:
            return INVALID_FIELD, b""
        return OK, bytes([1, int(self.owner is not None), 0])  # capacity 1; instance 1's bit

    def _instance_info(self, peer: Peer, data: bytes) -> Reply:
        if len(data) != 2:
            return BAD_LENGTH, b""
        if data[0] & 0x3F != SOL_PAYLOAD or data[1] & 0x0F != INSTANCE:
            return INVALID_FIELD, b""
        owner = self.owner.session_id if self.owner else 0
        return OK, struct.pack("<I", owner) + bytes([INSTANCE if owner else 0]) + bytes(7)

    def _payload_support(self, peer: Peer, data: bytes) -> Reply:
        if len(data) != 1:
            return BAD_LENGTH, b""
        if data[0] & 0x0F not in LAN_CHANNELS:
            return INVALID_FIELD, b""
        # standard payloads IPMI and SOL; session setup payloads Open Session to RAKP 4
        return OK, bytes([0x03, 0x00, 0x3F, 0x00, 0, 0, 0, 0])

    def _payload_version(self, peer: Peer, data: bytes) -> Reply:
        if len(data) != 2:
            return BAD_LENGTH, b""
        if data[0] & 0x0F not in LAN_CHANNELS or data[1] & 0x3F > SOL_PAYLOAD:
            return INVALID_FIELD, b""
        return OK, b"\x10"  # version 1.0

    def _get_config(self, peer: Peer, data: bytes) -> Reply:
        if len(data) != 4:
            return BAD_LENGTH, b""
        if data[0] & 0x0F not in LAN_CHANNELS:
            return INVALID_FIELD, b""
        value = self.config.get(data[1] & 0x7F)
        if value is None:
            return PARAMETER_NOT_SUPPORTED, b""
        if data[0] & 0x80:  # parameter revision only
            return OK, bytes([PARAMETER_REVISION])
        return OK, bytes([PARAMETER_REVISION]) + value

    def _set_config(self, peer: Peer, data: bytes) -> Reply:
        if len(data) < 3:
            return BAD_LENGTH, b""
        if data[0] & 0x0F not in LAN_CHANNELS:
            return INVALID_FIELD, b""
        code = self.config.set(data[1] & 0x7F, data[2:])
        if code == OK and not self.config.enabled and self.owner is not None:
            self._notify_deactivation()
            self._deactivate()
        return code, b""

    # --- SOL packets ------------------------------------------------------------------------

    def receive(self, session_id: int, payload: bytes) -> bytes | None:
        """A SOL packet from a console; the ack to send back, if it needs one."""
        owner = self.owner
        if owner is None or owner.session_id != session_id or len(payload) < 4:
            return None
        sequence, acked, accepted, operation = (
            payload[0] & 0x0F,
            payload[1] & 0x0F,
            payload[2],
            payload[3],
        )
        data = payload[4:PAYLOAD_SIZE]
        unacked = self._unacked
        if acked and unacked is not None and acked == unacked.sequence:
            self._acked(unacked, accepted, bool(operation & NACK))
        if not sequence:
            return None  # an ack or a nack, nothing to acknowledge
        if sequence != self._in_sequence:  # the same number again is a retransmission
            self._in_sequence = sequence
            if data:
                self.serial.feed(data)
            if operation & BREAK:  # after the characters that came with it
                self.serial.send_break()
        return bytes([0, sequence, len(data), 0])

    def release(self, session_id: int) -> None:
        """A session ended (closed, timed out, forgotten): SOL goes with it."""
        if self.owner is not None and self.owner.session_id == session_id:
            self._deactivate()

    def _acked(self, packet: _Outbound, accepted: int, nack: bool) -> None:
        self._unacked = None
        self._cancel_retry()
        if nack:  # the console took `accepted` characters and wants the rest later
            self._pending[:0] = packet.data[accepted:]
            self._schedule_flush(self._retry_delay())
        else:
            self._schedule_flush(0)

    def _output(self, data: bytes) -> None:
        self.history += data
        del self.history[:-HISTORY]
        if self.owner is None:
            return
        self._pending += data
        if len(self._pending) > MAX_BUFFER:
            del self._pending[:-MAX_BUFFER]
        threshold = len(self._pending) >= self.config.send_threshold
        self._schedule_flush(0 if threshold else self.config.accumulate_interval * 0.005)

    def _schedule_flush(self, delay: float) -> None:
        if self._flush_timer is not None:
            if delay:
                return
            self._flush_timer.cancel()
        loop = _running_loop()
        if loop is None:
            self._flush()
        else:
            self._flush_timer = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        if self.owner is None or self._unacked is not None or not self._pending:
            return
        chunk = bytes(self._pending[: PAYLOAD_SIZE - 4])
        del self._pending[: len(chunk)]
        self._out_sequence = self._out_sequence % 15 + 1  # 1 to 15; 0 means "no data"
        self._unacked = _Outbound(self._out_sequence, chunk)
        self._transmit(self._unacked)

    def _transmit(self, packet: _Outbound) -> None:
        if self.owner is None:
            return
        self.owner.send(bytes([packet.sequence, 0, 0, 0]) + packet.data)
        loop = _running_loop()
        if loop is not None:
            self._retry_timer = loop.call_later(self._retry_delay(), self._retry, packet)

    def _retry(self, packet: _Outbound) -> None:
        self._retry_timer = None
        if self._unacked is not packet or self.owner is None:
            return
        if not self.owner.alive():
            self._deactivate()
        elif packet.tries >= self.config.retry_count:
            log.debug("SOL: %d characters never acknowledged, dropped", len(packet.data))
            self.dropped += len(packet.data)
            self._unacked = None
            self._schedule_flush(0)
        else:
            packet.tries += 1
            self._transmit(packet)

    def _retry_delay(self) -> float:
        return max(self.config.retry_interval, 1) * 0.01

    def _cancel_retry(self) -> None:
        if self._retry_timer is not None:
            self._retry_timer.cancel()
            self._retry_timer = None

    def _notify_deactivation(self) -> None:
        # A NACK of the console's last packet with "deactivating": pyghmi reports a disconnect
        # only for a (n)ack of its own last packet.
        if self.owner is not None:
            self.owner.send(bytes([0, self._in_sequence, 0, NACK | DEACTIVATING]))

    def _deactivate(self) -> None:
        self.owner = None
        self._unacked = None
        self._pending = bytearray()
        self._cancel_retry()
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None


Handler = Callable[[SolPort, Peer, bytes], Reply]

COMMANDS: dict[tuple[int, int], tuple[Privilege, Handler]] = {
    (NETFN_APP, 0x48): (Privilege.USER, SolPort._activate),
    (NETFN_APP, 0x49): (Privilege.USER, SolPort._deactivate_command),
    (NETFN_APP, 0x4A): (Privilege.USER, SolPort._status),
    (NETFN_APP, 0x4B): (Privilege.USER, SolPort._instance_info),
    (NETFN_APP, 0x4E): (Privilege.USER, SolPort._payload_support),
    (NETFN_APP, 0x4F): (Privilege.USER, SolPort._payload_version),
    (NETFN_TRANSPORT, 0x21): (Privilege.ADMINISTRATOR, SolPort._set_config),
    (NETFN_TRANSPORT, 0x22): (Privilege.USER, SolPort._get_config),
}


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
