"""The audit export under attack: clients that ask for it and never read, on a real uvicorn;
and CSV cells that a spreadsheet would run as formulas."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import socket
import subprocess
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.audit import export as audit_export
from app.audit.models import EventType
from app.audit.service import SYSTEM, Event, append
from app.config import Settings
from app.csv_cells import TRIGGERS
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from tests.factories import ok, site
from tests.live import RACKHAND, admin_token, until, uvicorn_thread

# About 7 MB of JSON lines: more than a connection's socket buffers hold (up to 4 MB for the
# server's on loopback), so an export to a client that never reads stops in its send.
EVENTS = 3000
PADDING = "x" * 1900
STALLED = 16  # as in the incident: more than SQLite's pool (15), half of PostgreSQL's (30)
QUICK = 10.0  # seconds; the stalled pool made every request wait 30 s, then fail


async def _fill(url: str, events: int = EVENTS) -> None:
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine, write=True)() as session:
            for _ in range(events // 1000):
                await append(session, [Event(EventType.POWER_DRIFT, SYSTEM, reason=PADDING)] * 1000)
            await session.commit()
    finally:
        await engine.dispose()


class Stalled:
    """A client that asks for a download, reads the response's head, then nothing more: its
    receive window stays a few KiB, so the server's buffers fill and its sends wait."""

    def __init__(self, url: str, path: str, token: str) -> None:
        self.socket = socket.socket()
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.socket.settimeout(20)
        self.socket.connect(("127.0.0.1", urlsplit(url).port or 80))
        request = (
            f"GET /api/v1/{path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        self.socket.sendall(request.encode())
        self.received = b""

    def head(self) -> str:
        """The status line and headers: the export has begun to stream."""
        while b"\r\n\r\n" not in self.received:
            chunk = self.socket.recv(4096)
            if not chunk:
                break
            self.received += chunk
        return self.received.partition(b"\r\n\r\n")[0].decode()

    def rest(self) -> bytes:
        """Everything until the server closes the connection."""
        try:
            while chunk := self.socket.recv(1 << 16):
                self.received += chunk
        except ConnectionResetError:
            pass
        return self.received

    def close(self) -> None:
        self.socket.close()


def _export(url: str, token: str, **params: str) -> httpx.Response:
    """A small export (filtered to nothing unless told otherwise), read whole."""
    params = {"type": "no.such.event"} | params
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{url}/api/v1/audit/export", params=params, headers=headers, timeout=QUICK)


def _app(settings: Settings, **changes: object) -> FastAPI:
    return create_app(settings.model_copy(update={"poll_power": False, **changes}))


def test_stalled_exports_hold_no_database_connection(settings: Settings) -> None:
    """The attack: stalled downloads each held a pooled connection; with the pool gone every
    request waited 30 s and failed (500), and /readyz said 503."""
    asyncio.run(_fill(settings.database_url))
    room = STALLED + 1  # the caps are not under test here: the connections are
    app = _app(settings, exports_per_caller=room, exports_at_once=room)
    with uvicorn_thread(app) as url:
        token = admin_token(url)
        readers: list[Stalled] = []
        try:
            for _ in range(STALLED):  # one after another, each begun before the next
                readers.append(Stalled(url, "audit/export", token))
                assert readers[-1].head().startswith("HTTP/1.1 200"), len(readers)
            pool = app.state.engine.sync_engine.pool
            until(lambda: pool.checkedout() == 0, "the stalled exports to hold no connection")
            assert httpx.get(f"{url}/api/v1/readyz", timeout=QUICK).status_code == 200
            assert _export(url, token).status_code == 200  # an export that reads its answer
            listed = httpx.get(
                f"{url}/api/v1/audit",
                params={"limit": 1},
                headers={"Authorization": f"Bearer {token}"},
                timeout=QUICK,
            )
            assert listed.status_code == 200
        finally:
            for reader in readers:
                reader.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)  # no database in this
