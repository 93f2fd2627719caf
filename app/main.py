"""The central service's ASGI application, built by `create_app(settings)`."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import timedelta
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.requests import HTTPConnection
from starlette.types import Scope
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from agents.agent import Driver
from agents.protocol import HostKeySeen
from app import errors
from app.audit.recorder import AuditRecorder
from app.audit.routes import router as audit_router
from app.audit.service import Event
from app.centrals.folder import DataFolderLock
from app.centrals.presence import Presence
from app.config import Settings
from app.consoles import service as consoles_service
from app.consoles.broker import ConsoleBroker, Timeouts
from app.consoles.routes import router as consoles_router
from app.context import RequestContext
from app.datafiles import secure_data_dir
from app.db import make_engine, make_sessionmaker
from app.error_body import ERROR_RESPONSES, error_response
from app.exports import Exports
from app.fleetlink.hub import AgentHub
from app.fleetlink.link import LinkServer
from app.fleetlink.routes import router as agents_router
from app.health.fleet import AT_ONCE as HEALTH_READS_AT_ONCE
from app.health.poller import HealthPoller
from app.health.routes import router as health_router
from app.identity.auth import CsrfFailed, check_credential
from app.identity.logins import LoginFailed, Logins
from app.identity.rejections import RefusalLog, Rejection
from app.identity.routes import router as identity_router
from app.identity.service import bootstrap_admin
from app.identity.throttle import LoginThrottle
from app.identity.usage import TokenUse
from app.inventory.routes import router as inventory_router
from app.jobs.actions import Runtime, power_one
from app.jobs.engine import JobEngine
from app.jobs.poller import PowerPoller
from app.jobs.routes import router as jobs_router
from app.jobs.spill import FILE_NAME as SPILL_FILE
from app.limits import BodyLimit, Refusal
from app.query_params import QueryGuard
from app.uow import unit_of_work
from app.vault import load_vault
from app.virtualization.routes import router as virtualization_router
from app.virtualization.syncer import GuestSyncer
from app.web.dashboard import install_dashboard
from app.web.docs import install_docs
from app.web.pages import error_page, is_page
from app.webhooks.destinations import Destinations, Resolver, system_resolver
from app.webhooks.routes import router as webhooks_router
from app.webhooks.sender import Policy, WebhookSender

log = logging.getLogger(__name__)
API = "/api/v1"

STATUS: dict[type[errors.RackhandError], int] = {
    errors.Unauthenticated: 401,
    LoginFailed: 401,
    errors.Forbidden: 403,
    CsrfFailed: 403,
    errors.Hidden: 404,
    errors.TooManyAttempts: 429,
    errors.TooManyExports: 429,
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.InUse: 409,
    errors.AmbiguousReference: 400,
    errors.UnknownParameter: 400,
    errors.OverLimit: 400,
    errors.ForgedCursor: 400,
    errors.InvalidInput: 422,
    errors.ImportRejected: 422,
    errors.ConfigError: 500,
    errors.DeviceUnavailable: 502,
}


def _status(exc: errors.RackhandError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 400


def _describe(errors_: Sequence[Mapping[str, Any]]) -> str:
    """Field paths and messages only: inputs may hold secrets and are never echoed."""
    parts = []
    for error in errors_[:5]:
        loc = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
        parts.append(f"{loc}: {error['msg']}" if loc else str(error["msg"]))
    more = f" (and {len(errors_) - 5} more)" if len(errors_) > 5 else ""
    return "; ".join(parts) + more


BUSY_RETRY_AFTER = 5  # s
# PostgreSQL's lock_not_available and query_canceled (a lock_timeout or statement_timeout)
BUSY_SQLSTATES = {"55P03", "57014"}


def _busy(exc: Exception) -> bool:
    """A database that waited too long for a lock or a connection: a state that passes, not a
    bug, so the caller is told to try again (503) rather than shown an internal error."""
    if isinstance(exc, PoolTimeout):
        return True
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return code in BUSY_SQLSTATES or "database is locked" in str(orig)


def _answer(request: Request, status: int, kind: str, detail: str, **extra: Any) -> Response:
    """The error body for the API; for a dashboard page, a page saying the same."""
    if is_page(request):
        return error_page(request, status, detail)
    return error_response(status, kind, detail, **extra)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(errors.RackhandError)
    async def domain_error(request: Request, exc: errors.RackhandError) -> Response:
        if isinstance(exc, errors.Refused) and isinstance(exc.event, Event | Rejection):
            await request.app.state.refusals.record(exc.event)
        extra = {"errors": exc.errors} if isinstance(exc, errors.ImportRejected) else {}
        kind = getattr(exc, "kind", type(exc).__name__)
        response = _answer(request, _status(exc), kind, str(exc), **extra)
        if isinstance(exc, errors.Unauthenticated | LoginFailed):
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, errors.TooManyAttempts | errors.TooManyExports):
            response.headers["Retry-After"] = str(exc.retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def request_invalid(request: Request, exc: RequestValidationError) -> Response:
        return _answer(request, 422, "ValidationError", _describe(exc.errors()))

    @app.exception_handler(ValidationError)
    async def data_invalid(request: Request, exc: ValidationError) -> Response:
        found = exc.errors(include_input=False, include_url=False)
        return _answer(request, 422, "ValidationError", _describe(found))

    @app.exception_handler(IntegrityError)
    async def integrity(_: Request, exc: IntegrityError) -> JSONResponse:
        log.info("integrity error: %s", exc.orig.__class__.__name__)
        return error_response(
            409, "Conflict", "the change collides with another one made at the same time; retry"
        )

    @app.exception_handler(OperationalError)
    @app.exception_handler(PoolTimeout)
    async def database_busy(request: Request, exc: Exception) -> Response:
        if not _busy(exc):
            return await unexpected(request, exc)
        log.warning("database busy on %s %s: %s", request.method, request.url.path, exc)
        response = _answer(
            request,
            503,
            "DatabaseBusy",
            "the database is busy (locked by another writer, or out of connections); nothing "
            "was changed, try again in a few seconds",
        )
        response.headers["Retry-After"] = str(BUSY_RETRY_AFTER)
        return response

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        return _answer(request, exc.status_code, kind, str(exc.detail))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _answer(
            request, 500, "InternalError", "an unexpected error; it is logged on the server"
        )


async def _bootstrap(app: FastAPI, settings: Settings) -> None:
    """First start: the `admin` user, with a password printed once if none was given."""
    password = settings.admin_password.get_secret_value() if settings.admin_password else None
    async with unit_of_work(app.state.write_sessions) as session:
        generated = await bootstrap_admin(session, password)
    if generated is not None:
        print(
            f"\n  Created the user 'admin' with password: {generated}\n"
            "  (RACKHAND_ADMIN_PASSWORD chooses it; change it with `rackhand passwd -u admin`)\n",
            file=sys.stderr,
            flush=True,
        )


def _holding(
    lock: DataFolderLock,
    held: bool,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
) -> Callable[[FastAPI], AbstractAsyncContextManager[None]]:
    """The lifespan, inside the data folder's lock (taken here unless the caller holds it)."""

    @asynccontextmanager
    async def holding(app: FastAPI) -> AsyncIterator[None]:
        if not held:
            lock.acquire()  # before anything is read or written: one central per data folder
        try:
            async with lifespan(app):
                yield
        finally:
            if not held:
                lock.release()

    return holding


