"""How many password guesses are allowed, from where, and how soon: the login throttle.

A guess is reserved *before* the password is checked, in one step with no `await` inside
(`take`), so concurrent guesses cannot all pass a check that each read before any failed.
Three rules (docs/security.md, "Logins and guessing"):

- per user and address: 5 failures free, then a wait that doubles after each failure
  (1 s, 2 s, 4 s … at most 15 minutes), one guess at a time; a success forgets them. A guess
  that would pass only if those being checked succeed waits for them (a script's parallel
  logins are let in; an attacker's are refused once the first five have failed);
- per address (an IPv6 /64 is one), over every user: a bucket of 30 failures refilled one
  per 30 s;
- per user, over every address: a bucket of 30 failures refilled one per minute.

The two buckets never apply to a user at an address they logged in from in the last 30 days
(as smart lockouts do): an attacker elsewhere slows down the account, never its owner at home.
Nothing is a hard lockout: the longest wait is the pair's, 15 minutes, at that address only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.errors import TooManyAttempts

Clock = Callable[[], float]


@dataclass(frozen=True)
class Bucket:
    """At most `burst` failures at once, then one more every `every` seconds."""

    burst: int
    every: float


@dataclass(frozen=True)
class Rules:
    free_failures: int = 5
    first_wait: float = 1.0
    longest_wait: float = 15 * 60.0
    forget_after: float = 12 * 3600.0  # a pair's failures, counted from the last one
    familiar_for: float = 30 * 86400.0  # an address a user logged in from stays theirs
    per_source: Bucket = Bucket(burst=30, every=30.0)
    per_user: Bucket = Bucket(burst=30, every=60.0)
    max_entries: int = 100_000  # per table; beyond it the oldest entries are forgotten
    patience: float = 10.0  # the longest a guess waits for those in flight
    max_waiting: int = 32  # guesses waiting on one pair at once; more are refused

    def wait_after(self, failures: int) -> float:
        """The pause before the next guess once `failures` (> free) went wrong in a row."""
        doublings = min(failures - self.free_failures, 32)
        return min(self.first_wait * float(2**doublings), self.longest_wait)


@dataclass
class _Pair:
    failures: int = 0
    last_failure: float = 0.0
    in_flight: int = 0
    familiar_until: float = -math.inf
    waiting: int = 0  # guesses waiting for those in flight
    settled: asyncio.Event | None = None  # set when a guess in flight is decided

    def settle(self) -> None:
        if self.settled is not None:
            self.settled.set()
            self.settled = None


class _Busy(TooManyAttempts):
    """Refused for now: the pair's guesses in flight decide whether this one may be checked."""

    def __init__(self, pair: _Pair, refusal: TooManyAttempts) -> None:
        super().__init__(str(refusal), refusal.retry_after)
        self.pair = pair
        self.refusal = refusal


@dataclass
class _Tokens:
    bucket: Bucket
    level: float
    updated: float

    def refill(self, now: float) -> None:
        self.level = min(self.bucket.burst, self.level + (now - self.updated) / self.bucket.every)
        self.updated = now

    def wait(self) -> float:
        return 0.0 if self.level >= 1 else (1 - self.level) * self.bucket.every

    @property
    def full(self) -> bool:
        return self.level >= self.bucket.burst


@dataclass(frozen=True)
class History:
    """What the audit log knows of a user at an address, for a process that has not seen it."""

    failures: int  # in a row since the last success, within `forget_after`
    last_failure_age: float | None  # seconds ago
    last_success_age: float | None  # seconds ago


def source_key(source: str | None) -> str:
    """The address the rules count: an IPv6 client owns its whole /64, so that is one source
    (a new address in it for every guess would otherwise start every count afresh)."""
    if source is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return source
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


@dataclass
class Reservation:
    """One guess that may be checked; tell the throttle how it went (or `release` it)."""

    _throttle: LoginThrottle
    _pair: _Pair
    _tokens: list[_Tokens]
    _done: bool = field(default=False)

    def failed(self) -> None:
        if self._finish():
            self._pair.failures += 1
            self._pair.last_failure = self._throttle.clock()

    def succeeded(self) -> None:
        if self._finish():
            now = self._throttle.clock()
            self._pair.failures = 0
            self._pair.familiar_until = now + self._throttle.rules.familiar_for
            self._give_back()

    def release(self) -> None:
        """Nothing was learnt (an error before the password was checked): no guess counted."""
        if self._finish():
            self._give_back()

    def _finish(self) -> bool:
        if self._done:
            return False
        self._done = True
        self._pair.in_flight -= 1
        self._pair.settle()
        return True

    def _give_back(self) -> None:
        for tokens in self._tokens:
            tokens.level = min(tokens.bucket.burst, tokens.level + 1)


