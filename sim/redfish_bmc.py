"""The Redfish side of a simulated BMC, without sockets: one request in, one response out.

It serves the few resources a power and boot client reads (service root, sessions, one
system, its manager and chassis) and a health client reads (the chassis' Thermal and Power,
the SEL as a LogService of the system and of the manager) over the same `Machine` the IPMI
simulator drives, so both protocols act on the same kind of server. The HTTPS server around
it is `sim/redfish.py`.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from sim import fru, redfish_health
from sim.ipmi import Faults
from sim.machine import BootDevice, BootOverride, Control, Machine, Power
from sim.sensors import BY_NAME

ROOT = "/redfish/v1"
SYSTEM = f"{ROOT}/Systems/1"
RESET = f"{SYSTEM}/Actions/ComputerSystem.Reset"
MANAGER = f"{ROOT}/Managers/1"
CHASSIS = f"{ROOT}/Chassis/1"
SESSIONS = f"{ROOT}/SessionService/Sessions"
THERMAL = f"{CHASSIS}/Thermal"
POWER = f"{CHASSIS}/Power"
LOG_SERVICES = (f"{SYSTEM}/LogServices", f"{MANAGER}/LogServices")  # one SEL, seen from both
CLEAR_LOG = "Actions/LogService.ClearLog"
MAX_SESSIONS = 64  # the oldest goes first, as on BMCs with a fixed session table

RESETS = {
    "On": Control.ON,
    "ForceOff": Control.OFF,
    "GracefulShutdown": Control.SOFT,
    "ForceRestart": Control.RESET,
    "GracefulRestart": Control.RESET,  # the machine model has no OS to restart gracefully
    "PowerCycle": Control.CYCLE,
    "Nmi": Control.DIAG,
}

# Redfish boot targets and the machine's override devices; "Usb" is the primary removable
# medium, as IPMI's selector 0xF is, so both simulators record a USB boot the same way.
TARGETS = {
    "None": BootDevice.NONE,
    "Pxe": BootDevice.PXE,
    "Hdd": BootDevice.DISK,
    "Cd": BootDevice.CDROM,
    "Usb": BootDevice.FLOPPY,
    "BiosSetup": BootDevice.BIOS,
}
_TARGET_NAMES = {device: name for name, device in TARGETS.items()}
ENABLED = ("Disabled", "Once", "Continuous")
MODES = ("Legacy", "UEFI")


@dataclass
class Response:
    status: int
    body: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)


def error(status: int, message_id: str, message: str) -> Response:
    """A Redfish error body (DSP0266 §9.6): what clients show, e.g. pyghmi's RedfishError."""
    info = {
        "@odata.type": "#Message.v1_1_1.Message",
        "MessageId": f"Base.1.8.{message_id}",
        "Message": message,
        "Severity": "Warning",
    }
    body = {
        "error": {"code": info["MessageId"], "message": message, "@Message.ExtendedInfo": [info]}
    }
    return Response(status, body)


