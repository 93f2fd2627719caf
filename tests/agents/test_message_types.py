"""Every message type, on the link and on the worker pipes: an example of each comes back equal,
down to its fields' types, on one line; neither side takes the other's messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import get_args

import pytest

from agents.protocol import (
    PROTOCOL,
    BootDevice,
    BootOrder,
    Cancel,
    CloseReason,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOp,
    ConsoleOpen,
    ConsoleOpened,
    ConsoleOutput,
    Credit,
    DeviceAnswer,
    DeviceCall,
    Dialect,
    FromAgent,
    FromWorker,
    Fru,
    FruArea,
    Guest,
    GuestPath,
    GuestsOrder,
    GuestsReport,
    Health,
    HealthData,
    HealthOrder,
    HealthRead,
    HealthReport,
    Heartbeat,
    Hello,
    HostKeySeen,
    HostPath,
    Hypervisor,
    IpmiPath,
    LinkMessage,
    LogEvent,
    Message,
    PowerAction,
    PowerOrder,
    PowerState,
    RedfishPath,
    Refusal,
    RefusedBecause,
    Report,
    Sensor,
    SensorState,
    SshTarget,
    TaskStatus,
    ToAgent,
    ToWorker,
    Welcome,
    WorkerMessage,
    WorkerOp,
    decode,
    decode_worker,
    encode,
)

Decoder = Callable[[bytes], Message | WorkerMessage]

BMC = IpmiPath("10.0.0.1", "admin", "pw", cipher_suite=17)
REDFISH = RedfishPath("https://b:443", "u", "p", fingerprint="ab:cd")
HOST = HostPath(SshTarget("10.0.0.7", "root", "pw", Dialect.SHELL), Hypervisor.LIBVIRT)
GUEST = GuestPath(HOST, "5b1c9a1e-1b3f-4c1e-9a55-0a0b0c0d0e0f", "vps-7")
ORDER = PowerOrder("1", "web01", "bj-dc1", PowerAction.CYCLE, (BMC, REDFISH), 12.5)
CALL = DeviceCall(7, WorkerOp.POWER, BMC, action=PowerAction.CYCLE)
ANSWER = DeviceAnswer(7, PowerState.ON)
HEALTH = HealthData(
    sensors=(Sensor("Inlet Temp", "Temperature", SensorState.OK, 24.0, "°C"),),
    events=(
        LogEvent("1", "2026-12-06T10:00:00Z", Health.WARNING, "Upper Non-critical going high"),
    ),
    inventory=(Fru(0, "System", board=FruArea("Acme", manufactured="2026-01-01T00:00:00Z")),),
)
CONSOLE: list[ConsoleInput | ConsoleControl | ConsoleOutput | ConsoleClosed] = [
    ConsoleInput("s1", b"ls\r\n\x00\xff"),
    ConsoleControl("s1", ConsoleOp.RESIZE, 132, 43),
    ConsoleControl("s1", ConsoleOp.BREAK),
    ConsoleOutput("s1", b"\x1b[0mlogin: \n"),
    ConsoleClosed("s1", CloseReason.DEVICE, "BMC 10.0.0.1:623 ended the SOL session"),
]  # on the link and on the worker pipes alike
LINK: list[Message] = [
    ORDER,
    BootOrder("2", "web02", "bj-dc1", BootDevice.BIOS, True, (REDFISH,)),
    Report("1", TaskStatus.SUCCEEDED, PowerState.ON, "ipmi", "cycle done", 1),
    PowerOrder("3", "vps-7", "bj-dc1", PowerAction.RESET, (GUEST,)),
    GuestsOrder("4", "kvm01", "bj-dc1", HOST, 45.0),
    GuestsReport(
        "4", TaskStatus.SUCCEEDED, (Guest(GUEST.domain, "vps-7", "running", PowerState.ON, 2, 64),)
    ),
    HealthOrder("5", "web01", "bj-dc1", HealthRead.SENSORS, (BMC, REDFISH), background=True),
    HealthReport("5", TaskStatus.SUCCEEDED, HEALTH, "redfish", "1 sensor read"),
    ConsoleOpen("s2", "vps-7", "bj-dc1", (GUEST,)),
    ConsoleOpen("s1", "web01", "bj-dc1", (BMC,), 132, 43),
    ConsoleOpened("s1", "ipmi", BMC.endpoint, "SOL"),
    HostKeySeen("10.0.0.9", 22, "SHA256:abc"),
    Hello(PROTOCOL, "0.1.0", "sh-br12", "br12-a", ("ipmi", "pdu_outlet")),
    Welcome(PROTOCOL, 3, 5.0, 256 * 1024),
    Refusal(RefusedBecause.VERSION, "this central speaks agent protocol 2"),
    Heartbeat(4, 1),
    Cancel("1"),
    Credit("s1", 65536),
    *CONSOLE,
]
WORKER: list[WorkerMessage] = [
    CALL,
    DeviceCall(8, WorkerOp.BOOT, REDFISH, boot=BootDevice.PXE, persistent=True),
    DeviceCall(9, WorkerOp.CONSOLE_OPEN, BMC, cols=132, rows=43),
    DeviceCall(10, WorkerOp.PING),
    DeviceCall(11, WorkerOp.HEALTH, BMC, read=HealthRead.EVENTS),
    DeviceAnswer(11, health=HEALTH),
    DeviceCall(7, WorkerOp.CANCEL),
    ANSWER,
    DeviceAnswer(10),
    DeviceAnswer(9, error="Busy", message="another SOL session is active on this BMC"),
    *CONSOLE,
]


def test_every_message_type_has_an_example() -> None:
    link = {*get_args(ToAgent), *get_args(FromAgent), *get_args(LinkMessage)}
    assert {type(message) for message in LINK} == link
    assert {type(message) for message in WORKER} == {*get_args(ToWorker), *get_args(FromWorker)}


@pytest.mark.parametrize(
    ("message", "decoder"),
    [(message, decode) for message in LINK] + [(message, decode_worker) for message in WORKER],
    ids=lambda value: value.__name__ if callable(value) else type(value).__name__,
)
def test_round_trip(message: Message | WorkerMessage, decoder: Decoder) -> None:
    """Equal, down to its fields' types (members of an enum, bytes, a path's class); one line,
    as the worker pipes carry them."""
    data = encode(message)
    assert b"\n" not in data
    back = decoder(data)
    assert back == message
    assert repr(back) == repr(message)


@pytest.mark.parametrize(
    ("message", "decoder"),
    [(ORDER, decode_worker), (CALL, decode), (ANSWER, decode)],
    ids=["an order to a worker", "a call on the link", "an answer on the link"],
)
def test_the_link_and_the_worker_pipes_keep_their_own_messages(
    message: Message | WorkerMessage, decoder: Decoder
) -> None:
    with pytest.raises(ValueError, match="not a Rackhand agent message"):
        decoder(encode(message))


@pytest.mark.parametrize(
    "data",
    [b"{}", b"not json", b'{"type": "DeviceCall", "body": {"call_id": 1, "op": "shell"}}',
     b'{"type": "DeviceCall", "body": {"call_id": 1, "op": "power", "path": {"kind": "x"}}}',
     b'{"type": "DeviceCall", "body": {"op": "ping"}}',
     b'{"type": "DeviceAnswer", "body": {"call_id": 1, "state": "smoking"}}',
     b'{"type": "ConsoleOutput", "body": {"session_id": "1", "data": "not base64!"}}'],
)  # fmt: skip
def test_a_worker_pipe_refuses_anything_else(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a Rackhand agent message"):
        decode_worker(data)
