"""Each pyghmi patch, shown against pyghmi itself (and, where cheap, the upstream bug it fixes).

pyghmi's state is process-wide and this worker may already run the IPMI reactor, so tests that
pump pyghmi or build sessions run in a fresh interpreter (`isolated`).
"""

from __future__ import annotations

import importlib.metadata
import resource
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from typing import Any, TypeVar

import pytest

from agents.drivers import pyghmi_decoders
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


def test_the_decoders_shapes_are_pyghmis_and_a_changed_one_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pyghmi_decoders.check()
    monkeypatch.setitem(pyghmi_decoders._SHAPES, "FRU.__init__", "(self, rawdata)")
    with pytest.raises(RuntimeError, match="re-read it"):
        pyghmi_decoders.check()


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


class _CountingSocket:
    """pyghmi's wake-up socket, counting the datagrams a waiter sends to its I/O thread."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sent = 0

    def sendto(self, *args: Any) -> int:
        self.sent += 1
        return self.sock.sendto(*args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def _probe_zero_wait() -> tuple[int, int]:
    session = _session()
    session.Session._assignsocket()
    counting = session.iosockets[0] = _CountingSocket(session.iosockets[0])
    for _ in range(100):
        session._io_wait(0)
    upstream = counting.sent
    shim.apply()  # stops the I/O thread (with one datagram of its own)
    patched = counting.sent
    for _ in range(100):
        session._io_wait(0)
    return upstream, counting.sent - patched


def test_a_zero_wait_does_not_round_trip_through_the_io_thread() -> None:
    """Patch 1, polls: upstream wakes its I/O thread (and waits for it) on every 0 s wait."""
    assert isolated(_probe_zero_wait) == (100, 0)


class _Queue:
    def __init__(self) -> None:
        self.pktqueue: deque[tuple[Any, ...]] = deque()


def _probe_own_io() -> tuple[bool, bool, float, list[bytes], bool]:
    session = _session()
    session.Session._assignsocket()  # starts pyghmi's I/O thread, as any session would
    upstream_thread = session.iothread
    shim.apply()
    mine = session.iosockets[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bmc:
        bmc.bind(("127.0.0.1", 0))
        address = ("::ffff:127.0.0.1", bmc.getsockname()[1], 0, 0)
        handler = session.Session.bmc_handlers[address] = {mine.getsockname()[1]: _Queue()}
        bmc.sendto(b"\x06\x00\xff\x07 a reply", ("127.0.0.1", mine.getsockname()[1]))
        waited = _timed(lambda: session._io_wait(5.0))
    queued = [packet[0] for packet in next(iter(handler.values())).pktqueue]
    return (
        upstream_thread.is_alive(),
        session.sessionqueue[0] is next(iter(handler.values())),
        waited,
        queued,
        not mine.getblocking(),
    )


def _probe_high_descriptor() -> tuple[int, list[bytes]]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:  # this fresh process only
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    session = _session()
    shim.apply()
    held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(1100)]
    assert not session.iosockets  # pyghmi opens its first socket below, above 1,024
    session.Session._assignsocket()
    mine = session.iosockets[0]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as bmc:
        bmc.bind(("127.0.0.1", 0))
        address = ("::ffff:127.0.0.1", bmc.getsockname()[1], 0, 0)
        handler = session.Session.bmc_handlers[address] = {mine.getsockname()[1]: _Queue()}
        bmc.sendto(b"\x06\x00\xff\x07 a reply", ("127.0.0.1", mine.getsockname()[1]))
        session._io_wait(5.0)
    for sock in held:
        sock.close()
    return mine.fileno(), [packet[0] for packet in next(iter(handler.values())).pktqueue]


def test_a_socket_above_descriptor_1024_is_read() -> None:
    """Patch 1: the reactor waits with epoll; upstream's `select` refuses descriptors >= 1,024."""
    descriptor, queued = isolated(_probe_high_descriptor)
    assert descriptor >= 1024
    assert queued == [b"\x06\x00\xff\x07 a reply"]


