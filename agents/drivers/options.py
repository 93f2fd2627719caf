"""Whether a driver can use a path as written: checked when the central stores the path.

A path no driver could use (an option nobody reads, a dialect no driver speaks, a kind with no
driver) is refused then, with what to fix, rather than accepted and failing at its first
console or power action. Only the drivers' declarations are read: no I/O, nothing started.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from agents.drivers import console_server, pdu, ssh
from agents.drivers.base import OptionError
from agents.drivers.guests import GuestsDriver
from agents.drivers.ipmi import IpmiDriver
from agents.drivers.redfish import RedfishDriver
from agents.protocol import Dialect, PathKind

Validator = Callable[[Mapping[str, Any]], None]

# The options each kind of path takes, as its driver honours them.
OPTIONS: dict[str, tuple[str, ...]] = {
    PathKind.IPMI: IpmiDriver.OPTIONS,
    PathKind.REDFISH: RedfishDriver.OPTIONS,
    PathKind.CONSOLE_PORT: (),
    PathKind.PDU_OUTLET: (),
    # `sync_minutes` of a hypervisor's ssh path is the central's (its periodic guest sync).
    PathKind.SSH: (*ssh.OPTIONS, "sync_minutes"),
    # The domain's name at the last sync: xl starts a stopped guest from /etc/xen/<name>.cfg.
    PathKind.LIBVIRT: ("name",),
}

# The driver that drives a box through its ssh path, by the kind of path going through the box.
BOX_DRIVERS: dict[str, Validator] = {
    PathKind.CONSOLE_PORT: console_server.ConsoleServerDriver.validate,
    PathKind.PDU_OUTLET: pdu.PduDriver.validate,
    PathKind.LIBVIRT: GuestsDriver.validate_host,
}

_VALIDATORS: dict[str, Validator] = {
    PathKind.IPMI: IpmiDriver.validate,
    PathKind.REDFISH: RedfishDriver.validate,
}


def validate_path(kind: str, options: Mapping[str, Any], *, through: Collection[str] = ()) -> None:
    """Raise OptionError unless a driver can use a `kind` path with these `options`.

    `through`: the kinds of path that may go through the path's device (`console_port` for a
    console server). An `ssh` path is how the agent reaches such a box, so its dialect must
    be one the box's driver speaks; on a device nothing driven goes through, its dialect is
    not used, and any a driver speaks (or `shell`) is taken.
    """
    if kind not in OPTIONS:
        raise OptionError("kind", f"no driver uses {kind} paths; use one of {', '.join(OPTIONS)}")
    known = OPTIONS[kind]
    unknown = sorted(set(options) - set(known))
    if unknown:
        takes = f"they take {', '.join(known)}" if known else "they take none"
        raise OptionError(f"options.{unknown[0]}", f"is not an option of {kind} paths; {takes}")
    if kind == PathKind.SSH:
        _validate_ssh(options, through)
    elif kind in _VALIDATORS:
        _VALIDATORS[kind](options)


def _validate_ssh(options: Mapping[str, Any], through: Collection[str]) -> None:
    ssh.validate(options)
    if PathKind.LIBVIRT not in through and any(
        options.get(name) is not None for name in ("hypervisor", "uri", "sync_minutes")
    ):
        GuestsDriver.validate_host(options)  # not needed here, but no garbage is stored
    boxes = [BOX_DRIVERS[kind] for kind in through if kind in BOX_DRIVERS]
    for validate in boxes:
        validate(options)
    dialect = ssh.dialect(options)
    if boxes or dialect in (Dialect.SHELL, *console_server.DIALECTS, *pdu.DIALECTS):
        return
    raise OptionError(
        "options.dialect",
        f"no driver speaks dialect {dialect!r}; console servers and KVM switches take "
        f"{', '.join(console_server.DIALECTS)}, PDUs {', '.join(pdu.DIALECTS)}, other devices "
        f"{Dialect.SHELL} (docs/dialects.md)",
    )
