"""`/devices/{name}`: one device as the API reads it (facts, control paths, power), what was
done to it (consoles, audit), and its actions, which the browser sends to the API
(`static/device.js`); at a site whose agents are all offline, since when (its actions fail
then). A hypervisor's page lists its guests, a vm's says what its host last said of it; a
device with a BMC path shows its hardware health (`device_health`). A device of a site the
viewer cannot see is the same 404 as a missing one.
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.responses import Response

from agents.protocol import BootDevice, PowerAction
from app.audit import service as audit
from app.audit.models import Outcome
from app.consoles import service as consoles
from app.consoles.models import ConsoleStatus, ConsoleVia
from app.health import reads
from app.identity.models import Role
from app.inventory import devices
from app.inventory.health import ConsoleAttempt, Health, PathHealth, health
from app.inventory.models import DeviceKind
from app.inventory.schemas import PATH_MODELS, PathRead
from app.virtualization import guests
from app.web import device_guests, device_health
from app.web.pages import ViewerDep, page_router
from app.web.site_agents import SilenceDep, site_agents

router = page_router()
RECENT_EVENTS = 20
RECORDINGS = 20
# Power actions offered on the page, in this order; those that cut or restart a running machine
# ask for confirmation (with ticket and reason) first. NMI is left to the API and the CLI.
POWER_BUTTONS = (
    PowerAction.STATUS,
    PowerAction.ON,
    PowerAction.OFF,
    PowerAction.SOFT,
    PowerAction.CYCLE,
    PowerAction.RESET,
)
DESTRUCTIVE = frozenset({PowerAction.OFF, PowerAction.SOFT, PowerAction.CYCLE, PowerAction.RESET})
BOOT_BUTTONS = (BootDevice.BIOS, BootDevice.PXE, BootDevice.DISK)
POWER_LABELS = {
    PowerAction.STATUS: "Read state",
    PowerAction.ON: "Power on",
    PowerAction.OFF: "Power off",
    PowerAction.SOFT: "Soft off",
    PowerAction.CYCLE: "Power cycle",
    PowerAction.RESET: "Reset",
}
BOOT_LABELS = {BootDevice.BIOS: "BIOS setup", BootDevice.PXE: "PXE", BootDevice.DISK: "Disk"}


@dataclass(frozen=True)
class PathRow:
    path: PathRead
    health: PathHealth

    @property
    def carries_secret(self) -> bool:
        """Whether this kind holds a secret of its own (a port or an outlet uses its box's)."""
        return "secret" in PATH_MODELS[self.path.kind].model_fields


@router.get("/devices/{name}")
async def device_page(viewer: ViewerDep, silence: SilenceDep, name: str) -> Response:
    session, ctx = viewer.session, viewer.ctx
    found, site = await devices.device_and_site(session, ctx, name, Role.VIEWER, "reading a device")
    detail = await devices.read_device(session, found)  # GET /devices/{name}'s answer
    attempts = [
        ConsoleAttempt(ConsoleVia(row.via), row.path, row.status is ConsoleStatus.FAILED,
                       row.message, row.created_at)
        for row in await consoles.last_attempts(session, found)
    ]  # fmt: skip
    recordings = await consoles.recordings(session, ctx, found, RECORDINGS)
    flt = await audit.audit_filter(session, ctx, device=found.name)
    events, _ = await audit.list_events(session, flt, limit=RECENT_EVENTS, before=None)
    served = (await site_agents(viewer, silence, site.slug)).get(site.slug)
    hosted = (
        await device_guests.of_host(session, ctx, found.name)
        if found.kind is DeviceKind.HYPERVISOR
        else None
    )
    guest = await guests.of_device(session, found) if found.kind is DeviceKind.VM else None
    verdict = (
        await reads.stored(session, ctx, found.name)
        if device_health.has_bmc(detail.paths)
        else None
    )
    return viewer.render(
        "device.html",
        device=detail,
        site=site,
        reading=detail.power,
        paths=[
            PathRow(path, health(path, detail.paths, detail.power, attempts))
            for path in detail.paths
        ],
        recordings=recordings,
        events=events,
        guests=hosted,
        guest=guest,
        verdict=verdict,
        admin=viewer.can(Role.ADMIN, found.site_id),
        agents_down=served if served is not None and not served.online else None,
        operator=viewer.can(Role.OPERATOR, found.site_id),
        power_buttons=[
            (action, POWER_LABELS[action], action in DESTRUCTIVE) for action in POWER_BUTTONS
        ],
        boot_buttons=[(boot, BOOT_LABELS[boot]) for boot in BOOT_BUTTONS],
        Health=Health,
        Outcome=Outcome,
    )
