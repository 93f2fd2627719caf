"""The BMC's protocol side without sockets: login, refusals, sessions, duplicates, commands."""

from __future__ import annotations

import asyncio
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sim import rmcp
from sim.fleet import start_fleet
from sim.ipmi import DUPLICATE_WINDOW, SESSION_TIMEOUT, Bmc
from sim.machine import BootDevice, BootOverride, Machine, Power, Timing
from sim.rmcp import Payload
from tests.sim.console import Console, free_ports
from tests.sim.test_machine import FakeClock

CHASSIS, APP = 0x00, 0x06


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def bmc(clock: FakeClock) -> Bmc:
    return Bmc(Machine(Timing(0.5, 1.0, 1.0), clock), {"admin": "password"}, clock=clock)


def sessionless(bmc: Bmc, command: int, data: bytes) -> tuple[int, bytes]:
    head = bytes([rmcp.BMC_ADDRESS, APP << 2])
    body = bytes([0x81, 0, command]) + data
    message = head + bytes([rmcp.checksum(head)]) + body + bytes([rmcp.checksum(body)])
    reply = bmc.receive(rmcp.sessionless_v15(message))
    assert reply is not None
    frame = rmcp.parse_frame(reply)
    return frame.payload[6], frame.payload[7:-1]


@pytest.mark.parametrize("suite", [3, 17])
def test_login_and_get_device_id(bmc: Bmc, suite: int) -> None:
    console = Console(bmc, suite=suite)
    console.login()
    code, data = console.command(APP, 0x01)
    assert code == 0
    assert data[4] == 0x02  # IPMI 2.0


def test_a_suite_not_offered_is_refused_not_substituted(bmc: Bmc) -> None:
    bmc.suites = [3]
    console = Console(bmc, suite=17)
    assert console.setup(Payload.OPEN_REQUEST, console.open_request())[1] == 0x11
    assert not bmc.sessions


def test_a_proposal_without_algorithms_gets_the_strongest_suite(bmc: Bmc) -> None:
    console = Console(bmc)
    request = bytearray(console.open_request())
    for offset in (11, 19, 27):  # payload length 0: "any algorithm"
        request[offset] = 0
    reply = console.setup(Payload.OPEN_REQUEST, bytes(request))
    assert (reply[1], reply[16], reply[24], reply[32]) == (0, 3, 4, 1)


def test_channel_auth_capabilities_outside_a_session(bmc: Bmc) -> None:
    assert sessionless(bmc, 0x38, b"\x8e\x04") == (0, bytes([1, 0x80, 0x04, 0x02, 0, 0, 0, 0]))
    assert sessionless(bmc, 0x38, b"\x0e\x04")[0] == 0
    assert sessionless(bmc, 0x38, b"\x8e")[0] == 0xC7


def test_cipher_suites_list_what_is_offered(bmc: Bmc) -> None:
    assert sessionless(bmc, 0x54, b"\x0e\x00\x80") == (
        0,
        bytes([1, 0xC0, 17, 3, 0x44, 0x81, 0xC0, 3, 1, 0x41, 0x81]),
    )
    bmc.suites = [3]
    assert sessionless(bmc, 0x54, b"\x0e\x00\x80") == (0, bytes([1, 0xC0, 3, 1, 0x41, 0x81]))
    assert sessionless(bmc, 0x54, b"\x0e\x00\x81") == (0, b"\x01")


def test_unknown_user_is_refused_in_rakp2(bmc: Bmc) -> None:
    console = Console(bmc, user="mallory")
    assert console.open_session() == 0
    assert console.rakp1() == 0x0D


def test_wrong_password_shows_in_rakp2_and_rakp3_is_refused(bmc: Bmc) -> None:
    console = Console(bmc, password="wrong")
    assert console.open_session() == 0
    assert console.rakp1() == -1
    assert console.rakp3() == 0x0F
    assert not bmc.sessions


def test_refuse_password_fault_fails_the_right_password(bmc: Bmc) -> None:
    bmc.faults.refuse_password = True
    console = Console(bmc)
    console.open_session()
    assert console.rakp1() == -1


