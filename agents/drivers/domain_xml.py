"""A libvirt domain's boot settings, edited in its XML definition (docs/hypervisors.md).

libvirt boots a guest from `<os>`'s `<boot dev=…>` list, or from per-device `<boot order=…>`
(never both: it refuses such a definition), and offers the firmware's boot menu with
`<bootmenu enable='yes'/>`. A one-time change keeps the original settings in the domain's own
`<metadata>` under our namespace, so the agent that restores them need not be the one that
changed them. The XML comes from the host: it is parsed with defusedxml (no entities, no DTDs).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

import defusedxml
import defusedxml.ElementTree as SafeET

from agents.protocol import BootDevice

NS = "https://rackhand.dev/xmlns/boot"
MENU_TIMEOUT_MS = 10_000  # how long the firmware offers its menu (SeaBIOS: "Press ESC…")
DEVS = {BootDevice.PXE: "network", BootDevice.DISK: "hd", BootDevice.CDROM: "cdrom"}

_MARK = f"{{{NS}}}boot"
_DEV = f"{{{NS}}}dev"
_MENU = f"{{{NS}}}menu"
_ORDER = f"{{{NS}}}order"

# Prefixes for namespaces a definition often carries, so a rewritten one reads the same.
for _prefix, _uri in {
    "rackhand": NS,
    "qemu": "http://libvirt.org/schemas/domain/qemu/1.0",
    "libosinfo": "http://libosinfo.org/xmlns/libvirt/domain/1.0",
}.items():
    ET.register_namespace(_prefix, _uri)


class DomainXmlError(ValueError):
    """The host's definition is not a domain we can edit (not XML, no `<os>`)."""


def parse(text: str) -> ET.Element:
    try:
        domain = SafeET.fromstring(text)
    except (ET.ParseError, defusedxml.DefusedXmlException) as exc:
        raise DomainXmlError(f"its definition is not XML we read ({exc})") from exc
    if domain.tag != "domain" or domain.find("os") is None:
        raise DomainXmlError("its definition has no <domain><os> to set the boot device in")
    return domain


def serialize(domain: ET.Element) -> str:
    return ET.tostring(domain, encoding="unicode")


def pending(domain: ET.Element) -> bool:
    """Whether the definition carries a one-time change (its original kept aside)."""
    return _mark(domain) is not None


def boot_settings(domain: ET.Element) -> tuple[tuple[str, ...], ...]:
    """What decides how the domain boots, comparable between its running and stored
    definitions: `<os>`'s boot list and menu, the per-device orders."""
    os_ = _os(domain)
    settings = [("boot", *_attrs(boot)) for boot in os_.findall("boot")]
    settings += [("bootmenu", *_attrs(menu)) for menu in os_.findall("bootmenu")]
    for device in _devices(domain):
        index = _devices(domain, device.tag).index(device)
        settings += [(device.tag, str(index), *_attrs(boot)) for boot in device.findall("boot")]
    return tuple(settings)


def _attrs(element: ET.Element) -> tuple[str, ...]:
    return tuple(f"{name}={value}" for name, value in sorted(element.attrib.items()))


def set_boot(domain: ET.Element, device: BootDevice, persistent: bool) -> None:
    """Boot from `device` at the next start, or at every start; `bios` keeps the boot list
    and offers the firmware's menu. A one-time change on top of another keeps the first
    original; `default` puts the original back."""
    if device is BootDevice.DEFAULT:
        restore(domain)
        return
    if persistent:
        _unmark(domain)
    elif not pending(domain):
        _remember(domain)
    os_ = _os(domain)
    if device is BootDevice.BIOS:
        menu = os_.find("bootmenu")
        if menu is None:
            menu = ET.Element("bootmenu")
            os_.insert(_after_boots(os_), menu)
        menu.attrib = {"enable": "yes", "timeout": str(MENU_TIMEOUT_MS)}
        return
    _clear_boots(domain)
    for menu in os_.findall("bootmenu"):
        os_.remove(menu)  # a device to boot from, not a menu to stop in
    os_.insert(_after_type(os_), ET.Element("boot", {"dev": DEVS[device]}))


def restore(domain: ET.Element) -> bool:
    """Put the settings a one-time change replaced back; False if there was none."""
    mark = _mark(domain)
    if mark is None:
        return False
    os_ = _os(domain)
    _clear_boots(domain)
    menu = os_.find("bootmenu")
    if menu is not None:
        os_.remove(menu)
    at = _after_type(os_)
    for number, dev in enumerate(mark.iter(_DEV)):
        os_.insert(at + number, ET.Element("boot", dict(dev.attrib)))
    for kept in mark.iter(_MENU):
        os_.insert(_after_boots(os_), ET.Element("bootmenu", dict(kept.attrib)))
    for order in mark.iter(_ORDER):
        attrib = dict(order.attrib)
        tag, place = attrib.pop("device", ""), attrib.pop("index", "")
        index = int(place) if place.isdigit() else -1
        same = _devices(domain, tag) if tag else []
        if 0 <= index < len(same):
            same[index].append(ET.Element("boot", attrib))
    _unmark(domain)
    return True


def _remember(domain: ET.Element) -> None:
    """Keep the boot settings in `<metadata>`: `<os>`'s boot list and menu, and the
    per-device orders (by the device's place among its kind: libvirt keeps their order)."""
    os_ = _os(domain)
    mark = ET.Element(_MARK)
    for boot in os_.findall("boot"):
        ET.SubElement(mark, _DEV, dict(boot.attrib))
    for menu in os_.findall("bootmenu"):
        ET.SubElement(mark, _MENU, dict(menu.attrib))
    for device in _devices(domain):
        for boot in device.findall("boot"):
            index = _devices(domain, device.tag).index(device)
            ET.SubElement(mark, _ORDER, {"device": device.tag, "index": str(index)} | boot.attrib)
    metadata = domain.find("metadata")
    if metadata is None:
        metadata = ET.SubElement(domain, "metadata")
    metadata.append(mark)


def _unmark(domain: ET.Element) -> None:
    metadata = domain.find("metadata")
    if metadata is None:
        return
    for mark in metadata.findall(_MARK):
        metadata.remove(mark)
    if len(metadata) == 0:
        domain.remove(metadata)


def _mark(domain: ET.Element) -> ET.Element | None:
    return domain.find(f"metadata/{_MARK}")


def _os(domain: ET.Element) -> ET.Element:
    os_ = domain.find("os")
    if os_ is None:
        raise DomainXmlError("its definition has no <os> to set the boot device in")
    return os_


def _clear_boots(domain: ET.Element) -> None:
    """Remove `<os>`'s boot list and every per-device boot order."""
    os_ = _os(domain)
    for boot in os_.findall("boot"):
        os_.remove(boot)
    for device in _devices(domain):
        for boot in device.findall("boot"):
            device.remove(boot)


def _devices(domain: ET.Element, tag: str = "*") -> list[ET.Element]:
    """The domain's devices (of one kind), in the definition's order."""
    return domain.findall(f"devices/{tag}")


def _after_type(os_: ET.Element) -> int:
    kinds = [child.tag for child in os_]
    return kinds.index("type") + 1 if "type" in kinds else 0


def _after_boots(os_: ET.Element) -> int:
    kinds = [child.tag for child in os_]
    last = max((i for i, kind in enumerate(kinds) if kind == "boot"), default=None)
    return last + 1 if last is not None else _after_type(os_)
