"""`rackhand health`'s exit codes and table, on canned answers (the README's examples run the
same commands against the demo: tests/test_readme.py)."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from typer.testing import CliRunner

from app.cli import health
from app.cli.main import app


def verdict(device: str, state: str, *reasons: str) -> dict[str, Any]:
    return {"device": device, "site": "bj-dc1", "health": state, "reasons": list(reasons),
            "path": "ipmi", "message": "", "checked_at": None, "changed_at": None}  # fmt: skip


class Canned:
    """Stands for the API client: answers GET /health with `answer`, records the parameters."""

    asked: ClassVar[dict[str, Any]] = {}

    def __init__(self, answer: dict[str, Any]) -> None:
        self.answer = answer

    def __call__(self, *args: Any, **kwargs: Any) -> Canned:
        return self

    def __enter__(self) -> Canned:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def request(self, method: str, path: str, **kwargs: Any) -> Canned:
        Canned.asked = {"method": method, "path": path, **kwargs.get("params", {})}
        return self

    def json(self) -> dict[str, Any]:
        return self.answer


def run(monkeypatch: pytest.MonkeyPatch, devices: list[dict[str, Any]], *args: str) -> Any:
    counts = {state: sum(d["health"] == state for d in devices)
              for state in ("ok", "warning", "critical", "unknown")}  # fmt: skip
    monkeypatch.setattr(health, "Client", Canned({"devices": devices, "counts": counts}))
    monkeypatch.setattr(health, "authenticated", lambda: None)
    return CliRunner().invoke(app, ["health", *args], env={"COLUMNS": "200"})


def test_a_critical_device_exits_1_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [
        verdict("web01", "ok"),
        verdict("web02", "critical", "Fan2 critical: 0 RPM (lower critical 600 RPM)"),
    ]
    result = run(monkeypatch, devices, "web[01-02]", "--site", "bj-dc1")
    assert result.exit_code == 1
    assert "Fan2 critical: 0 RPM" in result.output
    assert Canned.asked == {"method": "GET", "path": "/health", "cached": "false",
                            "select": "web[01-02]", "site": "bj-dc1"}  # fmt: skip


def test_warnings_and_unknowns_exit_0(monkeypatch: pytest.MonkeyPatch) -> None:
    devices = [verdict("web01", "warning", "Inlet Temp warning: 39 °C"),
               verdict("web02", "unknown")]  # fmt: skip
    assert run(monkeypatch, devices, "--cached").exit_code == 0
    assert Canned.asked["cached"] == "true"


def test_json_is_the_answer_as_is(monkeypatch: pytest.MonkeyPatch) -> None:
    result = run(monkeypatch, [verdict("web01", "critical", "PSU2 critical")], "--json")
    assert result.exit_code == 1
    assert '"health": "critical"' in result.stdout
