"""How a BMC's failures read: failed logins, completion codes and silences.

Each message names the BMC (`address:port`) and says what to check or do next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents.drivers import pyghmi_shim as shim
from agents.drivers.base import (
    AuthFailed,
    DeviceTimeout,
    DriverError,
    NoSession,
    Refused,
    Unreachable,
    Unsupported,
)

if TYPE_CHECKING:
    from agents.drivers.ipmi_reactor import Job, Request


def unreachable(endpoint: str, after: float | None = None) -> Unreachable:
    within = f" within {after:g} s" if after is not None else ""
    return Unreachable(f"BMC {endpoint} did not answer{within} (is it powered and reachable?)")


def login_slow(endpoint: str, timeout: float) -> NoSession:
    return NoSession(f"BMC {endpoint} answered, but its login did not finish within {timeout:g} s")


def login_error(endpoint: str, suite: int, error: str) -> DriverError:
    """A failed login, in words a human can act on."""
    if error == "timeout":
        return unreachable(endpoint)
    if error.startswith(shim.SUITE_REFUSED):
        detail = error.removeprefix(shim.SUITE_REFUSED).lstrip(": ")
        return AuthFailed(
            f"BMC {endpoint} refused cipher {detail}; set the path's cipher suite to one the "
            "BMC offers, or to 0 to let the client negotiate"
        )
    if error.startswith(shim.UNPARSABLE):
        detail = error.removeprefix(shim.UNPARSABLE).lstrip(": ")
        return NoSession(f"BMC {endpoint} sent a login reply pyghmi cannot handle ({detail})")
    if "privelege" in error:  # sic, pyghmi's spelling
        return AuthFailed(
            f"BMC {endpoint} accepted the user but not at the privilege the path asks for "
            f"({error}); lower the path's privilege option or raise the user's level on the BMC"
        )
    if any(sign in error for sign in ("password", "Unauthorized", "RAKP", "role")):
        return AuthFailed(f"BMC {endpoint} rejected the user or password ({error})")
    if "Insufficient resources" in error:
        return NoSession(f"BMC {endpoint} has no free session slot; try again later ({error})")
    return NoSession(f"BMC {endpoint} refused the session ({error})")


# Completion codes (IPMI 2.0 table 5-2).
_COMPLETION = {
    0xC0: "node busy",
    0xC1: "command not supported",
    0xC2: "command not supported on this LUN",
    0xC3: "timed out while processing the command",
    0xC4: "out of space",
    0xC5: "reservation cancelled or invalid",
    0xC6: "request data truncated",
    0xC7: "request data length invalid",
    0xC8: "request data field length limit exceeded",
    0xC9: "parameter out of range",
    0xCA: "cannot return the number of requested data bytes",
    0xCB: "requested sensor, data or record not present",
    0xCC: "invalid data field in request",
    0xCD: "command illegal for this sensor or record type",
    0xCE: "command response could not be provided",
    0xCF: "cannot execute a duplicated request",
    0xD0: "SDR repository in update mode",
    0xD1: "device in firmware update mode",
    0xD2: "BMC initialization in progress",
    0xD3: "destination unavailable",
    0xD4: "insufficient privilege level",
    0xD5: "cannot run in the present state",
    0xD6: "command sub-function disabled or unavailable",
    0xFF: "unspecified error",
}


def completion_error(endpoint: str, request: Request, code: int) -> DriverError:
    """A non-zero completion code, with its meaning from the spec."""
    meaning = f"{_COMPLETION.get(code, 'unknown completion code')} (0x{code:02X})"
    if code in (0xC1, 0xD6):
        return Unsupported(f"BMC {endpoint} does not support {request.name}: {meaning}")
    if code == 0xCC and request.invalid_means_unsupported:
        return Unsupported(
            f"BMC {endpoint} refused {request.name}: {meaning}; it does not offer this action"
        )
    if code == 0xD4:
        return AuthFailed(
            f"BMC {endpoint} refused {request.name}: {meaning}; it needs a session at operator "
            "or administrator privilege (the path's privilege option and the user's level)"
        )
    return Refused(f"BMC {endpoint} refused {request.name}: {meaning}")


def no_answer(endpoint: str, request: Request, job: Job, detail: str) -> DriverError:
    """A request left without reply; says whether the action may have run."""
    if not request.retry:
        return DeviceTimeout(
            f"BMC {endpoint} did not answer {request.name} ({detail}): it may or may not have "
            "run; check the power status before trying again"
        )
    if job.unsafe_sent:
        return DeviceTimeout(
            f"BMC {endpoint} accepted the action but did not answer {request.name} after it "
            f"({detail}); check the power status"
        )
    return DeviceTimeout(f"BMC {endpoint} stopped answering {request.name} ({detail})")
