"""Service settings, read from `RACKHAND_*` environment variables or passed by tests."""

from __future__ import annotations

import ipaddress
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

KIB = 1024
MIB = 1024 * KIB


def _network(value: object) -> object:
    """A CIDR, with the standard library's reason when it is not one ("has host bits set")."""
    if not isinstance(value, str):
        return value
    try:
        return ip_network(value)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a network: {exc}") from None


Network = Annotated[IPv4Network | IPv6Network, BeforeValidator(_network)]


class Settings(BaseSettings):
    """Everything `rackhand serve` can be told; nothing here is read at import time."""

    model_config = SettingsConfigDict(env_prefix="RACKHAND_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("var")
    database_url: str = ""
    secret_key: SecretStr | None = None
    admin_password: SecretStr | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # Proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For names the client:
    # the audit's source_ip and the login throttle use it only from a peer listed here.
    trusted_proxies: Annotated[list[str], NoDecode] = []
    max_body_bytes: int = 1 * MIB
    max_import_bytes: int = 64 * MIB
    console_idle_seconds: float = 1800.0  # no input or output: the session closes
    console_max_seconds: float = 12 * 3600.0
    console_linger_seconds: float = 60.0  # nobody watching: the session closes
    # Console streams and job event streams check their caller's credential this often: a
    # revoked or expired token, or an ended session, closes them within it.
    stream_recheck_seconds: float = 5.0
    # Exports (audit, devices): at most this many stream at once per user and in all; a send
    # that waits longer than export_stall_seconds for the reader ends the export.
    exports_per_caller: int = Field(2, ge=1)
    exports_at_once: int = Field(8, ge=1)
    export_stall_seconds: float = Field(30.0, gt=0)
    start_workers: bool = True  # device worker processes at start (tests start them lazily)
    poll_power: bool = True  # the background power poller (tests of other things turn it off)
    poll_health: bool = True  # the health poll (sensors every site's `health_seconds`)
    health_first_poll_seconds: float = Field(30.0, ge=0)  # after the start, its first round
    # Webhook deliveries (docs/webhooks.md): one attempt, then one retry after each pause.
    webhook_retry_seconds: tuple[float, ...] = (10.0, 60.0, 300.0, 1800.0, 7200.0)
    webhook_timeout_seconds: float = 5.0  # per attempt: connect, send, first bytes back
    webhook_poll_seconds: float = 1.0  # how often the sender looks for deliveries due
    webhook_max_in_flight: int = 16  # attempts at once over every webhook
    # Internal networks webhooks may reach, a JSON list of CIDRs (`["10.20.0.0/16"]`): loopback,
    # private, link-local and other non-public addresses are refused otherwise (docs/security.md,
    # "Webhook destinations").
    webhook_allow_networks: tuple[Network, ...] = ()
    # Each central writes a heartbeat this often; one silent for three of its intervals is gone,
    # and another central (or its own next start) ends its tasks and consoles as `lost`.
    heartbeat_seconds: float = 10.0
    # Site agents (docs/agents.md) and this central beat this often on their link; a link silent
    # for three is closed and the agent shown offline.
    agent_heartbeat_seconds: float = 5.0
    # A task a site agent started and never reported the end of is ended `lost` this long
    # after its own timeout (the agent's runner keeps the timeout; this bounds a silent agent).
    agent_report_grace_seconds: float = 30.0

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: Any) -> list[str]:
        items = value.split(",") if isinstance(value, str) else value
        networks = []
        for item in items:
            text = str(item).strip()
            if not text:
                continue
            try:
                networks.append(str(ipaddress.ip_network(text)))
            except ValueError as exc:
                raise ValueError(
                    f"RACKHAND_TRUSTED_PROXIES: {text!r} is not an address or a network such as "
                    f"10.0.0.0/8 ({exc}); list the proxies themselves, never every address"
                ) from exc
        return networks

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.data_dir / 'rackhand.db'}"
        return self

    @property
    def is_embedded(self) -> bool:
        """True for the single-process SQLite default, where a generated key file is fine."""
        return self.database_url.startswith("sqlite")
