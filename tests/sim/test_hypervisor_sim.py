"""The simulated hypervisor host against real clients (asyncssh, OpenSSH's ssh): xl and virsh.

Output is parsed as Rackhand's drivers parse it (JSON from `xl list -l`), errors carry xl's
and virsh's words and exit statuses, and the consoles carry the guest firmware's bytes.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncssh
import pytest

from sim import virsh
from sim.domain import Toolstack
from sim.fleet import add_guests
from sim.hypervisor import AUTO, Hypervisor, parse_cfg
from sim.machine import Power, Timing
from sim.ssh import host_key, public_line
from tests.sim.aio import run, until
from tests.sim.fleet import PASSWORD, launch, openssh

USER = "root"
FAST = Timing(on_delay=0.0, cycle_off=0.05, soft_delay=0.2, post_seconds=0.3)
Client = asyncssh.SSHClientProcess[bytes]


@asynccontextmanager
async def serving(dialect: str = "xl", **keys: asyncssh.SSHKey) -> AsyncIterator[Hypervisor]:
    """A host with `web` (running, autostart) and `db` (stopped) of each of its toolstacks."""
    host = Hypervisor(
        "hv1",
        dialect,
        {USER: PASSWORD},
        host_key("hv1"),
        authorized_keys=keys.values(),
        timing=FAST,
    )
    for stack in sorted(host.toolstacks):
        suffix = "" if len(host.toolstacks) == 1 else f"-{stack}"
        host.add_guest(f"web{suffix}", stack, running=True, autostart=True, memory_mib=1024)
        host.add_guest(f"db{suffix}", stack, vcpus=2, boot="dc")
    await host.start("127.0.0.1", 0)
    try:
        yield host
    finally:
        await host.close()


def connect(host: Hypervisor, key: asyncssh.SSHKey | None = None) -> asyncssh.SSHClientConnection:
    trusted = asyncssh.import_public_key(public_line(host.key))
    return asyncssh.connect(  # type: ignore[return-value]
        "127.0.0.1",
        host.port,
        username=USER,
        password=None if key else PASSWORD,
        client_keys=[key] if key else None,
        known_hosts=([trusted], [], []),
        agent_path=None,
    )


async def execute(
    conn: asyncssh.SSHClientConnection, command: str, stdin: str | None = None
) -> asyncssh.SSHCompletedProcess:
    return await conn.run(command, input=stdin, check=False)


def test_xl_list_long_is_libxl_json_with_domain_0_and_the_running_domains_only() -> None:
    async def scenario() -> None:
        async with serving() as host, connect(host) as conn:
            done = await execute(conn, "xl list -l")
            assert done.exit_status == 0
            domains = json.loads(str(done.stdout))
            assert next(d["domid"] for d in domains) == 0
            names = [d["config"]["c_info"]["name"] for d in domains]
            assert names == ["Domain-0", "web"]  # db has a config file, no domain
            web = domains[1]["config"]
            assert web["c_info"] == {
                "type": "hvm",
                "name": "web",
                "uuid": host.guest("web").uuid,
                "run_hotplug_scripts": "True",
            }
            assert web["b_info"]["max_memkb"] == 1024 * 1024
            assert web["b_info"]["max_vcpus"] == 1
            assert domains[1]["domid"] == host.guest("web").domid

    run(scenario)


def test_xl_list_table_create_and_the_config_files() -> None:
    async def scenario() -> None:
        async with serving() as host, connect(host) as conn:
            table = str((await execute(conn, "xl list")).stdout).splitlines()
            assert (
                table[0]
                == "Name                                        ID   Mem VCPUs\tState\tTime(s)"
            )
            assert table[1].startswith("Domain-0                                     0 ")
            assert table[2].split()[:4] == ["web", str(host.guest("web").domid), "1024", "1"]
            assert table[2].split()[4] in ("r-----", "-b----")
            listing = await execute(conn, "ls -1 /etc/xen/*.cfg /etc/xen/auto/")
            assert str(listing.stdout).split() == ["/etc/xen/db.cfg", "/etc/xen/web.cfg", "web.cfg"]
            cfg = parse_cfg(str((await execute(conn, "cat /etc/xen/db.cfg")).stdout))
            assert cfg["uuid"] == host.guest("db").uuid
            assert (cfg["name"], cfg["type"], cfg["boot"], cfg["vcpus"]) == ("db", "hvm", "dc", "2")
            created = await execute(conn, "xl create /etc/xen/db.cfg")
            assert created.exit_status == 0
            assert created.stderr == "Parsing config from /etc/xen/db.cfg\n"
            domid = host.guest("db").domid
            assert domid is not None
            assert host.guest("db").machine.power is Power.ON
            assert (await execute(conn, "xl domid db")).stdout == f"{domid}\n"
            again = await execute(conn, "xl create /etc/xen/db.cfg")
            assert again.exit_status == 1
            assert 'domain with name "db" already exists' in str(again.stderr)
            uptime = str((await execute(conn, "xl uptime")).stdout).splitlines()
            assert uptime[0].split() == ["Name", "ID", "Uptime"]
            assert len(uptime) == 4

    run(scenario)


def test_xl_power_commands_change_the_domains() -> None:
    async def scenario() -> None:
        async with serving() as host, connect(host) as conn:
            web = host.guest("web")
            domid = str(web.domid)
            assert (await execute(conn, f"xl trigger {domid} nmi")).exit_status == 0
            assert web.machine.counters["diag"] == 1
            assert (await execute(conn, "xl trigger web reset")).exit_status == 0
            assert web.machine.counters["reset"] == 1
            assert web.domid == int(domid)
            bad = await execute(conn, "xl trigger web kick")
            assert (bad.exit_status, bad.stderr) == (1, 'Invalid trigger "kick"\n')
            rebooted = await execute(conn, "xl reboot web")  # the guest's own: a new domain
            assert (rebooted.exit_status, rebooted.stderr) == (0, f"Rebooting domain {domid}\n")
            assert web.domid not in (None, int(domid))
            domid = str(web.domid)
            down = await execute(conn, f"xl shutdown {domid}")
            assert (down.exit_status, down.stderr) == (0, f"Shutting down domain {domid}\n")
            await until(lambda: host.guest("web").domid is None)  # on_poweroff = "destroy"
            await execute(conn, "xl create /etc/xen/web.cfg")
            assert (await execute(conn, "xl destroy web")).exit_status == 0
            assert host.guest("web").domid is None
            assert web.machine.power is Power.OFF

    run(scenario)


def test_xl_errors_are_worded_as_xl_words_them() -> None:
    async def scenario() -> None:
        async with serving() as host, connect(host) as conn:
            unknown = await execute(conn, "xl destroy nosuch")
            assert (unknown.exit_status, unknown.stdout) == (1, "")
            assert unknown.stderr == "nosuch is an invalid domain identifier (rc=-6)\n"
            stopped = await execute(conn, "xl shutdown db")  # a config file is no domain
            assert stopped.stderr == "db is an invalid domain identifier (rc=-6)\n"
            by_id = await execute(conn, "xl destroy 99")
            assert by_id.exit_status == 1
            assert "destroy failed (rc=-21)" in str(by_id.stderr)
            dom0 = await execute(conn, "xl destroy 0")
            assert dom0.stderr == "Cannot destroy privileged domain 0.\n\n"
            missing = await execute(conn, "xl create /etc/xen/nosuch.cfg")
            assert missing.exit_status == 1
            assert "Failed to read config file: /etc/xen/nosuch.cfg" in str(missing.stderr)
            assert (await execute(conn, "xl domid nosuch")).stderr == (
                "Can't get domid of domain name 'nosuch', maybe this domain does not exist.\n"
            )
            assert (await execute(conn, "xl destroy")).exit_status == 2
            virsh = await execute(conn, "virsh list --all")  # an xl-only host
            assert (virsh.exit_status, virsh.stderr) == (127, "bash: virsh: command not found\n")

    run(scenario)


def test_tee_writes_a_config_file_and_grep_reads_them_all() -> None:
    async def scenario() -> None:
        async with serving() as host, connect(host) as conn:
            text = 'name = "new"\ntype = "hvm"\nboot = "n"\n'
            written = await execute(conn, "tee -- /etc/xen/new.cfg", text)
            assert (written.exit_status, written.stdout) == (0, text)
            assert host.files["/etc/xen/new.cfg"] == text
            refused = await execute(conn, "tee /etc/passwd", "x")
            assert refused.exit_status == 1
            pattern = "'^[[:space:]]*(name|boot)[[:space:]]*='"
            found = await execute(conn, f"grep -R -H -s -E --include=*.cfg {pattern} /etc/xen")
            lines = str(found.stdout).splitlines()
            assert f'{AUTO}/web.cfg:name = "web"' in lines  # the autostart link, followed
            assert '/etc/xen/new.cfg:boot = "n"' in lines
            assert len(lines) == 8
            assert (await execute(conn, "xl create /etc/xen/new.cfg")).exit_status == 0
            assert host.guest("new").machine.boot_log[-1].device == "pxe"

    run(scenario)


def test_xl_console_carries_the_firmware_and_ctrl_close_bracket_detaches() -> None:
    async def scenario() -> None:
        async with serving() as host, connect(host) as conn:
            web = host.guest("web")
            process: Client = await conn.create_process(
                f"xl console {web.domid}", term_type="xterm", encoding=None
            )
            await until(lambda: bool(web.consoles))
            await execute(conn, "xl trigger web reset")
            seen = await read_until(process, b"web login: ")
            assert b"Rackhand SimBIOS" in seen
            assert b"Booting from Hard Disk" in seen
            process.stdin.write(b"root")
            assert (await read_until(process, b"root")).endswith(b"root")  # echoed by the guest
            process.stdin.write(b"\x1d")
            await asyncio.wait_for(process.wait_closed(), 5)
            assert process.exit_status == 0
            assert not web.consoles

    run(scenario)


async def read_until(process: Client, wanted: bytes, seen: bytes = b"") -> bytes:
    async with asyncio.timeout(10):
        while wanted not in seen:
            chunk = await process.stdout.read(4096)
            assert chunk, f"EOF before {wanted!r}: {seen!r}"
            seen += chunk
    return seen


def test_the_virsh_subset_follows_virsh() -> None:
    async def scenario() -> None:
        async with serving("libvirt") as host, connect(host) as conn:
            web, db = host.guest("web"), host.guest("db")
            uri = "virsh -c qemu:///system"
            uuids = await execute(conn, f"{uri} list --all --uuid")
            assert uuids.stdout == f"{web.uuid}\n{db.uuid}\n\n"
            assert (await execute(conn, f"{uri} list --all --name")).stdout == "web\ndb\n\n"
            state = await execute(conn, f"{uri} domstate --reason {db.uuid}")
            assert state.stdout == "shut off (unknown)\n\n"
            info = str((await execute(conn, f"{uri} dominfo web")).stdout)
            assert "State:          running\n" in info
            assert "Autostart:      enable\n" in info
            assert (await execute(conn, f"{uri} domuuid db")).stdout == f"{db.uuid}\n\n"
            assert (await execute(conn, f"{uri} domname {db.uuid}")).stdout == "db\n\n"
            assert (await execute(conn, f"{uri} start db")).stdout == "Domain 'db' started\n\n"
            again = await execute(conn, f"{uri} start db")
            assert (again.exit_status, again.stdout) == (1, "\n")
            assert again.stderr == "error: Domain is already active\n"
            assert db.machine.boot_log[-1].device == "cdrom"  # boot = "dc": the CD first
            for verb, said in [("reset", "was reset"), ("reboot", "is being rebooted"),
                               ("destroy", "destroyed")]:  # fmt: skip
                done = await execute(conn, f"{uri} {verb} db")
                assert done.stdout == f"Domain 'db' {said}\n\n"
            assert (await execute(conn, f"{uri} domstate --reason db")).stdout == (
                "shut off (destroyed)\n\n"
            )
            assert (await execute(conn, f"{uri} shutdown db")).exit_status == 1
            assert (await execute(conn, f"{uri} inject-nmi web")).exit_status == 0
            assert web.machine.counters["diag"] == 1
            marked = await execute(conn, f"{uri} autostart --disable web")
            assert marked.stdout == "Domain 'web' unmarked as autostarted\n\n"
            unknown = await execute(conn, f"{uri} domstate nosuch")
            assert (unknown.exit_status, unknown.stderr) == (
                1,
                "error: failed to get domain 'nosuch'\n",
            )
            wrong = await execute(conn, "virsh -c xen:///system list")
            assert wrong.exit_status == 1
            assert "failed to connect" in str(wrong.stderr)
            assert (await execute(conn, "xl list")).exit_status == 127

    run(scenario)


def test_virsh_define_from_stdin_changes_the_next_start_only() -> None:
    async def scenario() -> None:
        async with serving("libvirt") as host, connect(host) as conn:
            web = host.guest("web")
            xml = str((await execute(conn, f"virsh dumpxml --inactive {web.uuid}")).stdout)
            assert "<boot dev='hd'/>" in xml
            assert " id=" not in xml
            live = str((await execute(conn, f"virsh dumpxml {web.uuid}")).stdout)
            assert f"<domain type='kvm' id='{web.domid}'>" in live
            edited = xml.replace("<boot dev='hd'/>", "<boot dev='network'/>\n    <boot dev='hd'/>")
            defined = await execute(conn, "virsh define /dev/stdin", edited)
            assert defined.stdout == "Domain 'web' defined from /dev/stdin\n\n"
            assert web.definition is not None
            assert (web.boot, virsh.boot_order(web.definition)) == ("c", ("nc", False))
            assert "<boot dev='hd'/>" in str((await execute(conn, "virsh dumpxml web")).stdout)
            await execute(conn, "virsh destroy web")
            await execute(conn, "virsh start web")
            assert web.machine.boot_log[-1].device == "pxe"
            broken = await execute(conn, "virsh define /dev/stdin", "<domain>")
            assert broken.exit_status == 1
            assert str(broken.stderr).startswith("error: Failed to define domain from /dev/stdin")

    run(scenario)


def test_virsh_lists_and_domstats_as_the_libvirt_driver_reads_them() -> None:
    async def scenario() -> None:
        async with serving("libvirt") as host, connect(host) as conn:
            web, db = host.guest("web"), host.guest("db")
            both = await execute(conn, "virsh list --all --uuid --name")
            assert both.stdout == f"{web.uuid} web\n{db.uuid} db\n\n"
            auto = await execute(conn, "virsh list --all --autostart --uuid")
            assert auto.stdout == f"{web.uuid}\n\n"
            table = str((await execute(conn, "virsh list --all")).stdout).splitlines()
            assert table[0] == " Id   Name   State"
            assert table[2:] == [f" {web.domid}    web    running", " -    db     shut off", ""]
            stats = await execute(conn, "virsh domstats --state --vcpu --balloon")
            assert str(stats.stdout).split("\n\n")[1].splitlines() == [
                "Domain: 'db'",
                "  state.state=5",
                "  state.reason=0",
                "  vcpu.current=2",
                "  vcpu.maximum=2",
                "  balloon.current=524288",
                "  balloon.maximum=524288",
            ]
            await execute(conn, "virsh destroy web")
            state = str((await execute(conn, "virsh domstats --state web")).stdout)
            assert state == "Domain: 'web'\n  state.state=5\n  state.reason=2\n\n"

    run(scenario)


def test_virsh_metadata_lives_in_the_definition_and_is_copied_at_start() -> None:
    ns = "https://rackhand.dev/xmlns/boot"

    async def scenario() -> None:
        async with serving("libvirt") as host, connect(host) as conn:
            web = host.guest("web")
            missing = await execute(conn, f"virsh metadata --live web {ns}")
            assert missing.stderr == (
                "error: metadata not found: Requested metadata element is not present\n"
            )
            xml = str((await execute(conn, "virsh dumpxml --inactive web")).stdout)
            mark = f"<metadata><r:boot xmlns:r='{ns}'><r:dev dev='hd'/></r:boot></metadata>"
            menu = "<bootmenu enable='yes' timeout='10000'/>"
            edited = xml.replace("</vcpu>", f"</vcpu>{mark}").replace("</os>", f"{menu}</os>")
            assert (await execute(conn, "virsh define /dev/stdin", edited)).exit_status == 0
            assert (await execute(conn, f"virsh metadata --live web {ns}")).exit_status == 1
            stored = await execute(conn, f"virsh metadata --config web {ns}")
            assert stored.stdout == '<boot>\n  <dev dev="hd"/>\n</boot>\n\n'
            assert "  <metadata>\n    <ns0:boot xmlns:ns0=" in str(
                (await execute(conn, "virsh dumpxml --inactive web")).stdout
            )  # stored in libvirt's own layout
            await execute(conn, "virsh destroy web")
            assert (await execute(conn, f"virsh metadata --live web {ns}")).stderr == (
                "error: Requested operation is not valid: domain is not running\n"
            )
            await execute(conn, "virsh start web")
            assert web.machine.boot_log[-1].device == "bios"  # the boot menu: setup, here
            assert (await execute(conn, f"virsh metadata --live web {ns}")).exit_status == 0
            removed = await execute(conn, f"virsh metadata --live --remove web {ns}")
            assert removed.stdout == "Metadata removed\n\n"
            assert (await execute(conn, f"virsh metadata --live web {ns}")).exit_status == 1
            assert (await execute(conn, f"virsh metadata --config web {ns}")).exit_status == 0

    run(scenario)


def test_virsh_console_needs_a_tty_says_connected_and_force_takes_it_over() -> None:
    async def scenario() -> None:
        async with serving("libvirt") as host, connect(host) as conn:
            web = host.guest("web")
            plain = await execute(conn, f"virsh console --force {web.uuid}")
            assert plain.stderr == (
                "error: Cannot run interactive console without a controlling TTY\n"
            )
            first: Client = await conn.create_process(
                f"virsh -c qemu:///system console --force {web.uuid}",
                term_type="xterm",
                encoding=None,
            )
            banner = await read_until(first, b"(Ctrl + ])\r\n")
            assert banner == b"Connected to domain 'web'\r\nEscape character is ^] (Ctrl + ])\r\n"
            busy = await conn.run(
                f"virsh console {web.uuid}", term_type="xterm", check=False, encoding=None
            )
            assert isinstance(busy.stdout, bytes)
            assert b"Active console session exists for this domain" in busy.stdout
            second: Client = await conn.create_process(
                f"virsh console --force {web.uuid}", term_type="xterm", encoding=None
            )
            await read_until(second, b"(Ctrl + ])\r\n")
            await asyncio.wait_for(first.wait_closed(), 5)  # the forced console took over
            await execute(conn, "virsh reset web")
            assert b"Rackhand SimBIOS" in await read_until(second, b"Rackhand SimBIOS")
            stopped = await execute(conn, "virsh destroy web")
            assert stopped.exit_status == 0
            await asyncio.wait_for(second.wait_closed(), 5)

    run(scenario)


def test_both_toolstacks_on_one_host_and_a_public_key_login() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")

    async def scenario() -> None:
        async with serving("xl+libvirt", key=key) as host:
            assert host.dialect == "xl+libvirt"
            async with connect(host, key) as conn:
                xl = json.loads(str((await execute(conn, "xl list -l")).stdout))
                assert [d["config"]["c_info"]["name"] for d in xl] == ["Domain-0", "web-xl"]
                names = await execute(conn, "virsh list --all --name")
                assert names.stdout == "web-libvirt\ndb-libvirt\n\n"
            stranger = asyncssh.generate_private_key("ssh-ed25519")
            with pytest.raises(asyncssh.PermissionDenied):
                async with connect(host, stranger):
                    pass
            assert host.logins == 1

    run(scenario)


def test_openssh_runs_xl_with_its_exit_status_and_a_console_on_a_tty(tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    key_file = tmp_path / "id_ed25519"
    key.write_private_key(key_file)
    key_file.chmod(0o600)

    async def scenario() -> None:
        async with serving(key=key) as host:
            command, env = openssh(tmp_path, host.port, USER, public_line(host.key), PASSWORD)
            listing = await asyncio.to_thread(
                subprocess.run, [*command, "xl", "list", "-l"], env=env, capture_output=True
            )
            assert listing.returncode == 0, listing.stderr
            assert json.loads(listing.stdout)[1]["config"]["c_info"]["name"] == "web"
            failed = await asyncio.to_thread(
                subprocess.run, [*command, "xl destroy nosuch"], env=env, capture_output=True
            )
            assert failed.returncode == 1
            assert failed.stderr.endswith(b"nosuch is an invalid domain identifier (rc=-6)\n")
            swap = {  # ssh takes the first value of an option: replace, not append
                "PreferredAuthentications=password": "PreferredAuthentications=publickey",
                "PubkeyAuthentication=no": "PubkeyAuthentication=yes",
            }
            with_key = [swap.get(part, part) for part in command[:-1]]
            with_key += ["-o", "IdentitiesOnly=yes", "-i", str(key_file), command[-1]]
            web = host.guest("web")
            ssh = await asyncio.create_subprocess_exec(
                *with_key, "-tt", "xl", "console", "web",
                env={k: v for k, v in env.items() if not k.startswith("SSH_ASKPASS")},
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                start_new_session=True,
            )  # fmt: skip
            assert ssh.stdin is not None
            assert ssh.stdout is not None
            try:
                await until(lambda: bool(web.consoles) or ssh.returncode is not None, within=10)
                assert web.consoles, await ssh.communicate()
                host.run("xl trigger web reset")
                seen = await asyncio.wait_for(ssh.stdout.readuntil(b"web login: "), 10)
                assert b"Rackhand SimBIOS" in seen
                ssh.stdin.write(b"\x1d")
                await asyncio.wait_for(ssh.wait(), 10)
                assert ssh.returncode == 0
            finally:
                if ssh.returncode is None:
                    ssh.kill()
                    await ssh.wait()

    run(scenario)


def test_sessions_beyond_max_sessions_are_refused_as_sshd_refuses_them() -> None:
    async def scenario() -> None:
        async with serving() as host, connect(host) as conn:
            host.max_sessions = 3
            web = host.guest("web")
            consoles = [
                await conn.create_process(f"xl console {web.domid}", encoding=None)
                for _ in range(3)
            ]
            with pytest.raises(asyncssh.ChannelOpenError):
                await execute(conn, "xl list")
            for console in consoles[:2]:
                console.stdin.write(b"\x1d")
                await asyncio.wait_for(console.wait_closed(), 5)
            await until(lambda: len(web.consoles) == 1)
            # One at a time: the console, a command, and one that just ended (sshd counts it
            # for a moment too) stay within the limit
            for _ in range(20):
                assert (await execute(conn, "xl list")).exit_status == 0

    run(scenario)


def test_python_m_sim_starts_hypervisors_with_guests() -> None:
    fleet = launch(1, "--hypervisors", "2", "--hypervisor-guests", "4",
                   "--hypervisor-dialect", "xl,libvirt")  # fmt: skip
    try:
        devices = fleet.control.wiring()["devices"]
        assert [(d["name"], d["kind"], d["dialect"]) for d in devices] == [
            ("hv1", "hypervisor", "xl"),
            ("hv2", "hypervisor", "libvirt"),
        ]
        assert [g["name"] for g in devices[0]["guests"]] == [f"hv1-vm0{n}" for n in range(1, 5)]
        state = fleet.control.request({"op": "guest", "hypervisor": "hv2", "guest": "hv2-vm01"})
        assert state["state"]["domid"] is not None  # the first half runs
        state = fleet.control.request({"op": "guest", "hypervisor": "hv2", "guest": "hv2-vm04"})
        assert state["state"]["domid"] is None
    finally:
        assert fleet.stop() == 0


def test_guests_of_a_fleet_host_keep_their_uuids() -> None:
    first = Hypervisor("hv7", "xl", {USER: PASSWORD}, host_key("hv7"))
    second = Hypervisor("hv7", "xl", {USER: PASSWORD}, host_key("hv7"))
    add_guests(first, 3)
    add_guests(second, 3)
    assert [g.uuid for g in first.guests.values()] == [g.uuid for g in second.guests.values()]
    assert {g.toolstack for g in first.guests.values()} == {Toolstack.XL}
    assert os.path.basename(next(iter(first.links))) == "hv7-vm01.cfg"