def test_exports_at_once_are_capped_per_user_and_overall(settings: Settings) -> None:
    asyncio.run(_fill(settings.database_url))
    with uvicorn_thread(_app(settings, exports_per_caller=2, exports_at_once=3)) as url:
        admin = admin_token(url)
        vera = {"username": "vera", "password": "vera-password-1", "grants": [{"role": "viewer"}]}
        auth = {"Authorization": f"Bearer {admin}"}
        httpx.post(f"{url}/api/v1/users", json=vera, headers=auth).raise_for_status()
        login = {"username": "vera", "password": "vera-password-1"}
        viewer = httpx.post(f"{url}/api/v1/auth/token", data=login).json()["access_token"]
        mine = [Stalled(url, "audit/export", admin) for _ in range(2)]
        theirs = None
        try:
            for reader in mine:
                assert reader.head().startswith("HTTP/1.1 200")
            refused = _export(url, admin)
            assert refused.status_code == 429
            assert refused.headers["Retry-After"] == "5"
            assert refused.json()["error"] == "TooManyExports"
            assert "you have 2 exports running" in refused.json()["detail"]
            devices = httpx.get(f"{url}/api/v1/devices/export", headers=auth, timeout=QUICK)
            assert devices.status_code == 429  # one budget for every kind of export

            theirs = Stalled(url, "audit/export", viewer)  # another user has slots of their own
            assert theirs.head().startswith("HTTP/1.1 200")
            full = _export(url, viewer)
            assert full.status_code == 429
            assert "3 exports are running" in full.json()["detail"]

            mine[0].close()  # a client that goes away gives its slot back
            until(lambda: _export(url, admin).status_code == 200, "the closed export's slot")
        finally:
            for reader in [*mine, *([theirs] if theirs else [])]:
                reader.close()


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_reader_who_stops_reading_is_cut_off(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    asyncio.run(_fill(settings.database_url))
    app = _app(settings, exports_per_caller=1, export_stall_seconds=1.0)
    with uvicorn_thread(app) as url:
        token = admin_token(url)
        stalled = Stalled(url, "audit/export", token)
        try:
            assert stalled.head().startswith("HTTP/1.1 200")
            assert _export(url, token).status_code == 429  # it holds the user's one slot
            until(lambda: _export(url, token).status_code == 200, "the stalled export's end")
            body = stalled.rest()  # the server closed the connection
        finally:
            stalled.close()
    assert not body.endswith(b"\r\n0\r\n\r\n")  # no last chunk: the client sees it is cut short
    assert body.count(b'"type":"power.drift"') < EVENTS
    assert "cut off: the reader took nothing for 1 s" in caplog.text


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_cli_says_a_cut_off_export_is_incomplete(settings: Settings) -> None:
    """`rackhand audit export | less`, left waiting: the server cuts the export off, and the
    CLI says the output is incomplete (exit 1) instead of ending as if it were whole."""
    asyncio.run(_fill(settings.database_url, events=3 * EVENTS))  # more than a pipe and buffers
    # 5 s: the CLI's stalled export must hold its slot long enough for the poll below to see
    # it on a loaded machine (at 1 s the whole window could pass between two polls)
    app = _app(settings, exports_per_caller=1, export_stall_seconds=5.0)
    with uvicorn_thread(app) as url:
        token = admin_token(url)
        env = os.environ | {"RACKHAND_URL": url, "RACKHAND_TOKEN": token}
        cli = subprocess.Popen(
            [RACKHAND, "audit", "export"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        try:

            def started() -> bool:
                if cli.poll() is not None:  # it ended before it held its slot: say why
                    pytest.fail(f"the CLI ended first ({cli.returncode}): {cli.communicate()}")
                # asked of the server, not by exporting: a probe's own export would take the
                # user's one slot, and a CLI arriving meanwhile would be refused (429)
                return bool(app.state.exports.running)

            until(started, "the CLI's export to start")
            assert _export(url, token).status_code == 429  # it holds the user's one slot
            until(lambda: _export(url, token).status_code == 200, "the waiting export's end")
            out, err = cli.communicate(timeout=60)  # the pager reads on
        finally:
            cli.kill()
    assert cli.returncode == 1
    assert "error (Incomplete): the download ended before its end" in err.decode()
    assert out.count(b"\n") < 3 * EVENTS


def test_csv_cells_never_run_as_formulas(client: TestClient) -> None:
    """The attack: a ticket `=HYPERLINK(...)` became a live link in the exported CSV."""
    evil = '=HYPERLINK("http://evil","x")'
    headers = {"X-Ticket": evil, "X-Reason": "@SUM(1+1)"}
    ok(client.post("sites", json={"slug": "bj-dc1", "name": "-BJ"}, headers=headers), 201)
    exported = client.get("audit/export", params={"format": "csv"})
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    (created,) = [row for row in rows if row["type"] == "site.created"]
    assert (created["ticket"], created["reason"]) == (f"'{evil}", "'@SUM(1+1)")
    cells = [cell for row in rows for cell in row.values()]
    assert [cell for cell in cells if cell[:1] in TRIGGERS] == []
    # JSON lines are no spreadsheet's: the ticket stays as it was given
    lines = client.get("audit/export", params={"type": "site.created"}).text.splitlines()
    assert [json.loads(line)["ticket"] for line in lines] == [evil]


def test_an_export_reads_every_event_once_across_its_batches(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(audit_export, "BATCH", 3)
    for number in range(5):
        site(client, f"s{number}")
    seqs = [json.loads(line)["seq"] for line in client.get("audit/export").text.splitlines()]
    assert len(seqs) > 3 * 2
    assert seqs == list(range(1, len(seqs) + 1))
