"""The only code that touches pyghmi's internals: six patches and two narrow typed wrappers.

Written against pyghmi 1.6.19, read from its source (why: docs/ipmi.md); pyproject.toml pins
exactly that version and `apply()` refuses any other, or any patched function whose signature
changed (`_SHAPES`). Before moving the pin, re-read in the new pyghmi every function named in
`_SHAPES` (each "Patch N" section below says which it replaces or wraps, and `_Console` which
Console methods it overrides), then run tests/agents/test_pyghmi_shim.py, which shows each patch
against upstream pyghmi, and the IPMI and SOL driver tests against ipmi_sim. Everything here
runs on the one thread that drives pyghmi (the IPMI reactor in
`agents/drivers/ipmi_reactor.py`), except `wake()`, which any thread may call.

Not patched, on purpose: the lock-order deadlock (`awaitresponse` holds WAITING_SESSIONS and
takes KEEPALIVE_SESSIONS, `send_payload` the reverse) needs two threads inside pyghmi's protocol
code. pyghmi's own I/O thread is never started here (patch 1: the driving thread reads the
sockets), so with a single driving thread it cannot happen; a second thread calling pyghmi in
this process would bring it back.
"""

from __future__ import annotations

import contextlib
import heapq
import importlib.metadata
import inspect
import itertools
import logging
import random
import select
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pyghmi.ipmi import console as _console  # type: ignore[import-untyped]
from pyghmi.ipmi.private import constants as _constants  # type: ignore[import-untyped]
from pyghmi.ipmi.private import session as _session
from pyghmi.ipmi.private import util as _util

log = logging.getLogger(__name__)

PYGHMI_VERSION = "1.6.19"
SUITE_REFUSED = "cipher suite refused"  # starts a login error caused by a forced suite
UNPARSABLE = "pyghmi could not handle its reply"  # starts the error of a session it choked on
SUITES = (0, 3, 17)  # 0 = pyghmi's own choice: 17 (SHA-256), then 3 (SHA-1) if refused
ADMINISTRATOR = 4  # asked as pyghmi does by default: operator (3) if the BMC refuses it

# The shape of every pyghmi function patched or relied on below, as in 1.6.19: a changed
# signature means the body may have changed too, and the shim must be re-read before it is trusted.
_SHAPES = {
    "_io_wait": "(timeout, myaddr=None, evq=None)",
    "_io_sendto": "(mysocket, packet, sockaddr)",
    "Session.__init__": (
        "(self, bmc, userid, password, port=623, kg=None, onlogon=None, privlevel=None, "
        "keepalive=True)"
    ),
    "Session._initsession": "(self)",
    "Session._got_rmcp_response": "(self, data)",
    "Session.raw_command": (
        "(self, netfn, command, bridge_request=None, data=(), retry=True, delay_xmit=None, "
        "timeout=None, callback=None, rslun=0)"
    ),
    "Session.wait_for_rsp": "(timeout=None, callout=True)",
    "Session.process_pktqueue": "(self)",
    "Session._req_priv_level": "(self)",
    "Session._xmit_packet": "(self, retry=True, delay_xmit=None, timeout=None)",
    "Session._isincommand": "(self)",
    "Session._keepalive": "(self)",
    "Session._timedout": "(self)",
    # What `SolLink` overrides or calls of pyghmi's Console.
    "Console._got_session": "(self, response)",
    "Console._sendoutput": "(self, output, sendbreak=False)",
    "Console._sendpendingoutput": "(self)",
    "Console._got_sol_payload": "(self, payload)",
    "Console._got_payload_instance_info": "(self, response)",
    "Console._print_error": "(self, error)",
    "Console.send_payload": "(self, payload, payload_type=1, retry=True, needskeepalive=False)",
}

_applied = False
_wake = threading.Event()
_suite_for_new_session = 0


def apply() -> None:
    """Install the patches once; raise if pyghmi is not the version they were written for."""
    global _applied
    if _applied:
        return
    installed = importlib.metadata.version("pyghmi")
    if installed != PYGHMI_VERSION:
        raise RuntimeError(
            f"pyghmi {installed} is installed but agents/drivers/pyghmi_shim.py patches "
            f"{PYGHMI_VERSION}; re-read the patched functions in the new version, then update "
            "the shim and its tests"
        )
    session_class = _session.Session
    found = {name: str(inspect.signature(_lookup(name))) for name in _SHAPES}
    changed = {name: shape for name, shape in found.items() if shape != _SHAPES[name]}
    if changed:
        raise RuntimeError(f"pyghmi {installed} has changed shape, refusing to patch: {changed}")
    _own_the_sockets()
    _session._io_wait = _io_wait
    _session._io_sendto = _io_sendto
    session_class.__init__ = _init_forgetting_initting(session_class.__init__)
    session_class._initsession = _initsession_with_suite(session_class._initsession)
    session_class._got_rmcp_response = _rmcp_response_with_suite(session_class._got_rmcp_response)
    session_class.process_pktqueue = _process_failing_alone(session_class.process_pktqueue)
    session_class._req_priv_level = _req_priv_level
    session_class._xmit_packet = _xmit_indexed(session_class._xmit_packet)
    session_class.wait_for_rsp = classmethod(_wait_for_rsp)
    _index_existing()
    _applied = True


