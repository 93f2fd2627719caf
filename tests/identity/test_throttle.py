"""The login throttle's rules, on a clock the test moves (docs/security.md, Logins and guessing)."""

from __future__ import annotations

import asyncio

import pytest

from app.errors import TooManyAttempts
from app.identity.throttle import Bucket, History, LoginThrottle, Reservation, Rules, source_key
from tests.identity.conftest import ManualClock

A, B = "198.51.100.1", "198.51.100.2"


def _throttle(rules: Rules | None = None) -> tuple[LoginThrottle, ManualClock]:
    clock = ManualClock()
    return LoginThrottle(rules, clock), clock


def _wait(throttle: LoginThrottle, username: str, source: str) -> int:
    """The Retry-After of a refused guess (0 when the guess is allowed, and then failed)."""
    try:
        throttle.take(username, source).failed()
    except TooManyAttempts as refused:
        return refused.retry_after
    return 0


def test_back_off_doubles_to_fifteen_minutes_and_a_success_resets_it() -> None:
    throttle, clock = _throttle()
    assert [_wait(throttle, "admin", A) for _ in range(5)] == [0] * 5  # free
    waits = []
    for _ in range(12):
        waits.append(_wait(throttle, "admin", A))
        assert _wait(throttle, "admin", A) == waits[-1]  # refusals count for nothing
        clock.advance(waits[-1])
        assert _wait(throttle, "admin", A) == 0  # one more guess, which fails
    assert waits == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]
    clock.advance(900)
    throttle.take("admin", A).succeeded()
    assert [_wait(throttle, "admin", A) for _ in range(6)] == [0] * 5 + [1]


def test_concurrent_guesses_are_reserved_before_any_is_checked() -> None:
    throttle, _ = _throttle()
    granted: list[Reservation] = []
    refused = 0
    for _ in range(40):  # none has failed yet: all are in flight at once
        try:
            granted.append(throttle.take("admin", A))
        except TooManyAttempts:
            refused += 1
    assert (len(granted), refused) == (5, 35)
    for reservation in granted:
        reservation.failed()
    assert _wait(throttle, "admin", A) == 1


def test_one_attackers_failures_never_slow_the_user_elsewhere() -> None:
    """The attacker at A guesses as fast as the throttle lets it, for a day; the admin at B,
    an address the admin never used, is never refused."""
    throttle, clock = _throttle()
    for _ in range(50):
        wait = _wait(throttle, "admin", A)
        if wait:
            clock.advance(wait)
            _wait(throttle, "admin", A)
    assert clock.now - 1_000 > 3600  # the 50 guesses took the attacker hours
    throttle.take("admin", B).succeeded()
    clock.advance(1)
    for _ in range(3):  # and through the first, worst minutes of an attack too
        _wait(throttle, "admin", A)
    throttle.take("admin", B).succeeded()


def test_many_sources_slow_a_user_but_not_at_a_familiar_address() -> None:
    throttle, clock = _throttle()
    throttle.take("admin", B).succeeded()  # the admin's own address
    bots = [f"192.0.2.{n}" for n in range(1, 40)]
    waits = [_wait(throttle, "admin", bot) for bot in bots]
    assert waits[:30] == [0] * 30
    assert set(waits[30:]) == {60}  # the user's bucket: one more guess a minute
    clock.advance(60)
    assert _wait(throttle, "admin", bots[-1]) == 0
    assert _wait(throttle, "admin", bots[-2]) == 60
    throttle.take("admin", B).succeeded()  # never slowed at home
    assert _wait(throttle, "admin", "203.0.113.7") == 60  # elsewhere, slowed while it lasts
    clock.advance(30 * 60)
    throttle.take("admin", "203.0.113.7").succeeded()


def test_one_source_spraying_many_users_is_slowed() -> None:
    throttle, clock = _throttle()
    waits = [_wait(throttle, f"user{n}", A) for n in range(35)]
    assert waits[:30] == [0] * 30
    assert set(waits[30:]) == {30}
    throttle.take("someone", B).release()  # another address is not concerned
    clock.advance(30)
    assert _wait(throttle, "user99", A) == 0


def test_a_success_gives_back_what_it_took() -> None:
    rules = Rules(per_source=Bucket(burst=2, every=60), per_user=Bucket(burst=2, every=60))
    throttle, _ = _throttle(rules)
    for _ in range(10):
        throttle.take("admin", A).succeeded()
        throttle.take("bob", A).release()
    assert _wait(throttle, "carol", A) == 0


def test_what_the_audit_remembers_is_learnt_once() -> None:
    throttle, _ = _throttle()
    throttle.learn("admin", A, History(failures=7, last_failure_age=1.0, last_success_age=None))
    assert _wait(throttle, "admin", A) == 3  # 4 s after the 7th failure, which was 1 s ago
    throttle.learn("admin", A, History(failures=0, last_failure_age=None, last_success_age=None))
    assert _wait(throttle, "admin", A) == 3  # a pair known here keeps its own counts
    familiar = History(failures=0, last_failure_age=None, last_success_age=86400.0)
    throttle.learn("admin", B, familiar)
    for bot in range(40):
        _wait(throttle, "admin", f"192.0.2.{bot}")
    throttle.take("admin", B).succeeded()  # known from the audit: not slowed


def test_memory_is_bounded() -> None:
    throttle, _ = _throttle(Rules(max_entries=100))
    for n in range(1000):
        _wait(throttle, f"user{n}", f"192.0.2.{n % 250}")
    assert len(throttle._pairs) <= 100
    assert len(throttle._sources) <= 100
    assert len(throttle._users) <= 100


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("testclient", "testclient"),
        (None, "unknown"),
    ],
)
def test_an_ipv6_client_is_one_source_per_64(address: str | None, key: str) -> None:
    assert source_key(address) == key


def test_a_guess_decided_by_those_in_flight_waits_for_them() -> None:
    """A script's parallel logins all get in; guesses wait, then meet the back-off."""

    async def scenario() -> None:
        throttle, _ = _throttle()
        first = [await throttle.reserve("admin", A) for _ in range(5)]
        waiting = [asyncio.create_task(throttle.reserve("admin", A)) for _ in range(10)]
        await asyncio.sleep(0.01)
        assert not any(task.done() for task in waiting)
        for reservation in first:  # right passwords: five more go on
            reservation.succeeded()
        await asyncio.sleep(0.01)
        second = [await task for task in waiting if task.done()]
        assert len(second) == 5
        for reservation in second:  # wrong passwords: the last five are refused
            reservation.failed()
        for task in waiting[5:]:
            with pytest.raises(TooManyAttempts, match="try again in 1 second"):
                await task

    asyncio.run(scenario())


def test_waiting_is_bounded() -> None:
    async def scenario() -> None:
        throttle, _ = _throttle(Rules(max_waiting=2, patience=0.2))
        held = [await throttle.reserve("admin", A) for _ in range(5)]
        waiting = [asyncio.create_task(throttle.reserve("admin", A)) for _ in range(3)]
        results = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(result, TooManyAttempts) for result in results)
        for reservation in held:
            reservation.release()

    asyncio.run(scenario())


def test_an_ipv6_attacker_gains_nothing_from_the_addresses_of_its_64() -> None:
    throttle, _ = _throttle()
    waits = [_wait(throttle, "admin", f"2001:db8:1:2::{n:x}") for n in range(1, 50)]
    assert waits[:5] == [0] * 5
    assert all(waits[5:])  # every address of the /64 meets the same back-off
    throttle.take("admin", "2001:db8:9::1").succeeded()  # the admin elsewhere is not slowed
