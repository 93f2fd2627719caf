"""`virsh` on the simulated hypervisor host: the commands Rackhand's libvirt driver runs.

Output and errors as virsh 9 prints them (compared with `virsh -c test:///default`): a blank
line after each command's output, `error:` lines on stderr. A guest keeps its definition as
XML: `define` stores what it is given (`<metadata>` included), `start` copies it to the live
definition the guest runs with, and the boot order comes from that copy.
"""

from __future__ import annotations

import copy
import time
import uuid as uuids
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING

from sim.domain import Attach, Done, Guest, Toolstack
from sim.machine import Control, Machine

if TYPE_CHECKING:
    from sim.hypervisor import Hypervisor

URIS = ("qemu:///system",)
DEVS = {"hd": "c", "cdrom": "d", "network": "n", "fd": "a"}  # <boot dev=…> as xl's letters
# virDomainState numbers and the reasons `domstate --reason` and `domstats` give
STATES = {True: ("running", 1), False: ("shut off", 5)}
REASONS = {"unknown": 0, "booted": 1, "shutdown": 1, "destroyed": 2}
NO_TTY = "Cannot run interactive console without a controlling TTY"
NOT_RUNNING = "Requested operation is not valid: domain is not running"


def definition(name: str, uuid: str, vcpus: int, memory_mib: int, boot: str) -> ET.Element:
    """A KVM guest with a disk, a NIC and a serial console, as virt-install defines one."""
    devs = {letter: dev for dev, letter in DEVS.items()}
    boots = "".join(f"    <boot dev='{devs[letter]}'/>\n" for letter in boot if letter in devs)
    memkb = memory_mib * 1024
    return ET.fromstring(f"""<domain type='kvm'>
  <name>{name}</name>
  <uuid>{uuid}</uuid>
  <memory unit='KiB'>{memkb}</memory>
  <currentMemory unit='KiB'>{memkb}</currentMemory>
  <vcpu placement='static'>{vcpus}</vcpu>
  <os>
    <type arch='x86_64' machine='pc-q35-8.2'>hvm</type>
{boots}  </os>
  <features>
    <acpi/>
    <apic/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/var/lib/libvirt/images/{name}.qcow2'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='network'>
      <source network='default'/>
      <model type='virtio'/>
    </interface>
    <serial type='pty'>
      <target type='isa-serial' port='0'/>
    </serial>
    <console type='pty'>
      <target type='serial' port='0'/>
    </console>
  </devices>
</domain>""")


def boot_order(domain: ET.Element) -> tuple[str, bool]:
    """How a definition boots: `<os><boot dev=…/>` or per-device `<boot order=…/>` (libvirt
    refuses both at once: ValueError) as xl's letters, and whether the boot menu is on."""
    os_boot = [DEVS.get(boot.get("dev", ""), "") for boot in domain.findall("os/boot")]
    ordered: list[tuple[int, str]] = []
    for device in domain.findall("devices/*"):
        order = device.find("boot")
        if order is None:
            continue
        cdrom = device.get("device") == "cdrom"
        letter = "n" if device.tag == "interface" else "d" if cdrom else "c"
        ordered.append((int(order.get("order", "0")), letter))
    if os_boot and ordered:
        raise ValueError(
            "unsupported configuration: per-device boot elements cannot be used together "
            "with os/boot elements"
        )
    letters = "".join(os_boot) or "".join(letter for _, letter in sorted(ordered))
    menu = domain.find("os/bootmenu")
    return letters or "c", menu is not None and menu.get("enable") == "yes"


