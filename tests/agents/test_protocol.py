"""The wire form of agent messages: what goes out comes back equal; anything else is refused."""

from __future__ import annotations

import pytest

from agents.protocol import (
    BootDevice,
    BootOrder,
    IpmiPath,
    PowerAction,
    PowerOrder,
    PowerState,
    RedfishPath,
    Report,
    TaskStatus,
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


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: PowerOrder | BootOrder | Report) -> None:
    assert decode(encode(message)) == message


@pytest.mark.parametrize(
    "data",
    [b"{}", b"[]", b"not json", b'{"type": "Shell", "body": {}}',
     b'{"type": "Report", "body": {"task_id": "1", "status": "exploded"}}',
     b'{"type": "PowerOrder", "body": {"task_id": "1", "paths": [{"kind": "telnet"}]}}'],
)  # fmt: skip
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a Rackhand agent message"):
        decode(data)