def test_the_pumping_thread_reads_the_sockets_itself() -> None:
    """Patch 1: pyghmi's I/O thread is stopped; a wait reads the packets and queues them."""
    alive, routed, waited, queued, nonblocking = isolated(_probe_own_io)
    assert not alive
    assert routed
    assert waited < 1.0
    assert queued == [b"\x06\x00\xff\x07 a reply"]
    assert nonblocking


class _StubSession:
    """What the privilege step touches of a pyghmi Session; requests are recorded, not sent."""

    def __init__(self) -> None:
        self.privlevel = 4
        self.userid = b"admin"
        self.evq: deque[threading.Event] = deque()
        self.asked: list[list[int]] = []
        self.logons: list[dict[str, Any]] = []
        self.logging = True
        self.broken = False
        self.logged = 0  # set by the privilege step's continuation, as pyghmi's Session has it
        self.incommand: bool | float = False
        self.callback: Callable[[dict[str, Any]], None] | None = None

    def raw_command(self, netfn: int, command: int, data: list[int], callback: Any) -> None:
        assert (netfn, command) == (6, 0x3B)
        self.incommand = True
        self.asked.append(data)
        self.callback = callback

    def onlogon(self, response: dict[str, Any]) -> None:
        self.logons.append(response)

    def answer(self, code: int) -> None:
        assert self.callback is not None
        self.callback({"netfn": 7, "command": 0x3B, "code": code, "data": bytearray()})
        shim._run_deferred()  # as once pyghmi has handled the packet


def _probe_privilege_answers() -> dict[str, Any]:
    session = _session()
    granted, operator, refused, silent = (_StubSession() for _ in range(4))
    for stub in (granted, operator, refused, silent):
        shim._req_priv_level(stub)
    granted.answer(0)
    operator.answer(0x81)
    operator.answer(0)
    refused.answer(0x81)
    refused.answer(0xD4)
    assert silent.callback is not None
    silent.callback({"error": "timeout", "code": 0xFFFF})  # pyghmi's retries are over
    keepalive = session.Session.keepalive_sessions
    return {
        "asked": [stub.asked for stub in (granted, operator, refused)],
        "logons": [stub.logons for stub in (granted, operator, refused, silent)],
        "kept_alive": [stub in keepalive for stub in (granted, operator, refused, silent)],
        "logged": [stub.logged for stub in (granted, operator, refused, silent)],
        "busy": [stub.incommand for stub in (granted, operator, refused, silent)],
    }


def test_the_privilege_step_goes_on_in_its_reply_handler() -> None:
    """Patch 5, upstream's outcomes: ADMIN, else OPERATOR once, else the login fails."""
    found = isolated(_probe_privilege_answers)
    assert found["asked"] == [[[4]], [[4], [3]], [[4], [3]]]
    assert found["logons"][:2] == [[{"success": True}], [{"success": True}]]
    refused = "Insufficient privilege level or firmware firewall"
    assert found["logons"][2] == [
        {"error": f"{refused} while requesting privelege level 3 for b'admin'"}
    ]
    assert found["logons"][3] == [{"error": "timeout"}]  # read as "unreachable", not as a refusal
    assert found["kept_alive"] == [True, True, False, False]
    assert found["logged"] == [1, 1, 0, 0]
    assert found["busy"] == [False] * 4