def _lookup(name: str) -> Callable[..., Any]:
    owner: Any = _console if name.startswith("Console.") else _session
    for part in name.split("."):
        owner = getattr(owner, part)
    return owner  # type: ignore[no-any-return]


# Patch 1 ---------------------------------------------------------------------------------------

# pyghmi's I/O thread is never started: the thread that pumps the loop (the reactor) reads the
# sockets itself, through an epoll selector (no 1,024-descriptor ceiling as with upstream's
# `select`). `_wake_r` is registered too, so that `wake()` can end a wait from any thread.
_selector: selectors.BaseSelector | None = None
_wake_r: socket.socket | None = None
_wake_w: socket.socket | None = None
_SEND_WAIT = 1.0  # s a send may wait for room in a full socket buffer, as upstream's blocking one


def _own_the_sockets() -> None:
    """Keep pyghmi from starting its I/O thread, or stop the one it has started.

    Upstream, one thread selects on pyghmi's sockets and hands each packet to the pumping
    thread through a queue and an Event: two thread switches and four `fcntl` calls (blocking
    mode set and reset around every send and receive) per packet, a fifth of the CPU of a cold
    login. With one thread driving pyghmi anyway, it may as well read the sockets itself.
    """
    global _selector, _wake_r, _wake_w
    if _selector is None:
        _selector = selectors.DefaultSelector()
        _wake_r, _wake_w = socket.socketpair()
        _wake_r.setblocking(False)
        _wake_w.setblocking(False)
        _selector.register(_wake_r, selectors.EVENT_READ)
    thread = _session.iothread
    _session.iothread = _NO_IO_THREAD  # `_assignsocket` starts one only while this is None
    _session.iothreadready = True
    if isinstance(thread, threading.Thread) and thread.is_alive():
        thread.running = False  # type: ignore[attr-defined]
        iosocket = _session.iosockets[0]
        iosocket.sendto(b"\x01", (_session.myself, iosocket.getsockname()[1]))
        threading.Thread.join(thread, 5.0)  # not its own join(): that logs out every session


_NO_IO_THREAD = object()


def _io_wait(timeout: float, myaddr: Any = None, evq: Any = None) -> None:
    """pyghmi's `_io_wait`, done by reading the sockets in the calling thread.

    A general wait (`myaddr` None) returns once packets are queued, on `wake()`, or after
    `timeout`; a wait of 0 s is a poll. A wait on one BMC address returns once a session
    awaiting a reply from it has one queued, or after `timeout`. A wait for another command's
    end (`evq`) waits out `timeout`: with one thread driving pyghmi nobody else can end it.

    This also fixes an upstream bug (lost wake-up): its I/O thread woke only waiters
    registered before it read a packet, so a reply read just before the wait was registered
    sat in the queue until the retry timer fired 0.5-1 s later, and the request was sent
    again (a chassis control could run twice). Here nothing is read behind the waiter's back.
    """
    deadline = _session._monotonic_time() + max(timeout, 0.0)
    while True:
        if evq is None:
            if myaddr is None and (_session.sessionqueue or _wake.is_set()):
                return
            if myaddr is not None and _reply_queued(myaddr):
                return
        remaining = deadline - _session._monotonic_time()
        _read(max(remaining, 0.0))
        if remaining <= 0 or (myaddr is None and evq is None):
            return


def _read(timeout: float) -> None:
    """Wait up to `timeout` s for packets or a wake; queue every packet to its session."""
    selector, wake = _selector, _wake_r
    assert selector is not None
    assert wake is not None
    sockets = _session.iosockets
    if len(selector.get_map()) != len(sockets) + 1:  # pyghmi opened a socket since
        for sock in sockets:
            if sock not in selector.get_map():
                sock.setblocking(False)
                selector.register(sock, selectors.EVENT_READ, sock.getsockname()[1])
    for key, _ in selector.select(timeout):
        if key.fileobj is wake:
            with contextlib.suppress(OSError):
                while wake.recv(4096):
                    pass
        else:
            _take(key.fileobj, key.data)


def _take(sock: Any, port: int) -> None:
    """pyghmi's `_io_graball` for one socket: each datagram to the session it belongs to."""
    handlers = _session.Session.bmc_handlers
    queue = _session.sessionqueue
    while True:
        try:
            data, address = sock.recvfrom(3000)
        except OSError:  # nothing more to read (or an error upstream ignores alike)
            return
        if len(data) < 4:
            continue
        by_port = handlers.get(address)
        if by_port is not None and port in by_port:
            session, packet = by_port[port], (data, address, sock, True)
        elif sock in handlers:  # pyghmi is the BMC on this socket (its server class)
            session, packet = handlers[sock][0], (data, address, sock, False)
        else:
            continue
        session.rackhand_heard = True  # the BMC is alive, however slow its login (Link.heard)
        session.pktqueue.append(packet)
        queue.append(session)


