"""`/devices`: the catalogue searched and paged as GET /devices answers it, with bulk power
actions for those who may act (the browser sends them to POST /api/v1/power)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Literal

from fastapi import Query
from starlette.responses import Response

from agents.protocol import BootDevice, Health, PowerAction, PowerState
from app.errors import AmbiguousReference, InvalidInput, NotFound
from app.identity.models import Role
from app.inventory import devices, sites
from app.inventory.models import DeviceKind
from app.inventory.schemas import DeviceRead
from app.web.pages import Viewer, ViewerDep, link, page_router

router = page_router()
PAGE = 100  # rows per request, at any catalogue size
COUNTED = 1000  # the match count stops here ("1,000+")
Text = Annotated[str, Query(max_length=4096)]


class PowerFilter(StrEnum):
    """The page's `power` choices: a last power state read (PowerState), or no answer to it."""

    ON = PowerState.ON.value
    OFF = PowerState.OFF.value
    UNKNOWN = PowerState.UNKNOWN.value
    UNREACHABLE = "unreachable"  # the last read got no answer (GET /devices?reachable=false)


@dataclass
class Search:
    """The form as given (kept as text, so a wrong value is shown back with its message)."""

    q: str = ""
    select: str = ""
    site: str = ""
    rack: str = ""
    tag: str = ""
    kind: str = ""
    power: str = ""
    health: str = ""
    sort: str = "name"
    errors: list[str] = field(default_factory=list)

    def filters(self) -> dict[str, str]:
        """The non-empty fields, for links that keep the search (the next page, the URL)."""
        named = {
            "q": self.q,
            "select": self.select,
            "site": self.site,
            "rack": self.rack,
            "tag": self.tag,
            "kind": self.kind,
            "power": self.power,
            "health": self.health,
        }
        if self.sort != "name":
            named["sort"] = self.sort
        return {name: value for name, value in named.items() if value}

    def link(self, **more: str) -> str:
        return link("/devices", self.filters() | more)

    def bulk_targets(self) -> dict[str, object] | None:
        """The search as POST /power's targets, or None when it filters on what a bulk request
        cannot name (text search, reachability): then only ticked rows can be acted on."""
        if self.q or self.power == PowerFilter.UNREACHABLE:
            return None
        targets: dict[str, object] = {
            name: value
            for name, value in (
                ("select", self.select),
                ("site", self.site),
                ("rack", self.rack),
                ("kind", self.kind),
                ("power_state", self.power),
                ("health", self.health),
            )
            if value
        }
        if self.tag:
            targets["tags"] = [self.tag]
        return targets

    def device_filter(self, viewer: Viewer) -> devices.DeviceFilter:
        """The service's filter; a wrong kind, power state or health is said as the API says it."""
        try:
            kind = DeviceKind(self.kind) if self.kind else None
        except ValueError:
            raise InvalidInput(f"kind: use one of {', '.join(DeviceKind)}") from None
        try:
            power = PowerFilter(self.power) if self.power else None
        except ValueError:
            raise InvalidInput(f"power: use one of {', '.join(PowerFilter)}") from None
        try:
            health = Health(self.health) if self.health else None
        except ValueError:
            raise InvalidInput(f"health: use one of {', '.join(Health)}") from None
        power_state, reachable = None, None
        if power is PowerFilter.UNREACHABLE:
            reachable = False
        elif power is not None:
            power_state = PowerState(power)
        return devices.DeviceFilter(
            select=self.select or None,
            site=self.site or None,
            rack=self.rack or None,
            kind=kind,
            tags=[self.tag] if self.tag else [],
            power_state=power_state,
            reachable=reachable,
            health=health,
            q=self.q or None,
            site_ids=viewer.ctx.principal.visible_site_ids(),
        )


def _status(exc: Exception) -> int:
    """The status the API gives the same mistake."""
    return 404 if isinstance(exc, NotFound) else 422 if type(exc) is InvalidInput else 400


@router.get("/devices")
async def device_list(
    viewer: ViewerDep,
    q: Text = "",
    select: Text = "",
    site: Text = "",
    rack: Text = "",
    tag: Text = "",
    kind: Text = "",
    power: Text = "",
    health: Text = "",
    sort: Literal["name", "-name"] = "name",
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """The full page, or only its results for htmx (a history restore wants the full page)."""
    search = Search(q.strip(), select.strip(), site.strip(), rack.strip(), tag.strip(),
                    kind, power, health, sort)  # fmt: skip
    rows: list[DeviceRead] = []
    next_cursor, matched, status = None, 0, 200
    try:
        flt = await devices.prepare(viewer.session, search.device_filter(viewer))
        page = await devices.list_devices(viewer.session, flt, limit=PAGE, cursor=cursor, sort=sort)
        rows, next_cursor = page.items, page.next_cursor
        if cursor is None and next_cursor is None:
            matched = len(rows)
        else:
            matched = await devices.count_devices(viewer.session, flt, upto=COUNTED + 1)
    except (NotFound, InvalidInput, AmbiguousReference) as exc:
        search.errors.append(str(exc))
        status = _status(exc)
    headers = viewer.request.headers
    partial = headers.get("HX-Request") == "true" and not headers.get("HX-History-Restore-Request")
    visible = await sites.list_sites(viewer.session, viewer.ctx)
    operable = {site.slug for site in visible if viewer.can(Role.OPERATOR, site.id)}
    response = viewer.render(
        "device_list_results.html" if partial else "device_list.html",
        # htmx swaps only 2xx answers: the message is the swapped content, said with a 200.
        200 if partial else status,
        search=search,
        rows=rows,
        next_cursor=next_cursor,
        first_page=cursor is not None,
        matched=matched,
        counted=COUNTED,
        sites=visible,
        operable=operable,
        kinds=list(DeviceKind),
        power_choices=list(PowerFilter),
        power_labels={PowerFilter.UNREACHABLE: "BMC unreachable (last read failed)"},
        health_choices=list(Health),
        power_actions=[a for a in PowerAction if a is not PowerAction.NMI],
        boot_devices=[BootDevice.BIOS, BootDevice.PXE, BootDevice.DISK, BootDevice.CDROM],
        bulk_targets=search.bulk_targets(),
    )
    if partial:  # the address bar shows the search without its empty fields
        response.headers["HX-Push-Url"] = search.link(**({"cursor": cursor} if cursor else {}))
    return response
