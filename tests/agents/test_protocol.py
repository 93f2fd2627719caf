"""The wire form of agent messages: what goes out comes back equal; anything else is refused."""

from __future__ import annotations

import pytest

from agents.protocol import (
    BootDevice,
    BootOrder,
    CloseReason,
    ConsoleClosed,
    ConsoleOpen,
    ConsolePortPath,
    Dialect,
    Fru,
    FruArea,
    Health,
    HealthData,
    HealthOrder,
    HealthRead,
    HealthReport,
    IpmiPath,
    LogEvent,
    Message,
    PduOutletPath,
    PowerAction,
    PowerOrder,
    PowerState,
    RedfishPath,
    Report,
    Sensor,
    SensorState,
    SshTarget,
    TaskStatus,
    Thresholds,
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
    PowerOrder(
        "4", "pdu-fed", "bj-dc1", PowerAction.OFF,
        (PduOutletPath(SshTarget("10.0.0.9", "admin", "pw", Dialect.APC), (5, 6)),),
    ),
    ConsoleOpen(
        "s1", "web01", "bj-dc1",
        (ConsolePortPath(SshTarget("10.0.0.8", "admin", "pw", Dialect.OPENGEAR, 22), 3),),
    ),
    ConsoleClosed("s1", CloseReason.AGENT, "the agent's link dropped"),
    HealthOrder(
        "5", "web01", "bj-dc1", HealthRead.CLEAR_EVENTS,
        (IpmiPath("10.0.0.1", "admin", "pw"),), 30.0, background=True,
    ),
    HealthReport(
        "5", TaskStatus.SUCCEEDED,
        HealthData(
            sensors=(
                Sensor("Fan2", "Fan", SensorState.CRITICAL, 0.0, "RPM",
                       ("lower critical threshold",), Thresholds(lower_critical=500.0)),
                Sensor("PSU2", "Power Supply", SensorState.NOT_PRESENT),
            ),
            events=(LogEvent("7", None, Health.CRITICAL, "Failure detected", "PSU2",
                             "Power Supply", asserted=False, raw="0700"),),
            inventory=(Fru(0, "System", product=FruArea("Acme", "R1", serial_number="S1")),),
        ),
        "ipmi", "2 sensors read",
    ),
    HealthReport("6", TaskStatus.FAILED, message="no BMC answered"),
]  # fmt: skip


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: Message) -> None:
    back = decode(encode(message))
    assert back == message
    assert repr(back) == repr(message)  # members, not their spellings: `is` comparisons hold


@pytest.mark.parametrize(
    "data",
    [b"{}", b"[]", b"not json", b'{"type": "Shell", "body": {}}',
     b'{"type": "Report", "body": {"task_id": "1", "status": "exploded"}}',
     b'{"type": "ConsoleClosed", "body": {"session_id": "s1", "reason": "gone fishing"}}',
     b'{"type": "PowerOrder", "body": {"task_id": "1", "paths": [{"kind": "telnet"}]}}'],
)  # fmt: skip
def test_anything_else_is_refused(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a Rackhand agent message"):
        decode(data)
