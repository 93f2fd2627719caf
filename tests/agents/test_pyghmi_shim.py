"""Each pyghmi patch, shown against pyghmi itself (and, where cheap, the upstream bug it fixes).

pyghmi's state is process-wide and this worker may already run the IPMI reactor, so tests that
pump pyghmi or build sessions run in a fresh interpreter (`isolated`).
"""

from __future__ import annotations

import importlib.metadata
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

import pytest

from agents.drivers import pyghmi_shim as shim
from sim.openipmi import openipmi_fleet

T = TypeVar("T")


def isolated(probe: Callable[[], T]) -> T:
    """Run `probe` (a module-level function) in a new Python process; return what it returns."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return pool.submit(probe).result(timeout=60)


def _session() -> Any:
    from pyghmi.ipmi.private import session  # type: ignore[import-untyped]

    return session


def _silent_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _timed(call: Callable[[], object]) -> float:
    start = time.monotonic()
    call()
    return time.monotonic() - start


def test_an_unknown_pyghmi_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shim, "_applied", False)
    monkeypatch.setattr(importlib.metadata, "version", lambda name: "1.7.0")
    with pytest.raises(RuntimeError, match=r"pyghmi 1\.7\.0 is installed .* patches 1\.6\.19"):
        shim.apply()


def test_a_changed_function_shape_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shim, "_applied", False)
    monkeypatch.setitem(shim._SHAPES, "_io_wait", "(timeout)")
    with pytest.raises(RuntimeError, match="changed shape"):
        shim.apply()


def _probe_queued_reply() -> float:
    session = _session()
    session.Session._assignsocket()  # starts pyghmi's I/O thread, as any session would
    shim.apply()
    session.sessionqueue.append(object())  # a reply the I/O thread queued a moment ago
    return _timed(lambda: session._io_wait(5.0))


def test_a_reply_already_queued_ends_the_wait_at_once() -> None:
    """Patch 1: upstream may sleep until its retry timer (then retransmit); patched returns.

    Upstream's stall depends on thread timing, so only the patched side is asserted: with a
    5 s wait, returning within 1 s can only mean the queued reply was seen.
    """
    assert isolated(_probe_queued_reply) < 1.0


class _Handler:
    def __init__(self, queued: bool, awaiting: bool) -> None:
        self.pktqueue = deque([b"reply"] if queued else [])
        self.awaitingresponse = awaiting


def _probe_directed_wait() -> tuple[float, float]:
    session = _session()
    shim.apply()
    session.Session._assignsocket()
    bmc = ("::ffff:192.0.2.1", 623, 0, 0)
    session.Session.bmc_handlers[bmc] = {1: _Handler(queued=True, awaiting=True)}
    awaited = _timed(lambda: session._io_wait(5.0, bmc))
    session.Session.bmc_handlers[bmc] = {1: _Handler(queued=True, awaiting=False)}
    not_awaited = _timed(lambda: session._io_wait(0.3, bmc))
    return awaited, not_awaited


def test_a_wait_on_one_bmc_ends_when_its_reply_is_queued() -> None:
    """Patch 1, waits on one address: only a session that awaits the reply cuts the wait short."""
    awaited, not_awaited = isolated(_probe_directed_wait)
    assert awaited < 0.1
    assert not_awaited >= 0.25  # someone else's packet must not make the waiter spin


def _probe_wake() -> tuple[float, float]:
    shim.apply()
    _session().Session._assignsocket()
    shim.wake()
    before = _timed(lambda: shim.pump(30))
    pumping = threading.Thread(target=shim.pump, args=(30,))
    start = time.monotonic()
    pumping.start()
    time.sleep(0.2)
    shim.wake()
    pumping.join(5)
    return before, time.monotonic() - start


def test_wake_ends_the_pump_from_another_thread() -> None:
    """A wake before the pump sleeps is not lost; one during its sleep ends it."""
    before, during = isolated(_probe_wake)
    assert before < 0.1
    assert during < 1.0


def _probe_initting() -> tuple[bool, bool, int]:
    from pyghmi.ipmi import command  # type: ignore[import-untyped]

    session = _session()
    port = _silent_port()
    ignore = lambda response, command: None  # noqa: E731
    first = command.Command("127.0.0.1", "admin", "pw", port=port, onlogon=ignore)
    second = command.Command("127.0.0.1", "admin", "pw", port=port, onlogon=ignore)
    upstream_shared = second.ipmi_session is first.ipmi_session
    shim.apply()
    links = [shim.Link("127.0.0.1", port, "admin", "other", 0, lambda error: None) for _ in "ab"]
    patched_shared = links[0]._session is links[1]._session
    for link in links:
        link.close()
    left = sum(key[2] == "other" for key in session.Session.initting_sessions)
    return upstream_shared, patched_shared, left


def test_a_second_session_for_the_same_bmc_is_a_new_one() -> None:
    """Patch 2: upstream hands the second Command the first's (still logging-in) session."""
    upstream_shared, patched_shared, left = isolated(_probe_initting)
    assert upstream_shared
    assert not patched_shared
    assert left == 0


