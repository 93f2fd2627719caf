"""HTTP routes of virtualization: a hypervisor's guest sync, and its guests."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app.deps import SessionDep, own_transactions
from app.identity.auth import Ctx
from app.uow import unit_of_work
from app.virtualization import guests, service
from app.virtualization.schemas import GuestRead, SyncResult

router = APIRouter(tags=["virtualization"])


@router.post("/devices/{device}/sync")
@own_transactions
async def sync_guests(request: Request, ctx: Ctx, device: str, dry_run: bool = False) -> SyncResult:
    """List the hypervisor's domains (through an agent of its site) and create, update or mark
    gone its `vm` devices; `dry_run` says what would change and changes nothing."""
    state = request.app.state
    async with unit_of_work(state.sessions) as session:
        host = await service.host_for(session, ctx, state.vault, device)
    listed = await service.ask(state.agents, host)  # no transaction while the host answers
    async with unit_of_work(state.write_sessions) as session:
        result = await service.apply(session, ctx, host, listed, dry_run=dry_run)
        if dry_run:
            await session.rollback()
    return result


@router.get("/devices/{device}/guests")
async def list_guests(session: SessionDep, ctx: Ctx, device: str) -> list[GuestRead]:
    """The guests the hypervisor's syncs found, gone ones last."""
    return await guests.of_host(session, ctx, device)


@router.get("/devices/{device}/guest")
async def read_guest(session: SessionDep, ctx: Ctx, device: str) -> GuestRead:
    """The domain behind a `vm` device, as its host's last sync described it."""
    return await guests.of_vm(session, ctx, device)
