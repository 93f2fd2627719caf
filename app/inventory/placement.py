"""Where a device may sit: site, rack units, parent hypervisor. Shared by edits and imports."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.errors import FieldError
from app.inventory.models import DeviceKind, Rack, Site

RACKLESS_KINDS = frozenset({DeviceKind.VM})


@dataclass(frozen=True)
class ParentRef:
    id: int | None
    name: str
    kind: DeviceKind
    site_id: int


def check_rack(
    kind: DeviceKind, site: Site, rack: Rack | None, position_u: int | None, height_u: int
) -> None:
    if rack is None:
        if position_u is not None:
            raise FieldError("position_u", "a rack position needs a rack; give `rack` too")
        return
    if kind in RACKLESS_KINDS:
        raise FieldError("rack", f"a {kind} lives on its hypervisor, not in a rack")
    if rack.site_id != site.id:
        raise FieldError("rack", f"rack {rack.name!r} is not at site {site.slug!r}")
    if position_u is not None and position_u + height_u - 1 > rack.height_u:
        raise FieldError(
            "position_u",
            f"U{position_u} with height {height_u}U goes past the top of rack "
            f"{rack.name!r} ({rack.height_u}U)",
        )


def check_parent(kind: DeviceKind, site: Site, parent: ParentRef | None) -> None:
    if kind is DeviceKind.VM and parent is None:
        raise FieldError("parent", "a vm needs its hypervisor as `parent`")
    if parent is None:
        return
    if kind is not DeviceKind.VM:
        raise FieldError("parent", f"only a vm has a parent; this device is a {kind}")
    if parent.kind is not DeviceKind.HYPERVISOR:
        raise FieldError("parent", f"{parent.name!r} is a {parent.kind}, not a hypervisor")
    if parent.site_id != site.id:
        raise FieldError("parent", f"hypervisor {parent.name!r} is at another site")


@dataclass
class RackOccupancy:
    """Rack units taken per rack, to refuse two devices in the same U."""

    taken: dict[int, list[tuple[int, int, str]]] = field(default_factory=dict)

    def add(self, rack_id: int, name: str, position_u: int, height_u: int) -> None:
        self.taken.setdefault(rack_id, []).append((position_u, position_u + height_u - 1, name))

    def remove(self, rack_id: int, name: str) -> None:
        units = self.taken.get(rack_id, [])
        self.taken[rack_id] = [unit for unit in units if unit[2] != name]

    def place(self, rack: Rack, name: str, position_u: int, height_u: int) -> None:
        """Claim the units for `name` (moving it if it sat elsewhere in this rack)."""
        top = position_u + height_u - 1
        for start, end, other in self.taken.get(rack.id, []):
            if other != name and start <= top and position_u <= end:
                raise FieldError(
                    "position_u",
                    f"U{position_u}-U{top} of rack {rack.name!r} overlaps {other!r} "
                    f"(U{start}-U{end})",
                )
        self.remove(rack.id, name)
        self.add(rack.id, name, position_u, height_u)
