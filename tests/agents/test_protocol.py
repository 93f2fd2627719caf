"""The wire form of agent messages: what goes out comes back equal; anything else is refused."""

from __future__ import annotations

from typing import get_args

import pytest

from agents.protocol import (
    BootDevice,
    BootOrder,
    ConsoleClosed,
    ConsoleControl,
    ConsoleInput,
    ConsoleOp,
    ConsoleOpen,
    ConsoleOpened,
    ConsoleOutput,
    DeviceAnswer,
    DeviceCall,
    FromAgent,
    FromWorker,
    HostKeySeen,
    IpmiPath,
    Message,
    PowerAction,
    PowerOrder,
    PowerState,
    RedfishPath,
    Report,
    TaskStatus,
    ToAgent,
    ToWorker,
    WorkerOp,
    decode,
    encode,
)

MESSAGES = [
    PowerOrder(
        "1",
        "web01",
        "bj-dc1",
        PowerAction.CYCLE,
        (
            IpmiPath("10.0.0.1", "admin", "pw", cipher_suite=3),
            RedfishPath("https://b:443", "u", "p"),
        ),
        12.5,
    ),
    BootOrder("2", "web02", "bj-dc1", BootDevice.BIOS, True, ()),
    Report("1", TaskStatus.SUCCEEDED, PowerState.ON, "ipmi", "cycle done", 1),
    Report("3", TaskStatus.RUNNING),
]


BMC = IpmiPath("10.0.0.1", "admin", "pw", cipher_suite=17)
REDFISH = RedfishPath("https://b:443", "u", "p", fingerprint="ab:cd")
EVERY_TYPE = [
    *MESSAGES,
    ConsoleOpen("s1", "web01", "bj-dc1", (BMC,), 132, 43),
    ConsoleInput("s1", b"ls\r\n\x00\xff"),
    ConsoleControl("s1", ConsoleOp.RESIZE, 132, 43),
    ConsoleControl("s1", ConsoleOp.BREAK),
    ConsoleOpened("s1", "ipmi", BMC.endpoint, "SOL"),
    ConsoleOutput("s1", b"\x1b[0mlogin: \n"),
    ConsoleClosed("s1", "device", "BMC 10.0.0.1:623 ended the SOL session"),
    HostKeySeen("10.0.0.9", 22, "SHA256:abc"),
    DeviceCall(7, WorkerOp.POWER, BMC, action=PowerAction.CYCLE),
    DeviceCall(8, WorkerOp.BOOT, REDFISH, boot=BootDevice.PXE, persistent=True),
    DeviceCall(9, WorkerOp.CONSOLE_OPEN, BMC, cols=132, rows=43),
    DeviceCall(10, WorkerOp.PING),
    DeviceCall(7, WorkerOp.CANCEL),
    DeviceAnswer(7, PowerState.ON),
    DeviceAnswer(10),
    DeviceAnswer(9, error="Busy", message="another SOL session is active on this BMC"),
]


def test_every_message_type_has_an_example() -> None:
    unions = (ToAgent, FromAgent, ToWorker, FromWorker)
    assert {type(message) for message in EVERY_TYPE} == {t for u in unions for t in get_args(u)}


@pytest.mark.parametrize("message", EVERY_TYPE, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    """Equal, down to the types of its fields (an enum, bytes, a path class); one line each,
    as the worker pipes carry them."""
    data = encode(message)
    assert b"\n" not in data
    assert decode(data) == message
    assert repr(decode(data)) == repr(message)


@pytest.mark.parametrize(
    "data",
    [b"{}", b"[]", b"not json", b'{"type": "Shell", "body": {}}',
     b'{"type": "Report", "body": {"task_id": "1", "status": "exploded"}}',
     b'{"type": "PowerOrder", "body": {"task_id": "1", "paths": [{"kind": "telnet"}]}}',
     b'{"type": "DeviceCall", "body": {"call_id": 1, "op": "shell"}}',
     b'{"type": "DeviceCall", "body": {"call_id": 1, "op": "power", "path": {"kind": "x"}}}'],
)  # fmt: skip
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a Rackhand agent message"):
        decode(data)