def test_retransmitted_setup_messages_get_the_same_answers(bmc: Bmc) -> None:
    console = Console(bmc)
    request = rmcp.seal(Payload.OPEN_REQUEST, 0, 0, console.open_request(), None)
    assert bmc.receive(request) == bmc.receive(request)
    assert len(bmc.sessions) == 1
    console.open_session()
    rakp1 = rmcp.seal(Payload.RAKP1, 0, 0, console.rakp1_payload(), None)
    assert bmc.receive(rakp1) == bmc.receive(rakp1)


def test_setup_retransmitted_with_a_new_tag_is_answered_under_that_tag(bmc: Bmc) -> None:
    console = Console(bmc)  # ipmipower bumps the message tag on each retransmission
    assert console.open_session() == 0
    reopened = console.setup(Payload.OPEN_REQUEST, b"\x55" + console.open_request()[1:])
    assert reopened[0] == 0x55
    assert struct.unpack_from("<I", reopened, 8)[0] == console.bmc_id
    assert console.rakp1() == 0
    rakp3 = console.rakp3_payload()
    first = console.setup(Payload.RAKP3, rakp3)
    again = console.setup(Payload.RAKP3, b"\x77" + rakp3[1:])
    assert first[1] == 0
    assert again == b"\x77" + first[1:]
    assert len(bmc.sessions) == 1