def run(host: Hypervisor, args: list[str], stdin: bytes, tty: bool) -> Done | Attach:
    """One `virsh [-c URI] COMMAND ARGS…` invocation."""
    uri = host.uris[0]
    while args and args[0].startswith("-"):
        option, args = args[0], args[1:]
        if option in ("-c", "--connect") and args:
            uri, args = args[0], args[1:]
        elif option.startswith("--connect="):
            uri = option.partition("=")[2]
        elif option not in ("-q", "--quiet"):
            return Done(1, err=f"error: unsupported option '{option}'. See --help.\n")
    if uri not in host.uris:
        return Done(
            1,
            err="error: failed to connect to the hypervisor\n"
            f"error: no connection driver available for {uri}\n",
        )
    if not args:
        return Done(1, err="error: no command given (interactive virsh is not simulated)\n")
    verb, rest = args[0], args[1:]
    flags = {a for a in rest if a.startswith("--") and a != "--domain"}
    words = [a for a in rest if not a.startswith("--")]
    if verb == "list":
        return _list(host, flags)
    if verb == "domstats":
        return _domstats(host, flags, words)
    if verb == "define":
        return _define(host, words, stdin)
    if verb != "console" and verb not in COMMANDS:
        return Done(1, err=f"error: unknown command: '{verb}'\n")
    if not words:
        return Done(1, err=f"error: command '{verb}' requires <domain> option\n")
    guest = find(host, words[0])
    if guest is None:
        return _error(f"failed to get domain '{words[0]}'")
    if verb == "console":
        return _console(guest, flags, tty)
    return COMMANDS[verb](host, guest, flags, words[1:])


def find(host: Hypervisor, ident: str) -> Guest | None:
    """A libvirt guest by id, uuid or name (virsh tries them in that order)."""
    for guest in domains(host):
        if ident.isdigit() and guest.domid == int(ident):
            return guest
    return next((g for g in domains(host) if ident in (g.uuid, g.name)), None)


def domains(host: Hypervisor) -> list[Guest]:
    return [g for g in host.guests.values() if g.toolstack is Toolstack.LIBVIRT]


def serialize(element: ET.Element) -> str:
    """XML as libvirt writes it: attributes in single quotes, empty elements as `<x/>`,
    whitespace kept; a namespaced element (under `<metadata>`) declares its prefix."""
    return _serialize(element, {})


def _serialize(element: ET.Element, known: dict[str, str]) -> str:
    known = dict(known)
    declare = ""

    def name(qualified: str) -> str:
        nonlocal declare
        if not qualified.startswith("{"):
            return qualified
        uri, _, local = qualified[1:].partition("}")
        if uri not in known:
            known[uri] = f"ns{len(known)}"
            declare += f" xmlns:{known[uri]}='{_attr(uri)}'"
        return f"{known[uri]}:{local}"

    tag = name(element.tag)
    attrs = "".join(f" {name(key)}='{_attr(value)}'" for key, value in element.attrib.items())
    text = _text(element.text or "")
    inner = text + "".join(_serialize(child, known) for child in element)
    tail = _text(element.tail or "")
    if not inner:
        return f"<{tag}{declare}{attrs}/>{tail}"
    return f"<{tag}{declare}{attrs}>{inner}</{tag}>{tail}"


def _text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(text: str) -> str:
    return _text(text).replace("'", "&apos;")


def _error(*lines: str) -> Done:
    """A failed command: its `error:` lines, and the blank line virsh still prints."""
    return Done(1, "\n", "".join(f"error: {line}\n" for line in lines))


def _state(guest: Guest) -> str:
    return STATES[guest.running][0]


def _list(host: Hypervisor, flags: set[str]) -> Done:
    guests = sorted(domains(host), key=lambda g: (g.domid is None, g.domid or 0, g.name))
    if "--all" not in flags and "--inactive" not in flags:
        guests = [g for g in guests if g.running]
    if "--inactive" in flags:
        guests = [g for g in guests if not g.running]
    if "--autostart" in flags:
        guests = [g for g in guests if g.autostart]
    if "--uuid" in flags and "--name" in flags:
        return Done(out="".join(f"{g.uuid} {g.name}\n" for g in guests) + "\n")
    if "--uuid" in flags or "--name" in flags:
        key = "uuid" if "--uuid" in flags else "name"
        return Done(out="".join(f"{getattr(g, key)}\n" for g in guests) + "\n")
    ids = [str(g.domid) if g.running else "-" for g in guests]
    id_width = max([len(i) for i in ids] + [2])
    name_width = max([len(g.name) for g in guests] + [4])
    header = f" {'Id':<{id_width}}   {'Name':<{name_width}}   State"
    lines = [header, "-" * (len(header) + 4)]
    for ident, guest in zip(ids, guests, strict=True):
        lines.append(f" {ident:<{id_width}}   {guest.name:<{name_width}}   {_state(guest)}")
    return Done(out="\n".join(lines) + "\n\n")


