"""A path's health is read from the last power read only where it names that path exactly:
10.0.0.1 is not 10.0.0.10, and a kind that answered says nothing of which of two paths did."""

from __future__ import annotations

from datetime import UTC, datetime

from agents.protocol import PowerState
from app.inventory.health import Health, path_health
from app.inventory.models import PathKind
from app.inventory.schemas import PathRead, PowerRead

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _path(number: int, kind: PathKind, address: str | None, port: int | None = None) -> PathRead:
    return PathRead(id=number, kind=kind, priority=number, address=address, port=port,
                    username="u", secret="set", via=None, outlets=None, domain=None, options={},
                    created_at=AT, updated_at=AT)  # fmt: skip


def _read(reachable: bool, path: str | None = None, message: str = "") -> PowerRead:
    return PowerRead(state=PowerState.ON if reachable else PowerState.UNKNOWN,
                     reachable=reachable, checked_at=AT, path=path, message=message,
                     last_seen_at=AT if reachable else None)  # fmt: skip


ONE = _path(1, PathKind.IPMI, "10.0.0.1")
TEN = _path(2, PathKind.IPMI, "10.0.0.10")


def test_a_failure_names_its_own_endpoint_exactly() -> None:
    reading = _read(False, message="ipmi 10.0.0.10:623: did not answer")
    assert path_health(TEN, reading, [ONE, TEN]).health is Health.FAILED
    assert path_health(ONE, reading, [ONE, TEN]).health is Health.UNCHECKED
    both = _read(False, message="ipmi 10.0.0.1:623: refused; ipmi 10.0.0.10:623: did not answer")
    assert path_health(ONE, both, [ONE, TEN]).detail == "ipmi 10.0.0.1:623: refused"
    assert path_health(TEN, both, [ONE, TEN]).detail == "ipmi 10.0.0.10:623: did not answer"


def test_a_success_marks_a_lone_path_of_its_kind_only() -> None:
    answered = _read(True, path="ipmi")
    assert path_health(ONE, answered, [ONE]).health is Health.OK
    assert path_health(ONE, answered, [ONE, TEN]).health is Health.UNCHECKED  # which one?
    assert path_health(TEN, answered, [ONE, TEN]).health is Health.UNCHECKED


def test_a_redfish_path_and_a_lone_outlet() -> None:
    redfish = _path(3, PathKind.REDFISH, "10.0.0.3")
    outlet = _path(4, PathKind.PDU_OUTLET, None)
    message = (
        "redfish https://10.0.0.3:443: certificate changed; "
        "pdu_outlet 10.0.9.9:22 not used: an outlet can only switch AC on or off"
    )
    reading = _read(False, message=message)
    assert path_health(redfish, reading, [redfish, outlet]).detail.startswith("redfish https")
    assert path_health(outlet, reading, [redfish, outlet]).detail.startswith("pdu_outlet 10.0.9.9")
    other = _path(5, PathKind.REDFISH, "10.0.0.30")
    assert path_health(other, reading, [redfish, other]).health is Health.UNCHECKED