def test_chassis_control_needs_operator_privilege(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login(privilege=None)
    assert console.command(CHASSIS, 0x02, b"\x01") == (0xD4, b"")
    assert console.command(APP, 0x3B, b"\x05") == (0x81, b"")
    assert console.command(APP, 0x3B, b"\x03") == (0, b"\x03")
    assert console.command(CHASSIS, 0x02, b"\x01") == (0, b"")


def test_retransmitted_chassis_control_runs_once(bmc: Bmc, clock: FakeClock) -> None:
    bmc.machine.press(Power.ON)
    console = Console(bmc)
    console.login()
    packet = console.packet(CHASSIS, 0x02, b"\x02")
    first = console.answer(bmc.receive(packet))
    clock.now += 0.7
    assert console.answer(bmc.receive(packet)) == first == (0, b"")
    again = console.packet(CHASSIS, 0x02, b"\x02", rq_seq=console.rq_seq)  # new session seq
    assert console.answer(bmc.receive(again)) == (0, b"")
    assert bmc.machine.counters["cycle"] == 1
    assert bmc.duplicates == 2
    clock.now += DUPLICATE_WINDOW  # long after (and back on): the same rqSeq is a new request
    late = console.packet(CHASSIS, 0x02, b"\x02", rq_seq=console.rq_seq)
    assert console.answer(bmc.receive(late)) == (0, b"")
    assert bmc.machine.counters["cycle"] == 2


def test_only_a_repeat_of_the_last_request_is_a_duplicate(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login()
    console.answer(bmc.receive(console.packet(CHASSIS, 0x02, b"\x01", rq_seq=9)))
    console.answer(bmc.receive(console.packet(CHASSIS, 0x02, b"\x00", rq_seq=9)))  # other data
    console.answer(bmc.receive(console.packet(CHASSIS, 0x01, rq_seq=10)))
    console.answer(bmc.receive(console.packet(CHASSIS, 0x02, b"\x00", rq_seq=9)))  # a new order
    assert (bmc.machine.counters["on"], bmc.machine.counters["off"]) == (1, 2)
    assert bmc.duplicates == 0


def test_idle_sessions_time_out(bmc: Bmc, clock: FakeClock) -> None:
    console = Console(bmc)
    console.login()
    clock.now += SESSION_TIMEOUT - 1
    assert console.command(CHASSIS, 0x01)[0] == 0
    clock.now += SESSION_TIMEOUT + 1
    assert bmc.receive(console.packet(CHASSIS, 0x01)) is None
    assert not bmc.sessions


def test_close_session_ends_it(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login()
    assert console.command(APP, 0x3C, struct.pack("<I", console.bmc_id)) == (0, b"")
    assert bmc.receive(console.packet(CHASSIS, 0x01)) is None


def test_drop_sessions_forgets_logins(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login()
    bmc.drop_sessions()
    assert bmc.receive(console.packet(CHASSIS, 0x01)) is None


def test_packets_far_outside_the_sequence_window_are_dropped(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login()
    console.sequence += 1000
    assert bmc.receive(console.packet(CHASSIS, 0x01)) is None


def test_tampered_packets_are_dropped(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login()
    packet = bytearray(console.packet(CHASSIS, 0x02, b"\x01"))
    packet[20] ^= 1
    assert bmc.receive(bytes(packet)) is None
    assert bmc.machine.counters["on"] == 0


def test_unknown_commands_answer_c1(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login()
    assert console.command(0x0A, 0x21) == (0xC1, b"")  # SDR repository allocation info


def test_boot_flags_round_trip_with_the_valid_bit(bmc: Bmc) -> None:
    console = Console(bmc)
    console.login()
    assert console.command(CHASSIS, 0x08, bytes([5, 0xC0, 0x18, 0, 0, 0])) == (0, b"")
    assert bmc.machine.boot == BootOverride(BootDevice.BIOS, persistent=True)
    assert console.command(CHASSIS, 0x09, bytes([5, 0, 0])) == (
        0,
        bytes([1, 5, 0xC0, 0x18, 0, 0, 0]),
    )
    assert console.command(CHASSIS, 0x08, bytes([5, 0x80, 0x28, 0, 0, 0]))[0] == 0xCC
    assert console.command(CHASSIS, 0x08, bytes([5, 0x80]))[0] == 0xC7
    assert console.command(CHASSIS, 0x09, bytes([7, 0, 0]))[0] == 0x80
    assert console.command(CHASSIS, 0x08, bytes([4, 0x01, 0x01])) == (0, b"")
    assert console.command(CHASSIS, 0x09, bytes([4, 0, 0])) == (0, bytes([1, 4, 0, 1]))


def test_mute_answers_nothing(bmc: Bmc) -> None:
    bmc.faults.mute = True
    assert (
        bmc.receive(rmcp.seal(Payload.OPEN_REQUEST, 0, 0, Console(bmc).open_request(), None))
        is None
    )


def test_presence_ping_gets_a_pong(bmc: Bmc) -> None:
    pong = bmc.receive(rmcp.RMCP_ASF + rmcp.ASF_IANA + bytes([0x80, 7, 0, 0]))
    assert pong is not None
    assert pong[8:10] == bytes([0x40, 7])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_datagrams_never_raise(data: bytes) -> None:
    bmc = Bmc(Machine(), {"admin": "password"})
    for prefix in (b"", rmcp.RMCP_IPMI, rmcp.RMCP_IPMI + b"\x06", rmcp.RMCP_IPMI + b"\x00"):
        bmc.receive(prefix + data)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=0), st.integers(min_value=0, max_value=255))
def test_corrupted_session_packets_never_raise(position: int, flip: int) -> None:
    bmc = Bmc(Machine(), {"admin": "password"})
    console = Console(bmc)
    console.login()
    for packet in (console.packet(CHASSIS, 0x01), console.packet(APP, 0x3B, b"\x04")):
        corrupted = bytearray(packet)
        corrupted[position % len(packet)] ^= flip
        bmc.receive(bytes(corrupted))
        bmc.receive(bytes(corrupted[: position % len(packet)]))


def test_start_fleet_serves_udp_in_process() -> None:
    async def scenario() -> bytes:
        base = free_ports(3)
        fleet = await start_fleet(3, base, password="secret", credentials={base: {"ann": "x"}})
        try:
            assert fleet.bmc(base).users == {"ann": "x"}
            assert fleet.bmc(base + 1).users == {"admin": "secret"}
            fleet.machine(base + 2).press(Power.ON)
            loop = asyncio.get_running_loop()
            received: asyncio.Future[bytes] = loop.create_future()

            class Probe(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str | object, int]) -> None:
                    received.set_result(data)

            transport, _ = await loop.create_datagram_endpoint(
                Probe, remote_addr=("127.0.0.1", base + 2)
            )
            transport.sendto(rmcp.RMCP_ASF + rmcp.ASF_IANA + bytes([0x80, 9, 0, 0]))
            try:
                return await asyncio.wait_for(received, 2)
            finally:
                transport.close()
        finally:
            assert fleet.saved_state()[base + 2]["power"] == "on"
            await fleet.close()

    assert asyncio.run(scenario())[8:10] == bytes([0x40, 9])