def _domstats(host: Hypervisor, flags: set[str], words: list[str]) -> Done:
    everything = {"state", "vcpu", "balloon"}
    groups = {flag[2:] for flag in flags} & everything or everything
    unknown = [word for word in words if find(host, word) is None]
    if unknown:
        return _error(f"failed to get domain '{unknown[0]}'")
    chosen = [find(host, word) for word in words] if words else domains(host)
    out = []
    for guest in (g for g in chosen if g is not None):
        lines = [f"Domain: '{guest.name}'"]
        if "state" in groups:
            lines += [f"  state.state={STATES[guest.running][1]}",
                      f"  state.reason={REASONS.get(guest.reason, 0)}"]  # fmt: skip
        if "vcpu" in groups:
            lines += [f"  vcpu.current={guest.vcpus}", f"  vcpu.maximum={guest.vcpus}"]
        if "balloon" in groups:
            memkb = guest.memory_mib * 1024
            lines += [f"  balloon.current={memkb}", f"  balloon.maximum={memkb}"]
        out.append("\n".join(lines) + "\n\n")
    return Done(out="".join(out) or "\n")


def _define(host: Hypervisor, words: list[str], stdin: bytes) -> Done:
    source = words[0] if words else ""
    if source != "/dev/stdin":
        return _error(f"Failed to open file '{source}': No such file or directory")
    failed = f"Failed to define domain from {source}"
    try:
        domain = ET.fromstring(stdin.decode())
        boot_order(domain)
        memory = domain.find("memory")
        memory_mib = _kib(memory) // 1024 if memory is not None else 512
        vcpus = int(domain.findtext("vcpu") or "1")
    except ET.ParseError as error:
        return _error(failed, f"(domain_definition):1: {error}")
    except (ValueError, UnicodeDecodeError) as error:
        return _error(failed, str(error))
    name = domain.findtext("name") or ""
    if domain.tag != "domain" or not name:
        return _error(failed, "XML error: missing domain name information")
    wanted = domain.findtext("uuid")
    guest = find(host, name)
    if guest is not None and wanted and guest.uuid != wanted:
        exists = f"operation failed: domain '{name}' already exists with uuid {guest.uuid}"
        return _error(failed, exists)
    if guest is None:
        guest = Guest(name, wanted or str(uuids.uuid4()), Toolstack.LIBVIRT,
                      Machine(host.timing, name=name))  # fmt: skip
        host.guests[name] = guest
    if not wanted:  # libvirt fills it in
        element = ET.Element("uuid")
        element.text = guest.uuid
        domain.insert(1, element)
    domain.attrib.pop("id", None)
    ET.indent(domain)  # libvirt stores its own canonical form of what it was given
    guest.definition, guest.vcpus, guest.memory_mib = domain, vcpus, memory_mib
    return Done(out=f"Domain '{name}' defined from {source}\n\n")


def _kib(element: ET.Element) -> int:
    scale = {"b": 1 / 1024, "bytes": 1 / 1024, "KiB": 1, "k": 1, "MiB": 1024, "M": 1024,
             "GiB": 1024**2, "G": 1024**2}  # fmt: skip
    unit = element.get("unit", "KiB")
    if unit not in scale:
        raise ValueError(f"XML error: unknown memory unit '{unit}'")
    return int(int((element.text or "0").strip()) * scale[unit])


def _console(guest: Guest, flags: set[str], tty: bool) -> Done | Attach:
    if not tty:
        return _error(NO_TTY)
    if not guest.running:
        return _error("The domain is not running")
    if guest.consoles and "--force" not in flags:
        return _error("operation failed: Active console session exists for this domain")
    banner = f"Connected to domain '{guest.name}'\nEscape character is ^] (Ctrl + ])\n"
    return Attach(guest, banner, force=True)


Command = Callable[["Hypervisor", Guest, set[str], list[str]], Done]