def _io_sendto(sock: Any, packet: bytes, sockaddr: Any) -> None:
    """pyghmi's `_io_sendto` on a socket left non-blocking: a full buffer waits a moment."""
    try:
        sock.sendto(packet, sockaddr)
    except BlockingIOError:
        select.select((), (sock,), (), _SEND_WAIT)
        with contextlib.suppress(OSError):
            sock.sendto(packet, sockaddr)
    except OSError:
        pass  # as upstream: a packet that could not go is the retry timer's


def _reply_queued(sockaddr: Any) -> bool:
    handlers = _session.Session.bmc_handlers.get(sockaddr, {})
    return any(
        handler.pktqueue and getattr(handler, "awaitingresponse", False)
        for handler in list(handlers.values())
    )


def wake() -> None:
    """End the reactor's current (or next) `pump()` early; safe from any thread."""
    if not _wake.is_set():
        _wake.set()
        if _wake_w is not None:
            with contextlib.suppress(OSError):  # full: a wake is pending anyway
                _wake_w.send(b"\x01")


def pump(timeout: float) -> None:
    """One turn of pyghmi's event loop: packets, retries, keep-alives and callbacks of every BMC.

    Returns after `timeout` s, on any packet, or on `wake()`. Call it from one thread only. A
    packet pyghmi chokes on fails its own session (patch 4); anything else pyghmi raises (from
    a retry or keep-alive) is logged, and the loop goes on. Work submitted before a `wake()`
    must be looked at after `pump()` returns: the wake flag is cleared on the way out.
    """
    try:
        _session.Session.wait_for_rsp(timeout=max(timeout, 0.0))
    except Exception:
        log.exception("pyghmi failed while handling a packet; going on with the other BMCs")
    finally:
        _wake.clear()


# Patch 2 ---------------------------------------------------------------------------------------


