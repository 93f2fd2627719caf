"""The one thread that owns every pyghmi object: sessions, logins, deadlines, results.

asyncio callers `submit()` jobs; the thread pumps pyghmi's event loop, runs each BMC's jobs one
at a time on its warm session (pyghmi allows one request in flight per session), and hands
results back to each caller's loop in batches. pyghmi's callbacks only queue an event; the
loop below handles it, so nothing runs re-entrantly inside pyghmi. The words of its errors are
in `ipmi_errors.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from agents.drivers import pyghmi_decoders
from agents.drivers import pyghmi_shim as shim
from agents.drivers.base import DriverError, Refused
from agents.drivers.ipmi_errors import (
    completion_error,
    login_error,
    login_slow,
    no_answer,
    unreachable,
)
from agents.protocol import PowerState

log = logging.getLogger(__name__)

# address, port, username, password, cipher suite, privilege level (IPMI's number)
Key = tuple[str, int, str, str, int, int]

_SWEEP_EVERY = 1.0  # s between looks for idle or broken sessions
_BLOCKED_POLL = 0.05  # s between looks at a session busy with pyghmi's keep-alive
_TALK_BUDGET = 60_000  # requests of one conversation (a whole SDR of 4,096 records, in parts)


@dataclass(frozen=True)
class Request:
    """One IPMI request; `retry=False` means sent exactly once, never retransmitted."""

    netfn: int
    command: int
    data: bytes
    retry: bool
    name: str
    lun: int = 0  # the BMC's logical unit (sensors may sit behind LUNs 1-3)
    invalid_means_unsupported: bool = False  # 0xCC: the data names an action the BMC lacks
    proof: bool = False  # only proves a warm session still works; a fresh login just did
    # Reads the reply and may end the plan there with an error, before the next request goes.
    guard: Callable[[str, bytes], DriverError | None] | None = None
    # Completion codes a conversation reads itself (e.g. 0xCA: ask for fewer bytes); any other
    # non-zero code ends the job with its error.
    accept: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Answer:
    """A reply as a conversation sees it: the completion code (0 or one it accepts), the data."""

    code: int
    data: bytes


# Yields each request, is sent its `Answer`, returns the result; may raise a DriverError.
Talk = Generator[Request, Answer, Any]


@dataclass(frozen=True)
class Plan:
    """The requests of one action, in order, and how to read the result from their replies."""

    requests: tuple[Request, ...]
    result: Callable[[list[bytes]], PowerState]


@dataclass(frozen=True)
class Conversation:
    """Requests chosen one by one from the answers so far (the SDR, the event log, FRU data):
    `start` makes the generator afresh, so a job repeated on a new session starts over."""

    start: Callable[[], Talk]


@dataclass(eq=False)
class Pool:
    """One driver's sessions and settings (see `IpmiDriver` for what the settings mean)."""

    max_logins: int
    idle_timeout: float
    request_timeout: float
    login_timeout: float
    silence_timeout: float
    bmcs: dict[Key, _Bmc] = field(default_factory=dict)
    login_queue: deque[_Bmc] = field(default_factory=deque)
    logins_in_flight: int = 0
    logins: int = 0  # started so far
    closed: bool = False


@dataclass(eq=False)
class Job:
    """One caller's action on one BMC, from submit to result."""

    pool: Pool
    key: Key
    endpoint: str
    plan: Plan | Conversation
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Any]
    cancelled: bool = False  # set by the caller's loop; a job not yet started is skipped
    step: int = 0
    replies: list[bytes] = field(default_factory=list)
    warm: bool = False  # started on a session opened for an earlier job
    retried: bool = False
    unsafe_sent: bool = False  # a request that must not be repeated has gone out
    talk: Talk | None = None  # a conversation's generator, once started
    request: Request | None = None  # what was sent last

    def settle(self, result: Any = None, error: DriverError | None = None) -> None:
        """Hand the outcome to the caller's loop (reactor thread only)."""
        handoff = _handoffs.get(self.loop)
        if handoff is None:
            handoff = _handoffs[self.loop] = _Handoff(self.loop)
        handoff.put((self.future, result, error))