class LoginThrottle:
    """In the memory of one process; `learn` seeds a pair it has not seen from the audit log."""

    def __init__(self, rules: Rules | None = None, clock: Clock = time.monotonic) -> None:
        self.rules = rules or Rules()
        self.clock = clock
        self._pairs: dict[tuple[str, str], _Pair] = {}
        self._sources: dict[str, _Tokens] = {}
        self._users: dict[str, _Tokens] = {}
        self._since_sweep = 0

    def knows(self, username: str, source: str | None) -> bool:
        return (username, source_key(source)) in self._pairs

    def learn(self, username: str, source: str | None, history: History) -> None:
        """Seed a pair from the audit log; a pair already known here keeps its own counts."""
        key = (username, source_key(source))
        if key in self._pairs:
            return
        now = self.clock()
        pair = _Pair()
        if history.last_failure_age is not None and history.failures:
            pair.failures = history.failures
            pair.last_failure = now - history.last_failure_age
        if history.last_success_age is not None:
            pair.familiar_until = now - history.last_success_age + self.rules.familiar_for
        self._pairs[key] = pair
        self._bound()

    async def reserve(self, username: str, source: str | None) -> Reservation:
        """Take one guess for `username` from `source`, or refuse with how long to wait.

        A guess that only the outcome of those in flight can decide waits for them (at most
        `patience` seconds, `max_waiting` at once), then is decided like any other.
        """
        deadline = time.monotonic() + self.rules.patience
        while True:
            try:
                return self.take(username, source)
            except _Busy as busy:
                pair, left = busy.pair, deadline - time.monotonic()
                if left <= 0 or pair.waiting >= self.rules.max_waiting:
                    raise busy.refusal from None
                if pair.settled is None:
                    pair.settled = asyncio.Event()
                settled = pair.settled
                pair.waiting += 1
                try:
                    await asyncio.wait_for(settled.wait(), left)
                except TimeoutError:
                    raise busy.refusal from None
                finally:
                    pair.waiting -= 1

    def take(self, username: str, source: str | None) -> Reservation:
        """`reserve` without waiting: in one step, with no `await`, so that concurrent
        guesses cannot all pass a check that each read before any failed."""
        now = self.clock()
        key = (username, source_key(source))
        pair = self._pairs.get(key)
        if pair is None:
            pair = self._pairs[key] = _Pair()
            self._bound()
        if pair.failures and now - pair.last_failure > self.rules.forget_after:
            pair.failures = 0
        wait = self._pair_wait(pair, now)
        if wait > 0:
            refusal = _refusal(f"too many failed logins as {username!r} from this address", wait)
            if pair.in_flight:
                raise _Busy(pair, refusal)
            raise refusal
        taken: list[_Tokens] = []
        if pair.familiar_until <= now:
            by_source = self._tokens(self._sources, key[1], self.rules.per_source, now)
            by_user = self._tokens(self._users, username, self.rules.per_user, now)
            if by_source.wait() > 0:
                raise _refusal("too many failed logins from this address", by_source.wait())
            if by_user.wait() > 0:
                raise _refusal(
                    f"too many failed logins as {username!r} from addresses it has not logged "
                    "in from lately",
                    by_user.wait(),
                )
            by_source.level -= 1
            by_user.level -= 1
            taken = [by_source, by_user]
        pair.in_flight += 1
        self._since_sweep += 1
        if self._since_sweep >= 1000:
            self._sweep(now)
        return Reservation(self, pair, taken)

    def _pair_wait(self, pair: _Pair, now: float) -> float:
        if pair.failures + pair.in_flight < self.rules.free_failures:
            return 0.0
        if pair.in_flight:  # past the free guesses, one at a time
            return self.rules.first_wait
        return pair.last_failure + self.rules.wait_after(pair.failures) - now

    def _tokens(self, table: dict[str, _Tokens], key: str, bucket: Bucket, now: float) -> _Tokens:
        tokens = table.get(key)
        if tokens is None:
            tokens = table[key] = _Tokens(bucket, bucket.burst, now)
            self._bound()
        tokens.refill(now)
        return tokens

    def _sweep(self, now: float) -> None:
        """Forget what no longer changes an answer: idle pairs, full buckets."""
        self._since_sweep = 0
        rules = self.rules
        for key, pair in list(self._pairs.items()):
            stale = not pair.failures or now - pair.last_failure > rules.forget_after
            idle = not pair.in_flight and not pair.waiting
            if stale and idle and pair.familiar_until <= now:
                del self._pairs[key]
        for table in (self._sources, self._users):
            for name, tokens in list(table.items()):
                tokens.refill(now)
                if tokens.full:
                    del table[name]

    def _bound(self) -> None:
        """A flood of new names or addresses cannot grow memory without end: past the limit,
        what no longer matters goes, then the oldest entries."""
        tables: tuple[dict[Any, Any], ...] = (self._pairs, self._sources, self._users)
        if all(len(table) <= self.rules.max_entries for table in tables):
            return
        self._sweep(self.clock())
        for table in tables:
            while len(table) > self.rules.max_entries:
                del table[next(iter(table))]


def _refusal(what: str, wait: float) -> TooManyAttempts:
    seconds = max(1, math.ceil(wait))
    return TooManyAttempts(
        f"{what}; try again in {seconds} second{'s' if seconds > 1 else ''}", retry_after=seconds
    )