class RedfishBmc:
    """One BMC's Redfish service; `resets` lists the ResetType values it allows."""

    def __init__(self, machine: Machine, users: dict[str, str]) -> None:
        self.machine = machine
        self.users = dict(users)
        self.faults = Faults()
        self.resets = list(RESETS)
        self.sessions: OrderedDict[str, str] = OrderedDict()  # token -> session id
        self.logins = 0  # sessions created so far: a client reusing its token adds none
        self._next_session = 1

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Response:
        """Answer one request; `headers` have lower-case names."""
        path = target.split("?", 1)[0].rstrip("/") or "/"
        if path == "/redfish":
            return Response(200, {"v1": f"{ROOT}/"})
        if path == ROOT:
            return _only(method, "GET") or Response(200, _service_root())
        if path == SESSIONS and method == "POST":
            return self._login(body)
        if not self._authorised(headers):
            answer = error(401, "NoValidSession", "Log in with valid credentials.")
            answer.headers["WWW-Authenticate"] = 'Basic realm="Redfish"'
            return answer
        if path == SYSTEM and method == "PATCH":
            return self._patch_boot(body)
        if path == RESET:
            return _only(method, "POST") or self._reset(body)
        if method == "DELETE" and path.startswith(f"{SESSIONS}/"):
            return self._logout(path.rsplit("/", 1)[1])
        if path in (f"{logs}/SEL/{CLEAR_LOG}" for logs in LOG_SERVICES):
            return _only(method, "POST") or self._clear_log()
        health = self._health(path)
        if health is not None:
            return _only(method, "GET") or Response(200, health)
        resource = self._resources().get(path)
        if resource is None:
            return error(404, "ResourceMissingAtURI", f"The resource at {path} does not exist.")
        return _only(method, "GET") or Response(200, resource)

    def _authorised(self, headers: dict[str, str]) -> bool:
        if self.faults.refuse_password:
            return False
        if headers.get("x-auth-token") in self.sessions:
            return True
        scheme, _, encoded = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return self._valid(user, password)

    def _valid(self, user: str, password: str) -> bool:
        known = self.users.get(user)
        return known is not None and hmac.compare_digest(known.encode(), password.encode())

    def _login(self, body: bytes) -> Response:
        data = _json(body) or {}
        user, password = data.get("UserName"), data.get("Password")
        if not isinstance(user, str) or not isinstance(password, str):
            return error(400, "PropertyMissing", "UserName and Password are required.")
        if self.faults.refuse_password or not self._valid(user, password):
            return error(401, "NoValidSession", "Invalid user name or password.")
        token = secrets.token_hex(16)
        session_id = str(self._next_session)
        self._next_session += 1
        self.sessions[token] = session_id
        if len(self.sessions) > MAX_SESSIONS:
            self.sessions.popitem(last=False)
        self.logins += 1
        location = f"{SESSIONS}/{session_id}"
        resource = {"@odata.id": location, "Id": session_id, "UserName": user}
        return Response(201, resource, {"X-Auth-Token": token, "Location": location})

    def _logout(self, session_id: str) -> Response:
        for token, known in list(self.sessions.items()):
            if known == session_id:
                del self.sessions[token]
                return Response(204)
        return error(404, "ResourceMissingAtURI", f"No session {session_id}.")

    def _reset(self, body: bytes) -> Response:
        data = _json(body)
        if data is None or "ResetType" not in data:
            return error(
                400, "ActionParameterMissing", "The action requires the parameter ResetType."
            )
        kind = data["ResetType"]
        if kind not in self.resets:
            return error(
                400,
                "ActionParameterValueNotInList",
                f"The value {kind!r} for the parameter ResetType is not in the list of "
                f"acceptable values: {', '.join(self.resets)}.",
            )
        if not self.machine.control(RESETS[kind]):
            return error(409, "GeneralError", f"Cannot {kind}: the system is powered off.")
        return Response(204)

    def _clear_log(self) -> Response:
        sensors = self.machine.sensors
        sensors.log.clear()
        sensors.cleared()
        return Response(204)

    def _health(self, path: str) -> dict[str, Any] | None:
        """Thermal, Power and the log resources; None for any other path."""
        sensors = self.machine.sensors
        if path == THERMAL:
            return redfish_health.thermal(path, sensors)
        if path == POWER:
            return redfish_health.power(path, sensors, self.machine.identity)
        for logs in LOG_SERVICES:
            if path == logs:
                return _collection(logs, [f"{logs}/SEL"])
            if path == f"{logs}/SEL":
                return redfish_health.log_service(path, sensors)
            if path == f"{logs}/SEL/Entries":
                return redfish_health.entries(path, sensors)
            entry_id = path.removeprefix(f"{logs}/SEL/Entries/")
            if entry_id != path and entry_id.isdigit():
                found = sensors.log.entry(int(entry_id)) if 0 < int(entry_id) < 0xFFFF else None
                return None if found is None else redfish_health.log_entry(path, found[1])
        return None

    def _identity(self) -> dict[str, Any]:
        """What the system and the chassis say they are: the values of the IPMI FRU."""
        who = self.machine.identity
        return {
            "Manufacturer": fru.MANUFACTURER,
            "Model": fru.PRODUCT,
            "SKU": fru.MODEL,
            "PartNumber": fru.PART_NUMBER,
            "SerialNumber": who.serial,
            "AssetTag": who.asset_tag,
        }

    def _status(self) -> dict[str, str]:
        health = str(self.machine.sensors.overall())
        return {"State": "Enabled", "Health": health, "HealthRollup": health}

    def _patch_boot(self, body: bytes) -> Response:
        data = _json(body)
        boot = data.get("Boot") if data else None
        if not isinstance(boot, dict) or set(data or {}) != {"Boot"}:
            return error(400, "PropertyNotWritable", "Only the Boot property can be changed.")
        current = self._boot()
        wanted = {**current, **boot}
        for name, allowed in (
            ("BootSourceOverrideEnabled", ENABLED),
            ("BootSourceOverrideTarget", tuple(TARGETS)),
            ("BootSourceOverrideMode", MODES),
        ):
            if wanted.get(name) not in allowed:
                return error(
                    400,
                    "PropertyValueNotInList",
                    f"The value {wanted.get(name)!r} for the property {name} is not in the list "
                    f"of acceptable values: {', '.join(allowed)}.",
                )
        enabled = wanted["BootSourceOverrideEnabled"]
        device = TARGETS[wanted["BootSourceOverrideTarget"]]
        efi = wanted["BootSourceOverrideMode"] == "UEFI"
        if enabled == "Disabled" or device is BootDevice.NONE:
            self.machine.set_boot(BootOverride(efi=efi))
        else:
            self.machine.set_boot(BootOverride(device, enabled == "Continuous", efi))
        return Response(200, self._system())

    def _boot(self) -> dict[str, Any]:
        override = self.machine.boot
        if override.device is BootDevice.NONE:
            enabled = "Disabled"
        else:
            enabled = "Continuous" if override.persistent else "Once"
        return {
            "BootSourceOverrideEnabled": enabled,
            "BootSourceOverrideTarget": _TARGET_NAMES.get(override.device, "None"),
            "BootSourceOverrideMode": "UEFI" if override.efi else "Legacy",
        }

    def _system(self) -> dict[str, Any]:
        return {
            "@odata.id": SYSTEM,
            "@odata.type": "#ComputerSystem.v1_13_0.ComputerSystem",
            "Id": "1",
            "Name": "Simulated server",
            **self._identity(),
            "PowerState": "On" if self.machine.power is Power.ON else "Off",
            "Status": self._status(),
            "ProcessorSummary": {
                "Count": 1,
                "Status": {
                    "State": "Enabled",
                    "Health": str(self.machine.sensors.health(BY_NAME["CPU1 Temp"])),
                },
            },
            "MemorySummary": {
                "TotalSystemMemoryGiB": 64,
                "Status": {"State": "Enabled", "Health": "OK"},
            },
            "PCIeDevices": [],
            "PCIeFunctions": [],
            "LogServices": {"@odata.id": LOG_SERVICES[0]},
            "Boot": {
                **self._boot(),
                "BootSourceOverrideEnabled@Redfish.AllowableValues": list(ENABLED),
                "BootSourceOverrideTarget@Redfish.AllowableValues": list(TARGETS),
                "BootSourceOverrideMode@Redfish.AllowableValues": list(MODES),
            },
            "Actions": {
                "#ComputerSystem.Reset": {
                    "target": RESET,
                    "ResetType@Redfish.AllowableValues": list(self.resets),
                }
            },
            "Links": {"ManagedBy": [{"@odata.id": MANAGER}], "Chassis": [{"@odata.id": CHASSIS}]},
        }

    def _resources(self) -> dict[str, dict[str, Any]]:
        return {
            f"{ROOT}/SessionService": {
                "@odata.id": f"{ROOT}/SessionService",
                "ServiceEnabled": True,
                "Sessions": {"@odata.id": SESSIONS},
            },
            SESSIONS: _collection(SESSIONS, [f"{SESSIONS}/{i}" for i in self.sessions.values()]),
            f"{ROOT}/Systems": _collection(f"{ROOT}/Systems", [SYSTEM]),
            SYSTEM: self._system(),
            f"{ROOT}/Managers": _collection(f"{ROOT}/Managers", [MANAGER]),
            MANAGER: {
                "@odata.id": MANAGER,
                "@odata.type": "#Manager.v1_10_0.Manager",
                "Id": "1",
                "ManagerType": "BMC",
                "DateTime": redfish_health.timestamp(self.machine.sensors.log.wall()),
                "Status": {"State": "Enabled", "Health": "OK"},
                "LogServices": {"@odata.id": LOG_SERVICES[1]},
                "Links": {"ManagerForServers": [{"@odata.id": SYSTEM}]},
            },
            f"{ROOT}/Chassis": _collection(f"{ROOT}/Chassis", [CHASSIS]),
            CHASSIS: {
                "@odata.id": CHASSIS,
                "@odata.type": "#Chassis.v1_14_0.Chassis",
                "Id": "1",
                "ChassisType": "RackMount",
                **self._identity(),
                "PowerState": "On" if self.machine.power is Power.ON else "Off",
                "Status": self._status(),
                "Thermal": {"@odata.id": THERMAL},
                "Power": {"@odata.id": POWER},
                "Links": {"ComputerSystems": [{"@odata.id": SYSTEM}]},
            },
        }