def create_app(
    settings: Settings | None = None,
    drivers: Mapping[str, Driver] | None = None,
    resolver: Resolver = system_resolver,
    *,
    folder_lock: DataFolderLock | None = None,
) -> FastAPI:
    """Build the app; the engine and the vault are opened by the lifespan, not here.

    `drivers` replaces the built-in agent's device drivers (tests use the fake one),
    `resolver` the DNS lookups of webhook deliveries (tests answer for their own names), and
    `folder_lock` is the data folder's lock when the caller took it already (`rackhand serve`).
    """
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(secure_data_dir, settings.data_dir)
        engine = make_engine(settings.database_url)
        app.state.settings = settings
        app.state.engine = engine
        app.state.sessions = make_sessionmaker(engine)
        app.state.write_sessions = make_sessionmaker(engine, write=True)
        app.state.audit = AuditRecorder(app.state.write_sessions)
        app.state.exports = Exports(
            settings.exports_per_caller, settings.exports_at_once, settings.export_stall_seconds
        )
        refusals = app.state.refusals = RefusalLog(app.state.audit)
        refusals.start()
        app.state.logins = Logins(app.state.sessions, app.state.write_sessions, LoginThrottle())
        app.state.vault = load_vault(settings)
        await _bootstrap(app, settings)
        presence = app.state.presence = Presence(
            app.state.write_sessions, interval=settings.heartbeat_seconds
        )
        await presence.beat()  # peers see this central before it owns anything
        app.state.token_use = TokenUse(app.state.write_sessions)

        async def pin_host_key(seen: HostKeySeen, sites: set[str]) -> None:
            async with unit_of_work(app.state.write_sessions) as session:
                await consoles_service.pin_host_key(session, seen, sites)

        silence = timedelta(seconds=3 * settings.agent_heartbeat_seconds)
        agents = app.state.agents = AgentHub(
            app.state.write_sessions, app.state.audit, pin_host_key, silence=silence,
            drivers=drivers, grace=settings.agent_report_grace_seconds,
        )  # fmt: skip
        await agents.start(
            workers=settings.start_workers, refresh_every=settings.agent_heartbeat_seconds
        )
        app.state.agent_links = LinkServer(
            app.state.write_sessions,
            agents,
            app.state.audit,
            refusals,
            presence.id,
            heartbeat=settings.agent_heartbeat_seconds,
        )
        jobs = app.state.jobs = JobEngine(
            app.state.write_sessions, presence, agents, spill=settings.data_dir / SPILL_FILE
        )
        await jobs.replay()  # outcomes an earlier life spilled beat `lost`
        await jobs.recover()  # tasks of centrals that are gone; live ones keep theirs
        runtime = Runtime(app.state.write_sessions, app.state.vault, jobs)

        async def console_power(ctx: RequestContext, device: str, action: str) -> dict[str, Any]:
            result = await power_one(runtime, ctx, device, action)
            return result.model_dump(mode="json")

        consoles = app.state.consoles = ConsoleBroker(
            app.state.write_sessions,
            app.state.audit,
            app.state.vault,
            settings.data_dir,
            presence,
            agents,
            console_power,
            Timeouts(
                idle=settings.console_idle_seconds,
                max_length=settings.console_max_seconds,
                linger=settings.console_linger_seconds,
            ),
        )
        await consoles.recover()
        consoles.start()
        poller = app.state.poller = PowerPoller(
            app.state.sessions, app.state.write_sessions, app.state.vault, agents
        )
        if settings.poll_power:
            poller.start()
        destinations = Destinations(settings.webhook_allow_networks)
        app.state.webhook_destinations = destinations
        webhooks = app.state.webhooks = WebhookSender(
            app.state.sessions,
            app.state.write_sessions,
            app.state.vault,
            Policy.from_settings(settings),
            destinations,
            resolver,
        )
        webhooks.start()
        syncer = app.state.guest_syncer = GuestSyncer(
            app.state.sessions, app.state.write_sessions, app.state.vault, agents
        )
        if settings.poll_power:
            syncer.start()
        slots = app.state.health_slots = asyncio.Semaphore(HEALTH_READS_AT_ONCE)
        health = app.state.health_poller = HealthPoller(
            app.state.sessions,
            app.state.write_sessions,
            app.state.vault,
            agents,
            slots,
            delay=settings.health_first_poll_seconds,
        )
        if settings.poll_health:
            health.start()
        presence.start([jobs.recover, consoles.recover])  # a peer that dies is noticed later too
        try:
            yield
        finally:
            await poller.stop()
            await syncer.stop()
            await health.stop()
            await consoles.close_all()
            await agents.close()
            await poller.close()
            await jobs.close()
            await webhooks.stop()
            await refusals.close()
            await app.state.token_use.close()
            await app.state.audit.close()
            await presence.stop()
            await engine.dispose()

    app = FastAPI(
        title="Rackhand",
        summary="Remote hands for data-center fleets",
        version="0.1.0",
        openapi_url=f"{API}/openapi.json",
        docs_url=None,  # install_docs serves it, with Swagger UI from Rackhand, not a CDN
        redoc_url=None,
        lifespan=_holding(
            folder_lock or DataFolderLock(settings.data_dir), folder_lock is not None, lifespan
        ),
        dependencies=[Depends(QueryGuard())],
        responses=ERROR_RESPONSES,
    )

    async def authenticate(scope: Scope) -> Refusal | None:
        """For the body limit: does the request carry a working credential (audited if not)?"""
        try:
            await check_credential(app.state.sessions, HTTPConnection(scope))
        except errors.Refused as exc:
            if isinstance(exc.event, Event | Rejection):
                await app.state.refusals.record(exc.event)
            return Refusal(_status(exc), getattr(exc, "kind", type(exc).__name__), str(exc))
        return None

    app.add_middleware(
        BodyLimit,
        default=settings.max_body_bytes,
        larger={"/devices/import": settings.max_import_bytes},
        authenticate=authenticate,
    )
    if settings.trusted_proxies:  # outermost: every layer below sees the client's address
        app.add_middleware(ProxyHeadersMiddleware, trusted_hosts=settings.trusted_proxies)
    _install_error_handlers(app)
    app.include_router(identity_router, prefix=API)
    app.include_router(inventory_router, prefix=API)
    app.include_router(audit_router, prefix=API)
    app.include_router(jobs_router, prefix=API)
    app.include_router(consoles_router, prefix=API)
    app.include_router(webhooks_router, prefix=API)
    app.include_router(agents_router, prefix=API)
    app.include_router(virtualization_router, prefix=API)
    app.include_router(health_router, prefix=API)
    install_docs(app, docs_url=f"{API}/docs", openapi_url=f"{API}/openapi.json")
    install_dashboard(app)

    @app.get(f"{API}/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """The process is up."""
        return {"status": "ok"}

    @app.get(f"{API}/readyz", tags=["ops"])
    async def readyz(request: Request) -> JSONResponse:
        """The database answers."""
        try:
            async with request.app.state.engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
        except Exception:  # any database failure means "not ready", never a 500
            log.warning("readiness check: database unreachable", exc_info=True)
            return error_response(503, "NotReady", "the database does not answer")
        return JSONResponse({"status": "ready"})

    return app
