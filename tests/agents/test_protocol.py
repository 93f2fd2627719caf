"""The wire form of agent messages: what goes out comes back equal; anything else is refused."""

from __future__ import annotations

from collections.abc import Callable
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
    WorkerMessage,
    WorkerOp,
    decode,
    decode_worker,
    encode,
)

MESSAGES: list[Message] = [
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
CONSOLE: list[ConsoleInput | ConsoleControl | ConsoleOutput | ConsoleClosed] = [
    ConsoleInput("s1", b"ls\r\n\x00\xff"),
    ConsoleControl("s1", ConsoleOp.RESIZE, 132, 43),
    ConsoleControl("s1", ConsoleOp.BREAK),
    ConsoleOutput("s1", b"\x1b[0mlogin: \n"),
    ConsoleClosed("s1", "device", "BMC 10.0.0.1:623 ended the SOL session"),
]  # on the link and on the worker pipes alike
LINK: list[Message] = [
    *MESSAGES,
    *CONSOLE,
    ConsoleOpen("s1", "web01", "bj-dc1", (BMC,), 132, 43),
    ConsoleOpened("s1", "ipmi", BMC.endpoint, "SOL"),
    HostKeySeen("10.0.0.9", 22, "SHA256:abc"),
]
WORKER: list[WorkerMessage] = [
    *CONSOLE,
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
    assert {type(message) for message in LINK} == {*get_args(ToAgent), *get_args(FromAgent)}
    assert {type(message) for message in WORKER} == {*get_args(ToWorker), *get_args(FromWorker)}


@pytest.mark.parametrize(
    ("message", "decoder"),
    [(message, decode) for message in LINK] + [(message, decode_worker) for message in WORKER],
    ids=lambda m: type(m).__name__ if not callable(m) else m.__name__,
)
def test_round_trip(
    message: Message | WorkerMessage, decoder: Callable[[bytes], Message | WorkerMessage]
) -> None:
    """Equal, down to the types of its fields (an enum, bytes, a path class); one line each,
    as the worker pipes carry them."""
    data = encode(message)
    assert b"\n" not in data
    assert decoder(data) == message
    assert repr(decoder(data)) == repr(message)


@pytest.mark.parametrize(
    ("message", "decoder"),
    [
        (MESSAGES[0], decode_worker),
        (DeviceCall(7, WorkerOp.POWER, BMC, action=PowerAction.CYCLE), decode),
        (DeviceAnswer(7, PowerState.ON), decode),
    ],
    ids=["an order to a worker", "a call on the link", "an answer on the link"],
)
def test_the_link_and_the_worker_pipes_keep_their_own_messages(
    message: Message | WorkerMessage, decoder: Callable[[bytes], Message | WorkerMessage]
) -> None:
    with pytest.raises(ValueError, match="not a Rackhand agent message"):
        decoder(encode(message))


@pytest.mark.parametrize(
    "data",
    [b"{}", b"[]", b"not json", b'{"type": "Shell", "body": {}}',
     b'{"type": "Report", "body": {"task_id": "1", "status": "exploded"}}',
     b'{"type": "PowerOrder", "body": {"task_id": "1", "paths": [{"kind": "telnet"}]}}',
     b'{"type": "DeviceCall", "body": {"call_id": 1, "op": "shell"}}',
     b'{"type": "DeviceCall", "body": {"call_id": 1, "op": "power", "path": {"kind": "x"}}}',
     b'{"type": "DeviceAnswer", "body": {"call_id": 1, "state": "smoking"}}'],
)  # fmt: skip
@pytest.mark.parametrize("decoder", [decode, decode_worker])
def test_anything_else_is_refused(
    data: bytes, decoder: Callable[[bytes], Message | WorkerMessage]
) -> None:
    with pytest.raises(ValueError, match="not a Rackhand agent message"):
        decoder(data)