Outcome = tuple[asyncio.Future[Any], Any, DriverError | None]


class _Handoff:
    """Outcomes bound for one asyncio loop, handed over in batches.

    One `call_soon_threadsafe` (a write to the loop's wake-up pipe, then a thread switch) per
    batch instead of per job: a cold pass over 1,000 BMCs settles hundreds of jobs per turn.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []

    def put(self, outcome: Outcome) -> None:
        with self._lock:
            self._outcomes.append(outcome)
            if len(self._outcomes) > 1:
                return  # a drain is scheduled and has not run yet
        with contextlib.suppress(RuntimeError):  # the caller's loop closed: nobody waits
            self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            outcomes, self._outcomes = self._outcomes, []
        for future, result, error in outcomes:
            if future.done():
                continue
            if error is not None:
                future.set_exception(error)
            elif result is not None:
                future.set_result(result)


_handoffs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Handoff] = (
    weakref.WeakKeyDictionary()
)


@dataclass(frozen=True)
class _Close:
    pool: Pool
    done: Callable[[], object]


class Ticker(Protocol):
    """Work of the reactor thread besides power jobs (the SOL consoles), looked at every turn."""

    def tick(self, now: float) -> float | None:
        """Do what is due; return when (time.monotonic()) the next turn is wanted, if ever."""
        ...


@dataclass(eq=False)
class _Bmc:
    """A BMC as one pool knows it: its session (if any) and its queue of jobs."""

    pool: Pool
    key: Key
    endpoint: str
    link: shim.Link | None = None
    jobs: deque[Job] = field(default_factory=deque)
    job: Job | None = None
    logging_in: bool = False
    queued_for_login: bool = False
    fresh: bool = False  # logged in, no job has run on the session yet
    generation: int = 0  # of the current login; events of older ones are stale
    token: int = 0  # of what is awaited now (a login or a reply); older events are stale
    last_used: float = 0.0
    login_deadline: float = 0.0  # monotonic


_reactor: Reactor | None = None
_reactor_lock = threading.Lock()


def reactor() -> Reactor:
    """The process's reactor thread, started (and pyghmi patched) on first use; it never ends.

    One per process because pyghmi's state is: a second thread pumping it would run other
    threads' callbacks and could deadlock. Drivers come and go as pools on it.
    """
    global _reactor
    with _reactor_lock:
        if _reactor is None:
            shim.apply()
            pyghmi_decoders.check()
            _reactor = Reactor()
            _reactor.start()
        return _reactor


class Reactor(threading.Thread):
    def __init__(self) -> None:
        super().__init__(name="ipmi-reactor", daemon=True)
        self._inbox: deque[Job | _Close | Callable[[], object]] = deque()
        self._events: deque[Callable[[], None]] = deque()
        self._pools: list[Pool] = []
        self._timers: list[tuple[float, int, _Bmc, int]] = []
        self._timer_order = itertools.count()
        self._blocked: set[_Bmc] = set()
        self._next_sweep = 0.0
        self._tickers: list[Ticker] = []
        self._tick_at: float | None = None

    def submit(self, job: Job) -> None:
        """Queue a job (any thread)."""
        self._inbox.append(job)
        shim.wake()

    def close_pool(self, pool: Pool, done: Callable[[], object]) -> None:
        """Fail the pool's pending jobs and close its sessions, then call `done` (any thread)."""
        self._inbox.append(_Close(pool, done))
        shim.wake()

    def call(self, work: Callable[[], object]) -> None:
        """Run `work` on the reactor thread at its next turn, in order of calls (any thread)."""
        self._inbox.append(work)
        shim.wake()

    def add_ticker(self, ticker: Ticker) -> None:
        """Call `ticker.tick` every turn from now on (any thread)."""
        self.call(lambda: self._tickers.append(ticker))

    def run(self) -> None:
        while True:
            try:
                self._turn()
            except Exception:  # a bug here must not silently stop IPMI for the whole process
                log.exception("the IPMI reactor failed a turn; going on")

    def _turn(self) -> None:
        shim.pump(self._sleep())
        self._take_inbox()
        self._handle_events()
        self._fire_timers()
        self._tick()
        for bmc in list(self._blocked):
            self._advance(bmc)
        self._start_logins()
        if time.monotonic() >= self._next_sweep:
            self._sweep()

    def _sleep(self) -> float:
        if self._events or self._inbox:
            return 0.0
        wake_at = self._next_sweep
        if self._timers:
            wake_at = min(wake_at, self._timers[0][0])
        if self._tick_at is not None:
            wake_at = min(wake_at, self._tick_at)
        sleep = wake_at - time.monotonic()
        return min(sleep, _BLOCKED_POLL) if self._blocked else sleep

    def _take_inbox(self) -> None:
        while self._inbox:
            item = self._inbox.popleft()
            if isinstance(item, _Close):
                self._close(item)
                continue
            if not isinstance(item, Job):
                item()
                continue
            pool = item.pool
            if pool.closed:
                item.settle(error=DriverError("the IPMI driver is closed"))
                continue
            if pool not in self._pools:
                self._pools.append(pool)
            bmc = pool.bmcs.get(item.key)
            if bmc is None:
                bmc = pool.bmcs[item.key] = _Bmc(pool, item.key, item.endpoint)
            bmc.jobs.append(item)
            self._advance(bmc)

    def _tick(self) -> None:
        now = time.monotonic()
        wanted = [at for ticker in self._tickers if (at := ticker.tick(now)) is not None]
        self._tick_at = min(wanted, default=None)

    def _handle_events(self) -> None:
        while self._events:
            self._events.popleft()()

    def _advance(self, bmc: _Bmc) -> None:
        """Start the BMC's next job if it is idle: on its session, or after a login."""
        self._blocked.discard(bmc)
        if bmc.job is not None or bmc.logging_in or not _has_live_jobs(bmc):
            return
        if bmc.link is not None and not bmc.link.usable:
            self._drop_link(bmc)
        if bmc.link is None:
            if not bmc.queued_for_login:
                bmc.queued_for_login = True
                bmc.pool.login_queue.append(bmc)
            return
        if bmc.link.busy:  # pyghmi's keep-alive is out; a second request would block us
            self._blocked.add(bmc)
            return
        job = bmc.job = bmc.jobs.popleft()
        job.warm = not bmc.fresh
        bmc.fresh = False
        if isinstance(job.plan, Conversation):
            job.talk = job.plan.start()
            self._talk(bmc, job, None)
            return
        self._send(bmc, job)

    def _send(self, bmc: _Bmc, job: Job) -> None:
        assert bmc.link is not None
        if isinstance(job.plan, Plan):
            while job.plan.requests[job.step].proof and not job.warm:
                job.step += 1
            job.request = job.plan.requests[job.step]
        request = job.request
        assert request is not None
        token = self._await(bmc, bmc.pool.request_timeout)
        job.unsafe_sent |= not request.retry
        try:
            bmc.link.send(
                request.netfn,
                request.command,
                request.data,
                retry=request.retry,
                lun=request.lun,
                on_reply=lambda reply: self._events.append(
                    partial(self._on_reply, bmc, token, reply)
                ),
            )
        except Exception as exc:  # pyghmi raises when the session died under us
            self._request_failed(bmc, f"pyghmi could not send it: {exc}")

    def _on_reply(self, bmc: _Bmc, token: int, reply: shim.Reply) -> None:
        job = bmc.job
        if token != bmc.token or job is None:
            return
        bmc.token += 1
        bmc.last_used = time.monotonic()
        request = job.request
        assert request is not None
        if reply.error is not None:
            detail = "no reply after retries" if reply.error == "timeout" else reply.error
            self._request_failed(bmc, detail)
            return
        if reply.code and reply.code not in request.accept:
            self._finish(bmc, error=completion_error(bmc.endpoint, request, reply.code))
            return
        if job.talk is not None:
            self._talk(bmc, job, Answer(reply.code, reply.data))
            return
        assert isinstance(job.plan, Plan)
        job.replies.append(reply.data)
        if request.guard is not None and (stop := request.guard(bmc.endpoint, reply.data)):
            self._finish(bmc, error=stop)
            return
        job.step += 1
        if job.step < len(job.plan.requests):
            self._send(bmc, job)
            return
        try:
            result = job.plan.result(job.replies)
        except IndexError:
            short = Refused(f"BMC {bmc.endpoint} sent a short {request.name} reply")
            self._finish(bmc, error=short)
            return
        self._finish(bmc, result=result)

    def _talk(self, bmc: _Bmc, job: Job, answer: Answer | None) -> None:
        """Hand the conversation its answer (None to start it); send what it asks next.

        A conversation whose caller gave up (a timeout, a cancel) sends nothing more: a clear
        that timed out must not run later unseen. One that asks without end is ended.
        """
        assert job.talk is not None
        if job.cancelled or job.step >= _TALK_BUDGET:
            job.talk.close()
            said = "cancelled" if job.cancelled else f"more than {_TALK_BUDGET} requests"
            self._finish(bmc, error=Refused(f"BMC {bmc.endpoint}: the read ended ({said})"))
            return
        job.step += 1
        try:
            job.request = next(job.talk) if answer is None else job.talk.send(answer)
        except StopIteration as done:
            self._finish(bmc, result=done.value)
            return
        except DriverError as exc:
            self._finish(bmc, error=exc)
            return
        except Exception as exc:  # pyghmi's decoders choking on what a BMC sent
            log.warning("BMC %s: could not read its answer", bmc.endpoint, exc_info=True)
            said = job.request.name if job.request is not None else "its first reply"
            self._finish(bmc, error=Refused(f"BMC {bmc.endpoint}: cannot read {said}: {exc}"))
            return
        self._send(bmc, job)

    def _finish(self, bmc: _Bmc, result: Any = None, error: DriverError | None = None) -> None:
        job = bmc.job
        assert job is not None
        bmc.job = None
        job.settle(result, error)
        self._advance(bmc)

    def _request_failed(self, bmc: _Bmc, detail: str) -> None:
        """No usable reply: drop the session; repeat the job once on a new one if that is safe."""
        job = bmc.job
        assert job is not None
        request = job.request
        assert request is not None
        bmc.token += 1
        self._drop_link(bmc)
        bmc.job = None
        if job.talk is not None:
            job.talk.close()
            job.talk = None
        if job.warm and not job.unsafe_sent and not job.retried and not job.cancelled:
            job.retried = True  # the warm session may just be stale (e.g. the BMC restarted)
            job.step = 0
            job.replies.clear()
            bmc.jobs.appendleft(job)
        else:
            job.settle(error=no_answer(bmc.endpoint, request, job, detail))
        self._advance(bmc)

    def _start_logins(self) -> None:
        for pool in self._pools:
            while pool.login_queue and pool.logins_in_flight < pool.max_logins:
                bmc = pool.login_queue.popleft()
                bmc.queued_for_login = False
                if bmc.link is None and not bmc.logging_in and _has_live_jobs(bmc):
                    self._log_in(bmc)

    def _log_in(self, bmc: _Bmc) -> None:
        address, port, username, password, suite, privilege = bmc.key
        bmc.generation += 1
        generation = bmc.generation
        bmc.logging_in = True
        bmc.pool.logins_in_flight += 1
        bmc.pool.logins += 1
        pool = bmc.pool
        bmc.login_deadline = time.monotonic() + pool.login_timeout
        self._await(bmc, min(pool.silence_timeout, pool.login_timeout))
        try:
            bmc.link = shim.Link(
                address,
                port,
                username,
                password,
                suite,
                on_logon=lambda error: self._events.append(
                    partial(self._on_logon, bmc, generation, error)
                ),
                privilege=privilege,
            )
        except Exception as exc:  # e.g. pyghmi refusing a user name longer than 16 bytes
            self._login_ended(bmc)
            self._fail_queued(bmc, Refused(f"BMC {bmc.endpoint}: cannot open a session: {exc}"))

    def _on_logon(self, bmc: _Bmc, generation: int, error: str | None) -> None:
        if generation != bmc.generation or not bmc.logging_in:
            return
        self._login_ended(bmc)
        if error is not None:
            self._drop_link(bmc)
            self._fail_queued(bmc, login_error(bmc.endpoint, bmc.key[4], error))
            return
        bmc.fresh = True
        bmc.last_used = time.monotonic()
        self._advance(bmc)

    def _login_ended(self, bmc: _Bmc) -> None:
        bmc.logging_in = False
        bmc.token += 1
        bmc.pool.logins_in_flight -= 1

    def _await(self, bmc: _Bmc, timeout: float) -> int:
        """Start waiting for the BMC's next event; returns the token that event must carry."""
        bmc.token += 1
        heapq.heappush(
            self._timers, (time.monotonic() + timeout, next(self._timer_order), bmc, bmc.token)
        )
        return bmc.token

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, bmc, token = heapq.heappop(self._timers)
            if token != bmc.token:
                continue
            pool = bmc.pool
            if bmc.logging_in:
                heard = bmc.link is not None and bmc.link.heard
                if heard and now < bmc.login_deadline:  # slow, not silent: its full patience
                    self._await(bmc, bmc.login_deadline - now)
                    continue
                bmc.generation += 1  # the login's own callback, if it ever comes, is stale
                self._login_ended(bmc)
                self._drop_link(bmc)
                self._fail_queued(
                    bmc,
                    login_slow(bmc.endpoint, pool.login_timeout)
                    if heard
                    else unreachable(bmc.endpoint, pool.silence_timeout),
                )
            elif bmc.job is not None:
                timeout = bmc.pool.request_timeout
                self._request_failed(bmc, f"no reply within {timeout:g} s")

    def _fail_queued(self, bmc: _Bmc, error: DriverError) -> None:
        while bmc.jobs:
            bmc.jobs.popleft().settle(error=error)

    def _drop_link(self, bmc: _Bmc) -> None:
        self._blocked.discard(bmc)
        if bmc.link is not None:
            bmc.link.close()
            bmc.link = None

    def _sweep(self) -> None:
        """Close sessions idle too long or broken (e.g. a failed keep-alive); forget idle BMCs."""
        now = time.monotonic()
        self._next_sweep = now + _SWEEP_EVERY
        for pool in self._pools:
            for key, bmc in list(pool.bmcs.items()):
                if bmc.job is not None or bmc.logging_in or _has_live_jobs(bmc):
                    continue
                link = bmc.link
                if link is None or not link.usable or now - bmc.last_used > pool.idle_timeout:
                    self._drop_link(bmc)
                    del pool.bmcs[key]

    def _close(self, close: _Close) -> None:
        pool = close.pool
        pool.closed = True
        closed = DriverError("the IPMI driver was closed before the BMC answered")
        for bmc in pool.bmcs.values():
            bmc.generation += 1
            bmc.token += 1
            if bmc.job is not None:
                bmc.job.settle(error=closed)
                bmc.job = None
            self._fail_queued(bmc, closed)
            self._drop_link(bmc)
        pool.bmcs.clear()
        pool.login_queue.clear()
        if pool in self._pools:
            self._pools.remove(pool)
        close.done()


def _has_live_jobs(bmc: _Bmc) -> bool:
    """Forget jobs whose caller gave up; say whether any are left."""
    if any(job.cancelled for job in bmc.jobs):
        bmc.jobs = deque(job for job in bmc.jobs if not job.cancelled)
    return bool(bmc.jobs)