def _service_root() -> dict[str, Any]:
    return {
        "@odata.id": f"{ROOT}/",
        "@odata.type": "#ServiceRoot.v1_11_0.ServiceRoot",
        "Id": "RootService",
        "Name": "Rackhand simulated BMC",
        "RedfishVersion": "1.11.0",
        "Systems": {"@odata.id": f"{ROOT}/Systems"},
        "Managers": {"@odata.id": f"{ROOT}/Managers"},
        "Chassis": {"@odata.id": f"{ROOT}/Chassis"},
        "SessionService": {"@odata.id": f"{ROOT}/SessionService"},
        "Links": {"Sessions": {"@odata.id": SESSIONS}},
    }


def _collection(url: str, members: list[str]) -> dict[str, Any]:
    return {
        "@odata.id": url,
        "Members": [{"@odata.id": member} for member in members],
        "Members@odata.count": len(members),
    }


def _only(method: str, allowed: str) -> Response | None:
    if method == allowed:
        return None
    answer = error(405, "OperationNotAllowed", f"{method} is not allowed here; use {allowed}.")
    answer.headers["Allow"] = allowed
    return answer


def _json(body: bytes) -> dict[str, Any] | None:
    """The JSON object of a request body, or None if it is not one."""
    try:
        data = json.loads(body or b"{}")
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