def _probe_suites() -> dict[str, Any]:
    shim.apply()
    port = _silent_port()
    errors: dict[int, list[str | None]] = {0: [], 3: [], 17: []}
    links = {
        suite: shim.Link("127.0.0.1", port, "admin", "pw", suite, errors[suite].append)
        for suite in (0, 3, 17)
    }
    sessions = {suite: link._session for suite, link in links.items()}
    proposed = {suite: session.attemptedhash for suite, session in sessions.items()}
    for session in sessions.values():  # the BMC refuses the proposal: no cipher suite match
        session.ipmiversion, session.sessioncontext = 2.0, "OPENSESSION"  # as after Get Auth Cap
        session._got_rmcp_response(bytearray([session.rmcptag, 0x11, 0, 0]))
    logon_errors = {suite: list(found) for suite, found in errors.items()}  # closing adds more
    found = {"proposed": proposed, "errors": logon_errors, "fell_back": sessions[0].attemptedhash}
    for link in links.values():
        link.close()
    return found


def test_a_forced_cipher_suite_is_proposed_and_a_refusal_names_it() -> None:
    """Patch 3: 3 proposes SHA-1 at once; a refused forced suite fails; 0 falls back as upstream."""
    found = isolated(_probe_suites)
    assert found["proposed"] == {0: 256, 3: 1, 17: 256}  # pyghmi's SHA-256 / SHA-1 proposals
    assert found["errors"][17] == [
        f"{shim.SUITE_REFUSED}: suite 17 (No Cipher suite match with proposed security algorithms)"
    ]
    assert found["errors"][3][0].startswith(f"{shim.SUITE_REFUSED}: suite 3")
    assert found["errors"][0] == []
    assert found["fell_back"] == 1


def _garble_next(bmc: socket.socket) -> None:
    _, client = bmc.recvfrom(512)
    bmc.sendto(b"\x06\x00\xff\x07\x00\x01", client)  # a truncated IPMI 1.5 reply


def _probe_garbled_reply() -> tuple[str, list[str | None]]:
    from pyghmi.ipmi import command

    session = _session()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bmc:
        bmc.bind(("127.0.0.1", 0))
        bmc.settimeout(5)
        port = bmc.getsockname()[1]
        command.Command("127.0.0.1", "admin", "pw", port=port, onlogon=lambda *_: None)
        _garble_next(bmc)
        try:
            session.Session.wait_for_rsp(1)
            upstream = "nothing raised"
        except Exception as exc:
            upstream = repr(exc)
    shim.apply()
    errors: list[str | None] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bmc:
        bmc.bind(("127.0.0.1", 0))
        bmc.settimeout(5)
        shim.Link("127.0.0.1", bmc.getsockname()[1], "admin", "pw", 0, errors.append)
        _garble_next(bmc)
        deadline = time.monotonic() + 5
        while not errors and time.monotonic() < deadline:
            session.Session.wait_for_rsp(0.5)
    return upstream, errors


def test_a_reply_pyghmi_chokes_on_fails_only_its_own_session() -> None:
    """Patch 4: upstream raises into whoever pumps; patched, that BMC's login gets the error."""
    upstream, errors = isolated(_probe_garbled_reply)
    assert upstream == "error('unpack requires a buffer of 4 bytes')"
    assert errors == [f"{shim.UNPARSABLE}: error('unpack requires a buffer of 4 bytes')"]


def _probe_relogin() -> tuple[int, int]:
    from pyghmi.ipmi import command

    shim.apply()
    with openipmi_fleet(1) as [bmc]:
        upstream = command.Command(bmc.address, bmc.username, bmc.password, port=bmc.port)
        logons: list[str | None] = []
        link = shim.Link(bmc.address, bmc.port, bmc.username, bmc.password, 3, logons.append)
        while not logons:
            shim.pump(1)
        return upstream.ipmi_session.logontries, link._session.logontries


def test_a_logged_in_link_never_logs_in_again_by_itself() -> None:
    """Upstream keeps one silent re-login, which loses the pending callback; a Link keeps none."""
    assert isolated(_probe_relogin) == (1, 0)


def test_an_unrelated_reply_is_an_error_not_an_answer() -> None:
    """A late reply to an earlier request must not be read as the answer to this one."""
    answer = {"netfn": 1, "command": 1, "code": 0, "data": bytearray(b"\x01\x00\x00")}
    stray = {"netfn": 1, "command": 2, "code": 0, "data": bytearray()}
    assert shim._reply(answer, 1, 1) == shim.Reply(0, b"\x01\x00\x00")
    assert shim._reply(stray, 1, 1).error == "an unrelated reply (netfn 1 command 2)"
    assert shim._reply({"error": "timeout", "code": 0xFFFF}, 1, 1).error == "timeout"