def _init_forgetting_initting(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap `Session.__init__`: forget the session in `initting_sessions` once it has started.

    Upstream bug (Python 3): the entry is stored under the caller's `str` user and password and
    deleted under the session's `bytes` copies, so it is never deleted. The next Command for the
    same BMC and credentials is handed that old session: it hangs forever if the session is still
    logging in, and fails after ~8 s forever after one failed login. Upstream deletes the entry on
    the first packet sent, so popping it when `__init__` returns keeps upstream's intent. It also
    stamps the cipher suite asked for (patch 3) on the session before its login starts.
    """

    def __init__(  # noqa: N807 - it replaces Session.__init__
        self: Any,
        bmc: str,
        userid: str,
        password: str,
        port: int = 623,
        kg: Any = None,
        onlogon: Any = None,
        privlevel: Any = None,
        keepalive: bool = True,
    ) -> None:
        if not hasattr(self, "initialized"):
            self.rackhand_suite = _suite_for_new_session
        try:
            init(self, bmc, userid, password, port, kg, onlogon, privlevel, keepalive)
        finally:
            key = (bmc, userid, password, port, kg)
            if _session.Session.initting_sessions.get(key) is self:
                del _session.Session.initting_sessions[key]

    return __init__


# Patch 3 ---------------------------------------------------------------------------------------


def _initsession_with_suite(initsession: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap `Session._initsession`: propose the forced suite's algorithms (3 = SHA-1 at once).

    pyghmi has no cipher suite setting: it always proposes suite 17 (SHA-256) first and falls
    back to 3 only when the BMC answers the proposal with an error.
    """

    def _initsession(self: Any) -> None:
        initsession(self)
        if getattr(self, "rackhand_suite", 0) == 3:
            self.attemptedhash = 1  # pyghmi's SHA-1 proposal is suite 3's algorithms exactly

    return _initsession


def _rmcp_response_with_suite(got: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """Wrap `Session._got_rmcp_response`: a forced suite that the BMC refuses fails the login.

    Without this, a refused suite 17 silently becomes suite 3, and a refused suite 3 fails with a
    bare RMCP status that does not say the suite was the problem.
    """

    def _got_rmcp_response(self: Any, data: Any) -> Any:
        suite = getattr(self, "rackhand_suite", 0)
        if (
            suite
            and self.sessioncontext == "OPENSESSION"
            and data[0] == self.rmcptag
            and data[1] != 0
        ):
            reason = _constants.rmcp_codes.get(data[1], f"RMCP+ status {data[1]:#04x}")
            self.onlogon({"error": f"{SUITE_REFUSED}: suite {suite} ({reason})"})
            return -9
        return got(self, data)

    return _got_rmcp_response


# Patch 4 ---------------------------------------------------------------------------------------


def _process_failing_alone(process: Callable[[Any], None]) -> Callable[[Any], None]:
    """Wrap `Session.process_pktqueue`: a packet pyghmi chokes on fails that BMC's session only.

    Upstream, the exception (e.g. `struct.error` on a truncated reply, or "Session no longer
    connected" when a BMC falls silent mid-login) escapes into whichever call pumped the loop:
    often another BMC's `Command()` or request, which then fails in its place, while the
    packets queued behind it wait. Here the session whose packet it was fails as a timeout
    fails it: its login, or its pending request, gets the error, and it is marked broken.
    """

    def process_pktqueue(self: Any) -> None:
        try:
            process(self)
        except Exception as exc:
            self.pktqueue.clear()
            if self.broken:
                return
            error = f"{UNPARSABLE}: {exc!r}"
            if self.logging:
                self.onlogon({"error": error})  # upstream's own path for a failed login
                return
            if self.incommand:
                self.ipmicallback({"error": error, "code": 0xFFFF})
            self._mark_broken(error)
        finally:
            _run_deferred()

    return process_pktqueue


# Work a reply handler must not do inside pyghmi's packet parsing: once `_parse_ipmi_payload`
# has called the handler, it forgets the session's newest request entry, so a request sent from
# the handler would have its reply dropped as unrelated. It runs once the packets are handled.
_deferred: deque[Callable[[], None]] = deque()


def _run_deferred() -> None:
    while _deferred:
        _deferred.popleft()()


# Patch 5 ---------------------------------------------------------------------------------------

_PRIVILEGE_REFUSED = (0x80, 0x81)  # the BMC will not grant this level: upstream tries OPERATOR


def _req_priv_level(self: Any) -> None:
    """pyghmi's last login step, Set Session Privilege Level (0x3B), in callback style.

    Upstream sends it with a blocking `raw_command` from inside the RAKP4 handler: the thread
    that pumps pyghmi's loop (our reactor) then sits in a nested wait that serves only this
    session, one round trip per login while every other BMC's packets wait in the queue. Here
    the request goes out and the login goes on in its reply's handler (`_privilege_set`), with
    upstream's steps: ADMIN, OPERATOR once if ADMIN is refused (0x80/0x81), then the session
    joins the keep-alives and `onlogon` runs. The request is idempotent and pyghmi's timer
    retransmits it as upstream. One difference: upstream would start a silent re-login when it
    gets no answer at all (its reply then lands in a stale handler); here the login fails with
    "timeout", which the caller sees as an unreachable BMC and may retry.
    """
    self.logged = 1
    self.logoutexpiry = None
    self.maxtimeout = 4  # upstream's: a logged-in session gives up on a request sooner
    self.logontries = 0  # no silent re-login during this step (see above)
    _ask_privilege(self)


def _ask_privilege(self: Any) -> None:
    def answered(response: dict[str, Any]) -> None:
        if "error" in response:  # from pyghmi's retry timer, not from inside packet parsing
            _privilege_set(self, response)
        else:  # it may send OPERATOR's request, and `onlogon` may send one (SOL's activation)
            _deferred.append(lambda: _privilege_set(self, response))

    self.raw_command(netfn=6, command=0x3B, data=[self.privlevel], callback=answered)


def _privilege_set(self: Any, response: dict[str, Any]) -> None:
    """The reply to Set Session Privilege Level (or pyghmi's timeout): end the login."""
    self.incommand = False  # callback style leaves this to the caller
    while self.evq:
        self.evq.popleft().set()
    if self.broken:  # failed while the reply waited its turn
        return
    code = response.get("code", 0)
    if code in _PRIVILEGE_REFUSED and self.privlevel == 4:
        self.privlevel = 3
        _ask_privilege(self)
        return
    if code:
        self.logged = 0
        self.onlogpayload = None
        self.logging = False
        if response.get("error") == "timeout":
            self.onlogon({"error": "timeout"})
            return
        suffix = f" while requesting privelege level {self.privlevel} for {self.userid}"
        error = _util.get_ipmi_error(response, suffix=suffix)  # upstream's words (and spelling)
        if error:
            self.onlogon({"error": error})
            return
    self.logging = False
    self.logontries = 1  # upstream's value once logged in: one silent re-login (Link keeps 0)
    deadline = _session._monotonic_time() + _session.MAX_IDLE - random.random() * 4.9
    with _session.KEEPALIVE_SESSIONS:
        _session.Session.keepalive_sessions[self] = {"ipmisession": self, "timeout": deadline}
    _index(_keepalives, self, deadline)
    self.onlogon({"success": True})


# Patch 6 ---------------------------------------------------------------------------------------

# Deadlines of `Session.waiting_sessions` (retransmit timers) and `Session.keepalive_sessions`
# (idle timers) in heaps: (deadline, entry, session). A session's current entry is the one named
# in `_entry`; older ones, and those of sessions gone from pyghmi's tables, are dropped as they
# surface, so pyghmi keeps adding to and popping from its tables exactly as before.
_waiting: list[tuple[float, int, Any]] = []
_keepalives: list[tuple[float, int, Any]] = []
_entry: dict[tuple[int, Any], int] = {}  # (id of the heap, session) -> its current entry
_entries = itertools.count()
_KEEPALIVE_DEFERRED = 0.1  # s before looking again at a due keep-alive of a busy session


def _index(heap: list[tuple[float, int, Any]], session: Any, deadline: float) -> None:
    entry = next(_entries)
    _entry[id(heap), session] = entry
    heapq.heappush(heap, (deadline, entry, session))


def _drop_top(heap: list[tuple[float, int, Any]]) -> None:
    _, entry, session = heapq.heappop(heap)
    if _entry.get((id(heap), session)) == entry:
        del _entry[id(heap), session]


def _next_retransmit() -> float | None:
    """The earliest retransmit deadline of a session in `waiting_sessions`, if any."""
    waiting = _session.Session.waiting_sessions
    while _waiting:
        deadline, entry, session = _waiting[0]
        if _entry.get((id(_waiting), session)) == entry and session in waiting:
            return deadline
        _drop_top(_waiting)
    return None


def _next_keepalive() -> float | None:
    """The earliest keep-alive deadline of a session in `keepalive_sessions`, if any.

    Traffic moves a session's idle deadline (`send_payload`), and the heap is not told: an entry
    that surfaces with a later deadline in the table goes back in under that one. A deadline
    moved earlier (by pyghmi's random part) is kept at the indexed one, which is still at most
    MAX_IDLE after the session's last packet, as upstream promises.
    """
    keepalive = _session.Session.keepalive_sessions
    while _keepalives:
        deadline, entry, session = _keepalives[0]
        parms = keepalive.get(session) if _entry.get((id(_keepalives), session)) == entry else None
        if parms is None:
            _drop_top(_keepalives)
        elif parms["timeout"] > deadline:
            heapq.heapreplace(_keepalives, (parms["timeout"], entry, session))
        else:
            return deadline
    return None


def _xmit_indexed(xmit: Callable[..., None]) -> Callable[..., None]:
    """Wrap `Session._xmit_packet`, the only writer of `waiting_sessions`: index its deadline."""

    def _xmit_packet(
        self: Any, retry: bool = True, delay_xmit: Any = None, timeout: Any = None
    ) -> None:
        xmit(self, retry, delay_xmit, timeout)
        parms = _session.Session.waiting_sessions.get(self)
        if parms is not None:
            _index(_waiting, self, parms["timeout"])

    return _xmit_packet


def _index_existing() -> None:
    """Index what pyghmi's tables already hold (sessions made before `apply()`)."""
    for session, parms in list(_session.Session.waiting_sessions.items()):
        _index(_waiting, session, parms["timeout"])
    for session, parms in list(_session.Session.keepalive_sessions.items()):
        _index(_keepalives, session, parms["timeout"])


def _wait_for_rsp(cls: Any, timeout: float | None = None, callout: bool = True) -> int:
    """`Session.wait_for_rsp` with its timers read from the heaps instead of scans.

    Upstream walks every waiting and every logged-in session on each call, twice for the
    keep-alives (~0.1 ms a call with 1,000 sessions held), so a cold pass costs time quadratic
    in the BMCs of the process. This version does the same things in the same order (wait
    until the earliest timer or the caller's timeout, handle the queued packets, send due
    keep-alives, time out due requests) and looks only at timers that are due. A
    keep-alive of a session busy with a request waits for its end (upstream: a busy loop), here
    polled every 0.1 s.
    """
    curtime = _session._monotonic_time()
    if timeout != 0:
        for deadline in (_next_retransmit(), _next_keepalive()):
            if deadline is not None and (timeout is None or deadline - curtime < timeout):
                timeout = max(deadline - curtime, 0.0)
    while cls.iterwaiters:
        waiter = cls.iterwaiters.pop()
        waiter({"success": True})
        if timeout is not None:
            timeout = 0
    if timeout is None:
        return 0
    if _session._poller(timeout=timeout):
        while _session.sessionqueue:
            _session.sessionqueue.popleft().process_pktqueue()
    due: list[Any] = []
    with _session.KEEPALIVE_SESSIONS:
        while (deadline := _next_keepalive()) is not None and deadline < curtime:
            _, entry, session = heapq.heappop(_keepalives)
            if session._isincommand():
                heapq.heappush(_keepalives, (curtime + _KEEPALIVE_DEFERRED, entry, session))
                continue
            later = _session._monotonic_time() + _session.MAX_IDLE - random.random() * 4.9
            cls.keepalive_sessions[session]["timeout"] = later
            heapq.heappush(_keepalives, (later, entry, session))
            due.append(session)
    for session in due:
        session._keepalive()
    with _session.WAITING_SESSIONS:
        expired: list[Any] = []
        while (deadline := _next_retransmit()) is not None and deadline < curtime:
            _, _, session = heapq.heappop(_waiting)
            del _entry[id(_waiting), session]
            expired.append(session)
        for session in expired:
            cls.waiting_sessions.pop(session, None)
        for session in expired:
            session._timedout()
        return len(cls.waiting_sessions)


@contextmanager
def _suite(suite: int) -> Iterator[None]:
    global _suite_for_new_session
    _suite_for_new_session = suite
    try:
        yield
    finally:
        _suite_for_new_session = 0


# The typed wrapper -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A BMC's answer to one request; `error` is set when pyghmi gave up without one."""

    code: int = 0
    data: bytes = b""
    error: str | None = None


class Link:
    """One RMCP+ session to one BMC: a pyghmi Session driven in callback style.

    `on_logon(None)` or `on_logon(error)` is called once the login ends. After a good login the
    session never re-logs in on its own: pyghmi's silent re-login drops the pending callback and
    leaves the session marked busy for ~20 s, so a dead session is reported broken instead, and
    the caller opens a new one. No pyghmi `Command` around it: that would only add an import of
    pyghmi's OEM modules (~50 ms CPU per process start) and a pump of the loop per login.
    """

    def __init__(
        self,
        address: str,
        port: int,
        username: str,
        password: str,
        suite: int,
        on_logon: Callable[[str | None], None],
        *,
        privilege: int = ADMINISTRATOR,
    ) -> None:
        if suite not in SUITES:
            raise ValueError(f"cipher suite {suite} is not one of {SUITES}")
        self._on_logon = on_logon
        self._session: Any = None
        with _suite(suite):
            session = _session.Session(
                bmc=address,
                userid=username,
                password=password,
                port=port,
                onlogon=self._logged,
                privlevel=_privlevel(privilege),
            )
        self._session = session
        if session.logged and not session.logging:
            session.logontries = 0

    def _logged(self, response: dict[str, Any]) -> None:
        error = response.get("error")
        if error is None and self._session is not None:
            self._session.logontries = 0
        self._on_logon(error)

    @property
    def usable(self) -> bool:
        """Logged in and not broken (pyghmi marks a session broken after it gives up)."""
        session = self._session
        return bool(session.logged) and not session.logging and not session.broken

    @property
    def heard(self) -> bool:
        """The BMC has sent us anything at all: slow maybe, but not silent."""
        return bool(getattr(self._session, "rackhand_heard", False))

    @property
    def busy(self) -> bool:
        """A request (ours or pyghmi's keep-alive) is still waiting for its reply."""
        return bool(self._session._isincommand())

    def send(
        self,
        netfn: int,
        command: int,
        data: bytes,
        *,
        retry: bool,
        on_reply: Callable[[Reply], None],
        lun: int = 0,
    ) -> None:
        """Send one request (to logical unit `lun` of the BMC); `on_reply` gets the answer, or
        an error if pyghmi gave up.

        With `retry=False` the request goes out exactly once and pyghmi sets no timer at all: no
        reply means no call, and the caller's own deadline must end the wait.
        """
        session = self._session

        def done(response: dict[str, Any]) -> None:
            session.incommand = False  # callback style leaves this to the caller
            while session.evq:
                session.evq.popleft().set()
            on_reply(_reply(response, netfn + 1, command))

        session.raw_command(
            netfn=netfn, command=command, data=data, retry=retry, callback=done, rslun=lun
        )

    def close(self) -> None:
        """Send Close Session once (if logged in) and forget the session; safe in any state."""
        session = self._session
        session.incommand = False
        while session.evq:
            session.evq.popleft().set()
        if not session.broken:
            session._mark_broken("closed")


def _privlevel(privilege: int) -> int | None:
    """pyghmi's `privlevel`: None asks for administrator, then operator if it is refused (in
    RAKP and in patch 5); a level given is asked as is, with no fallback."""
    return None if privilege == ADMINISTRATOR else privilege


def _reply(response: dict[str, Any], netfn: int, command: int) -> Reply:
    if "error" in response:
        return Reply(code=response.get("code", 0), error=str(response["error"]))
    if response.get("netfn") != netfn or response.get("command") != command:
        got = f"netfn {response.get('netfn')} command {response.get('command')}"
        return Reply(error=f"an unrelated reply ({got})")
    return Reply(code=response["code"], data=bytes(response["data"]))


# SOL -------------------------------------------------------------------------------------------

SOL_BUSY = "SOL payload already active"  # starts the failure when another client holds SOL

# Activate Payload's own completion codes (IPMI 2.0 §24.1); 0x80 is SOL_BUSY.
_SOL_REFUSALS = {
    0x81: "SOL is disabled on the BMC",
    0x82: "the BMC's SOL sessions are all taken",
    0x83: "the BMC cannot encrypt SOL, which pyghmi asks for",
    0x84: "the BMC requires SOL without encryption, which pyghmi does not offer",
}
# Waits before each resend of an unacknowledged SOL packet, the last one before giving up:
# pyghmi's own schedule (12.5 s in all), here kept by `SolLink.resend` instead of a nested loop.
_SOL_WAITS = (0.5, 1.5, 2.5, 3.5, 4.5)


@dataclass(frozen=True)
class SolFailure:
    """Why a SOL session did not open: `stage` "login" or "activate", pyghmi's words, the code."""

    stage: str
    detail: str
    code: int = 0


class _Console(_console.Console):  # type: ignore[misc]
    """pyghmi's Console without its blocking waits.

    Upstream, the activation (inside the login callback), every send (until the BMC acks it, up
    to 12.5 s) and `close` wait in a nested pump of pyghmi's loop: on the reactor thread that
    would hold up every other BMC of the process, and a nested pump serves only this session's
    packets. Here activation and deactivation are callbacks, a send returns once the packet is
    out, and `SolLink.resend` (called each reactor turn) retransmits on pyghmi's schedule.
    Receiving, acking and the keep-alive (Get Payload Instance Info, 0x4B) are pyghmi's own.
    """

    def __init__(
        self, link: SolLink, address: str, port: int, username: str, password: str, privilege: int
    ) -> None:
        # Console.__init__'s fields, without the nested pump it ends with.
        self.outputlock = threading.RLock()
        self.keepaliveid = None
        self.connected = False
        self.broken = False
        self.out_handler = link._handle
        self.remseq = 0
        self.myseq = 0
        self.lastsize = 0
        self.lasttextsize = 0
        self.lastpayload = bytearray()
        self.retriedpayload = 0
        self.pendingoutput: list[Any] = []
        self.awaitingack = False
        self.activated = False
        self.force_session = False  # another owner's SOL is refused (Busy), never taken over
        self.port = port
        self.maxoutcount = 0
        self.resend_at: float | None = None
        self._waits: list[float] = []
        self._link = link
        self.ipmi_session = None
        self.callgotsession: dict[str, Any] | None = None
        self.ipmi_session = _session.Session(
            bmc=address,
            userid=username,
            password=password,
            port=port,
            onlogon=self._got_session,
            privlevel=_privlevel(privilege),
        )
        self.session = self.ipmi_session  # Console forgets its session on any error; we do not
        if self.callgotsession is not None:
            self._got_session(self.callgotsession)

    def _got_session(self, response: dict[str, Any]) -> None:
        if "error" in response:
            self.broken = True
            self._link._failed(SolFailure("login", str(response["error"])))
            return
        if self.ipmi_session is None:
            self.callgotsession = response
            return
        self.ipmi_session.logontries = 0  # no silent re-login: it would lose the activation
        try:
            self.ipmi_session.raw_command(
                netfn=6, command=0x48, data=(1, 1, 0xC0, 0, 0, 0), callback=self._activated
            )
        except Exception as exc:  # pyghmi: "Session no longer connected"
            self.broken = True
            self._link._failed(SolFailure("activate", str(exc)))

    def _activated(self, response: dict[str, Any]) -> None:
        session = self.session
        session.incommand = False  # callback style leaves this to the caller
        while session.evq:
            session.evq.popleft().set()
        reply = _reply(response, 7, 0x48)
        failure: SolFailure | None = None
        if reply.error is not None and not reply.code:
            failure = SolFailure("activate", reply.error)
        elif reply.code == 0x80:
            failure = SolFailure("activate", SOL_BUSY, reply.code)
        elif reply.code:
            failure = SolFailure("activate", _SOL_REFUSALS.get(reply.code, ""), reply.code)
        elif len(reply.data) < 10:
            failure = SolFailure("activate", f"a short Activate Payload reply ({reply.data.hex()})")
        elif reply.data[8] | reply.data[9] << 8 not in (self.port, _swapped(self.port)):
            self.activated = True  # so that closing deactivates it
            failure = SolFailure("activate", "the BMC serves SOL on another UDP port")
        if failure is not None:
            self.broken = True
            self._link._failed(failure)
            return
        self.activated = True
        self.maxoutcount = max(1, reply.data[4] | reply.data[5] << 8)
        self.keepaliveid = session.register_keepalive(
            cmd={"netfn": 6, "command": 0x4B, "data": (1, 1)},
            callback=self._got_payload_instance_info,
        )
        session.sol_handler = self._got_sol_payload
        self.connected = True
        self._link._opened()
        # An empty packet first: ipmi_sim remembers the last sequence number of the previous
        # activation and acks a new packet with that number as a retransmission, dropping its
        # bytes. Whatever it makes of this one, the next number differs from the one it keeps.
        self._sendoutput(b"")

    def _sendoutput(self, output: bytes | str, sendbreak: bool = False) -> None:
        """Send one packet and return; `resend` retransmits it until the BMC acks it."""
        if isinstance(output, str):
            output = output.encode()
        self.myseq = (self.myseq + 1) & 0xF or 1
        self.lastpayload = bytearray((self.myseq, 0, 0, 0x10 if sendbreak else 0)) + output
        self.lasttextsize = len(output)
        self.awaitingack = True
        self._waits = list(_SOL_WAITS)
        self._transmit()

    def _transmit(self) -> None:
        self.resend_at = time.monotonic() + self._waits.pop(0)
        with contextlib.suppress(Exception):  # it has already ended the console (_print_error)
            self.send_payload(self.lastpayload, retry=False, needskeepalive=not self.lasttextsize)

    def _got_sol_payload(self, payload: Any) -> None:
        """pyghmi's receive path, except for a NACK that accepted the whole packet.

        A BMC whose serial side is still draining (ipmi_sim) answers "accepted all of it, NACK:
        hold on", then ACKs the same packet once drained. pyghmi took the NACK as a refusal and
        sent the next packet at once; ipmi_sim then repeated every ACK once more per packet,
        and stopped answering after ~15 KB. Here the NACK just means: wait for that ACK (the
        resend timer still runs, in case it is lost).
        """
        if (
            not isinstance(payload, dict)
            and len(payload) == 4
            and not payload[0] & 0x0F
            and self.awaitingack
            and payload[1] & 0x0F == self.myseq
            and payload[3] & 0x74 == 0x40  # NACK, not powered off, deactivated or a break
            and payload[2] >= self.lasttextsize
        ):
            return
        super()._got_sol_payload(payload)

    def resend(self, now: float) -> None:
        if not self.awaitingack or self.broken or self.resend_at is None or now < self.resend_at:
            return
        if self._waits:
            self._transmit()
        else:
            self.resend_at = None
            self._print_error("Connection lost")

    def close(self) -> None:
        """pyghmi calls this only once the session failed; `SolLink` deactivates and closes."""


def _swapped(port: int) -> int:
    return ((port & 0xFF) << 8) | (port >> 8)


class SolLink:
    """One SOL session: an RMCP+ session of its own, with payload 1 (SOL) activated on it.

    Driven in callback style like `Link`: `on_opened(None)` once activated, or
    `on_opened(SolFailure)`; then `on_output(bytes)` as the BMC sends, and `on_ended(detail)` once
    if the session ends from the BMC's side (deactivated, connection lost). Callbacks run inside
    `pump()` and must only queue work.
    """

    def __init__(
        self,
        address: str,
        port: int,
        username: str,
        password: str,
        suite: int,
        *,
        privilege: int = ADMINISTRATOR,
        on_opened: Callable[[SolFailure | None], None],
        on_output: Callable[[bytes], None],
        on_ended: Callable[[str], None],
    ) -> None:
        if suite not in SUITES:
            raise ValueError(f"cipher suite {suite} is not one of {SUITES}")
        self._on_opened = on_opened
        self._on_output = on_output
        self._on_ended = on_ended
        self._open = False
        self._done = False  # nothing more is reported
        with _suite(suite):
            self._console = _Console(self, address, port, username, password, privilege)
        self._session = self._console.session

    @property
    def backlog(self) -> int:
        """Bytes written but not yet sent (a packet awaiting its ack is sent)."""
        return sum(len(item) for item in self._console.pendingoutput if not isinstance(item, dict))

    @property
    def next_resend(self) -> float | None:
        """When `resend` has work to do (time.monotonic()), if it will."""
        console = self._console
        return console.resend_at if console.awaitingack and not console.broken else None

    def write(self, data: bytes) -> None:
        self._console.send_data(data)

    def send_break(self) -> None:
        self._console.send_break()

    def resend(self, now: float) -> None:
        """Retransmit the unacknowledged packet if its wait is over; give up after the last."""
        self._console.resend(now)

    def deactivate(self, on_done: Callable[[], None]) -> bool:
        """Send Deactivate Payload (SOL); `on_done()` once answered or given up.

        Returns False, having sent nothing, while another request (the keep-alive) is out:
        pyghmi allows one per session, so ask again a moment later.
        """
        console, session = self._console, self._session
        self._done = True
        if not console.activated or not session.logged or session.broken:
            on_done()
            return True
        if session._isincommand():
            return False
        session.unregister_keepalive(console.keepaliveid)
        session.sol_handler = None
        console.broken = True  # further writes are dropped
        console.connected = False

        def done(response: dict[str, Any]) -> None:
            if "error" not in response and response.get("command") != 0x49:
                return  # a late reply to an earlier request
            session.incommand = False
            while session.evq:
                session.evq.popleft().set()
            console.activated = False
            on_done()

        try:
            session.raw_command(netfn=6, command=0x49, data=(1, 1, 0, 0, 0, 0), callback=done)
        except Exception:  # the session died under us: nothing left to deactivate
            on_done()
        return True

    def close(self) -> None:
        """Send Close Session once (if logged in) and forget the session; safe in any state."""
        self._done = True
        console, session = self._console, self._session
        console.broken = True
        session.unregister_keepalive(console.keepaliveid)
        session.sol_handler = None
        session.incommand = False
        while session.evq:
            session.evq.popleft().set()
        if not session.broken:
            session._mark_broken("closed")

    def _opened(self) -> None:
        self._open = True
        self._on_opened(None)

    def _failed(self, failure: SolFailure) -> None:
        if not self._done:
            self._done = True
            self._on_opened(failure)

    def _handle(self, data: bytes | str | dict[str, Any]) -> None:
        """pyghmi's iohandler: output, or a dict saying the session ended (or just informing)."""
        if isinstance(data, dict):
            if "error" not in data:
                log.info("SOL: %s", data.get("info", data))
            elif not self._open:
                self._failed(SolFailure("activate", str(data["error"])))
            elif not self._done:
                self._done = True
                self._on_ended(str(data["error"]))
            return
        if not self._done:
            self._on_output(data.encode() if isinstance(data, str) else bytes(data))