def _probe_nested_waits() -> tuple[tuple[int, bool], tuple[int, bool, int]]:
    from pyghmi.ipmi import command

    session = _session()
    nested = [0]
    awaitresponse = session.Session.awaitresponse

    def counted(self: Any, *args: Any) -> Any:
        nested[0] += 1
        return awaitresponse(self, *args)

    session.Session.awaitresponse = counted
    with openipmi_fleet(1) as [bmc]:
        logons: list[Any] = []
        upstream = command.Command(
            bmc.address,
            bmc.username,
            bmc.password,
            port=bmc.port,
            onlogon=lambda *got: logons.append(got),
        )
        while not logons:
            session.Session.wait_for_rsp(1)
        before = (nested[0], bool(upstream.ipmi_session.logged))
        nested[0] = 0
        session.Session.initting_sessions.clear()  # upstream's stale entry (patch 2's bug)
        shim.apply()
        errors: list[str | None] = []
        link = shim.Link(bmc.address, bmc.port, bmc.username, bmc.password, 3, errors.append)
        while not errors:
            shim.pump(1)
        after = (nested[0], link.usable and errors == [None], link._session.privlevel)
        link.close()
        return before, after


def test_a_login_never_waits_inside_the_pumping_thread() -> None:
    """Patch 5 against ipmi_sim: upstream's privilege step is a nested wait; patched, none."""
    upstream, patched = isolated(_probe_nested_waits)
    assert upstream == (1, True)
    assert patched == (0, True, 4)


class _Parms(dict[str, Any]):
    """A timer entry of pyghmi's tables, counting how often its deadline is read."""

    reads = 0

    def __getitem__(self, key: str) -> Any:
        _Parms.reads += 1
        return super().__getitem__(key)


class _TimedSession:
    def __init__(self, busy: bool = False) -> None:
        self.busy = busy
        self.kept = self.timed_out = 0

    def _isincommand(self) -> bool:
        return self.busy

    def _keepalive(self) -> None:
        self.kept += 1

    def _timedout(self) -> None:
        self.timed_out += 1


def _probe_timer_reads() -> dict[str, Any]:
    session = _session()
    table = session.Session
    session.Session._assignsocket()
    now = session._monotonic_time()
    idle = [_TimedSession() for _ in range(5000)]
    for each in idle:
        table.keepalive_sessions[each] = _Parms(ipmisession=each, timeout=now + 600)
    session.Session.wait_for_rsp(0.01)
    upstream = _Parms.reads
    shim.apply()  # indexes what the tables hold
    due, busy, gone = _TimedSession(), _TimedSession(busy=True), _TimedSession()
    expired, pending = _TimedSession(), _TimedSession()
    for each in (due, busy, gone):
        table.keepalive_sessions[each] = _Parms(ipmisession=each, timeout=now - 1)
        shim._index(shim._keepalives, each, now - 1)
    for each, deadline in ((expired, now - 1), (pending, now + 600)):
        table.waiting_sessions[each] = _Parms(ipmisession=each, timeout=deadline)
        shim._index(shim._waiting, each, deadline)
    del table.keepalive_sessions[gone]
    _Parms.reads = 0
    waiting = session.Session.wait_for_rsp(0.01)
    return {
        "reads": (upstream, _Parms.reads),
        "kept": (due.kept, busy.kept, gone.kept),
        "next_keepalive": table.keepalive_sessions[due]["timeout"] - now,
        "timed_out": (expired.timed_out, pending.timed_out),
        "waiting": (waiting, expired in table.waiting_sessions),
        "idle_kept": sum(each.kept for each in idle),
    }


def test_timers_come_from_an_index_not_a_scan_of_every_session() -> None:
    """Patch 6: upstream reads every session's deadline on each wake-up; patched, the due ones."""
    found = isolated(_probe_timer_reads)
    upstream, patched = found["reads"]
    assert upstream >= 10_000  # 5,000 idle sessions, scanned twice
    assert patched < 20
    assert found["kept"] == (1, 0, 0)  # the busy one waits for its request to end; gone is gone
    assert 24 <= found["next_keepalive"] <= 30  # pyghmi's MAX_IDLE - up to 4.9 s
    assert found["timed_out"] == (1, 0)
    assert found["waiting"] == (1, False)
    assert found["idle_kept"] == 0
