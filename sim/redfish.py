"""Simulated Redfish BMCs over HTTPS, many on consecutive TCP ports of one event loop.

`python -m sim.redfish` serves a fleet until SIGTERM, like `python -m sim` does for IPMI. All
BMCs of a fleet share one self-signed certificate, made at start, so a client pins one
fingerprint. HTTP/1.1 is parsed here by hand: the simulator must not need a web framework, and
it must be able to stay silent before the TLS handshake (the `mute` fault), which an HTTP
library does not let it do.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
import ipaddress
import json
import logging
import os
import ssl
import sys
import tempfile
from http import HTTPStatus

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from sim.fleet import machine_name, raise_fd_limit
from sim.machine import Machine, Timing
from sim.redfish_bmc import RedfishBmc, Response, error
from sim.run import until_signalled

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
MAX_BODY = 64 * 1024
HANDSHAKE_TIMEOUT = 10.0
IDLE_TIMEOUT = 60.0  # a keep-alive connection with no next request is closed after this


def self_signed(host: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key and a certificate for `host` (PEM both): BMCs ship self-signed ones."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Rackhand simulated BMC")])
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def server_context(cert_pem: bytes, key_pem: bytes) -> ssl.SSLContext:
    """The TLS context of the fleet (`ssl` loads keys from files only: a private temp dir)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as folder:
        cert_file, key_file = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
        with open(cert_file, "wb") as out:
            out.write(cert_pem)
        with open(os.open(key_file, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as out:
            out.write(key_pem)
        context.load_cert_chain(cert_file, key_file)
    return context


class RedfishFleet:
    """Running Redfish BMCs by port; `close()` drops every connection and releases the ports."""

    def __init__(self, host: str, fingerprint: str, context: ssl.SSLContext) -> None:
        self.host = host
        self.fingerprint = fingerprint  # SHA-256 of the certificate (DER), lower-case hex
        self._context = context
        self._bmcs: dict[int, RedfishBmc] = {}
        self._servers: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def ports(self) -> list[int]:
        return list(self._bmcs)

    def bmc(self, port: int) -> RedfishBmc:
        """The BMC on a port (KeyError if the fleet has none there)."""
        return self._bmcs[port]

    def machine(self, port: int) -> Machine:
        return self._bmcs[port].machine

    def url(self, port: int) -> str:
        return f"https://{self.host}:{port}"

    async def listen(self, port: int, bmc: RedfishBmc) -> None:
        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._connections.add(task)
            try:
                await self._serve(bmc, reader, writer)
            except (OSError, ssl.SSLError, EOFError, TimeoutError, ValueError) as exc:
                log.debug("BMC %s: connection ended: %r", port, exc)
            finally:
                self._connections.discard(task)
                writer.close()

        server = await asyncio.start_server(connected, self.host, port, reuse_address=True)
        self._bmcs[port] = bmc
        self._servers.append(server)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        for server in self._servers:
            await server.wait_closed()

    async def _serve(
        self, bmc: RedfishBmc, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """TLS, then requests until the client closes (or the BMC falls silent)."""
        if bmc.faults.mute:
            await _drain(reader)
            return
        await writer.start_tls(self._context, ssl_handshake_timeout=HANDSHAKE_TIMEOUT)
        while True:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IDLE_TIMEOUT)
            except asyncio.IncompleteReadError:
                return  # the client closed between requests
            except asyncio.LimitOverrunError:
                await _send(writer, error(431, "GeneralError", "Request headers too large."))
                return
            method, target, version, headers = _parse_head(head)
            length = int(headers.get("content-length", "0"))
            if not 0 <= length <= MAX_BODY:
                await _send(writer, error(413, "GeneralError", "Request body too large."))
                return
            body = await reader.readexactly(length)
            if bmc.faults.mute:
                await _drain(reader)
                return
            if bmc.faults.slow_ms:
                await asyncio.sleep(bmc.faults.slow_ms / 1000)
            answer = bmc.handle(method, target, headers, body)
            keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
            await _send(writer, answer, keep)
            if not keep:
                return


async def start_redfish_fleet(
    count: int,
    base_port: int,
    user: str = "admin",
    password: str = "password",
    *,
    host: str = "127.0.0.1",
    timing: Timing | None = None,
) -> RedfishFleet:
    """Start `count` Redfish BMCs on TCP ports base_port.., one machine each."""
    raise_fd_limit()
    cert_pem, key_pem = self_signed(host)
    der = x509.load_pem_x509_certificate(cert_pem).public_bytes(serialization.Encoding.DER)
    fleet = RedfishFleet(host, hashlib.sha256(der).hexdigest(), server_context(cert_pem, key_pem))
    try:
        for port in range(base_port, base_port + count):
            machine = Machine(timing or Timing(), name=machine_name(port))
            await fleet.listen(port, RedfishBmc(machine, {user: password}))
    except BaseException:
        await fleet.close()
        raise
    return fleet


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    """Request line and headers (names lower-cased); ValueError if it is not HTTP/1.x."""
    lines = head.decode("latin-1").split("\r\n")
    method, target, version = lines[0].split(" ")
    if not version.startswith("HTTP/1."):
        raise ValueError(f"not HTTP/1.x: {lines[0]!r}")
    headers = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    return method, target, version, headers


async def _send(writer: asyncio.StreamWriter, answer: Response, keep: bool = False) -> None:
    payload = json.dumps(answer.body).encode() if answer.body is not None else b""
    headers = {
        "OData-Version": "4.0",
        "Content-Length": str(len(payload)),
        "Connection": "keep-alive" if keep else "close",
        **answer.headers,
    }
    if payload:
        headers["Content-Type"] = "application/json; charset=utf-8"
    lines = [f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload)
    await writer.drain()


async def _drain(reader: asyncio.StreamReader) -> None:
    """Read and ignore until the client gives up: a hung BMC's TCP stack still accepts."""
    while await reader.read(65536):
        pass


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sim.redfish", description=__doc__)
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--base-port", type=int, default=18443)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user", default="admin")
    parser.add_argument("--password", default="password")
    parser.add_argument("--on-delay", type=float, default=Timing.on_delay)
    parser.add_argument("--cycle-off", type=float, default=Timing.cycle_off)
    parser.add_argument("--soft-delay", type=float, default=Timing.soft_delay)
    args = parser.parse_args(argv)
    if args.count < 1 or args.base_port < 1 or args.base_port + args.count > 65536:
        parser.error("need --count >= 1 and ports within 1-65535")
    return args


async def serve(args: argparse.Namespace) -> None:
    timing = Timing(args.on_delay, args.cycle_off, args.soft_delay)
    fleet = await start_redfish_fleet(
        args.count, args.base_port, args.user, args.password, host=args.host, timing=timing
    )
    try:
        last = args.base_port + args.count - 1
        print(f"fingerprint: {fleet.fingerprint}", flush=True)
        print(
            f"listening: {args.count} Redfish BMCs on {args.host}:{args.base_port}-{last}",
            flush=True,
        )
        await until_signalled()
    finally:
        await fleet.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    try:
        asyncio.run(serve(args))
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