def _domstate(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    state = _state(guest)
    return Done(out=f"{state} ({guest.reason})\n\n" if "--reason" in flags else f"{state}\n\n")


def _dominfo(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    memkb = guest.memory_mib * 1024
    cpu = [("CPU time", f"{time.time() - guest.started:.1f}s")] if guest.running else []
    rows = [
        ("Id", str(guest.domid) if guest.running else "-"),
        ("Name", guest.name),
        ("UUID", guest.uuid),
        ("OS Type", "hvm"),
        ("State", _state(guest)),
        ("CPU(s)", str(guest.vcpus)),
        *cpu,
        ("Max memory", f"{memkb} KiB"),
        ("Used memory", f"{memkb} KiB"),
        ("Persistent", "yes"),
        ("Autostart", "enable" if guest.autostart else "disable"),
        ("Managed save", "no"),
        ("Security model", "none"),
        ("Security DOI", "0"),
    ]
    return Done(out="".join(f"{f'{key}:':<16}{value}\n" for key, value in rows) + "\n")


def _start(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    if guest.running:
        return _error("Domain is already active")
    host.start_guest(guest)
    return Done(out=f"Domain '{guest.name}' started\n\n")


def _destroy(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    if not guest.running:
        return _error(f"Failed to destroy domain '{guest.name}'", NOT_RUNNING)
    host.stop_guest(guest, "destroyed")
    return Done(out=f"Domain '{guest.name}' destroyed\n\n")


def _shutdown(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    if not guest.running:
        return _error(f"Failed to shutdown domain '{guest.name}'", NOT_RUNNING)
    guest.machine.control(Control.SOFT)
    return Done(out=f"Domain '{guest.name}' is being shutdown\n\n")


def _reset(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    if not guest.running:
        return _error(f"Failed to reset domain '{guest.name}'", NOT_RUNNING)
    host.reset_guest(guest)
    return Done(out=f"Domain '{guest.name}' was reset\n\n")


def _reboot(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    if not guest.running:
        return _error(f"Failed to reboot domain '{guest.name}'", NOT_RUNNING)
    host.reset_guest(guest)  # the guest OS restarts; the domain, its id and definition stay
    return Done(out=f"Domain '{guest.name}' is being rebooted\n\n")


def _inject_nmi(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    if not guest.running:
        return _error(NOT_RUNNING)
    guest.machine.control(Control.DIAG)
    return Done(out="\n")


def _dumpxml(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    live = guest.running and "--inactive" not in flags and guest.live is not None
    source = guest.live if live else guest.definition
    assert source is not None
    domain = copy.deepcopy(source)
    if live:
        domain.attrib = {"type": domain.get("type", "kvm"), "id": str(guest.domid),
                         **{k: v for k, v in domain.attrib.items() if k != "type"}}  # fmt: skip
    return Done(out=serialize(domain) + "\n\n")


def _metadata(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    """`metadata [--live|--config] [--remove] DOMAIN URI`: read or drop our own elements."""
    if not words:
        return Done(1, err="error: command 'metadata' requires <uri> option\n")
    if "--live" in flags and not guest.running:
        return _error(NOT_RUNNING)
    use_live = guest.running and "--config" not in flags
    domain = guest.live if use_live else guest.definition
    metadata = domain.find("metadata") if domain is not None else None
    prefix = f"{{{words[0]}}}"
    found = [e for e in metadata if e.tag.startswith(prefix)] if metadata is not None else []
    if "--remove" in flags:
        for element in found:
            assert metadata is not None
            metadata.remove(element)
        return Done(out="Metadata removed\n\n")
    if not found:
        return _error("metadata not found: Requested metadata element is not present")
    element = copy.deepcopy(found[0])
    for node in element.iter():
        node.tag = node.tag.rpartition("}")[2]
        node.tail = None
        node.text = node.text.strip() if node.text and node.text.strip() else None
    ET.indent(element)
    return Done(out=ET.tostring(element, encoding="unicode").replace(" />", "/>") + "\n\n")


def _domuuid(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    return Done(out=f"{guest.uuid}\n\n")


def _domname(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    return Done(out=f"{guest.name}\n\n")


def _autostart(host: Hypervisor, guest: Guest, flags: set[str], words: list[str]) -> Done:
    guest.autostart = "--disable" not in flags
    marked = "marked" if guest.autostart else "unmarked"
    return Done(out=f"Domain '{guest.name}' {marked} as autostarted\n\n")


COMMANDS: dict[str, Command] = {
    "domstate": _domstate,
    "dominfo": _dominfo,
    "domuuid": _domuuid,
    "domname": _domname,
    "start": _start,
    "destroy": _destroy,
    "shutdown": _shutdown,
    "reset": _reset,
    "reboot": _reboot,
    "inject-nmi": _inject_nmi,
    "dumpxml": _dumpxml,
    "metadata": _metadata,
    "autostart": _autostart,
}
