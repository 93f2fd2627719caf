"""Power and boot requests, from checks to launch: the job is committed before any device I/O.

Each call here runs its own short transaction (no transaction is held while devices answer),
then hands the orders to the job engine and, for one device, waits for its result.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from agents.protocol import PowerAction, PowerState, Report, TaskStatus
from app.context import RequestContext
from app.errors import InvalidInput
from app.fleetlink.paths import BOOT_PATHS, POWER_PATHS
from app.inventory.models import Site
from app.jobs import service
from app.jobs.engine import JobEngine
from app.jobs.models import Job, JobKind
from app.jobs.schemas import ActionResult, BulkPowerRequest, DryRun, JobRead
from app.uow import unit_of_work
from app.vault import Vault

DESTRUCTIVE = frozenset({PowerAction.OFF, PowerAction.SOFT, PowerAction.CYCLE, PowerAction.RESET,
                         PowerAction.NMI})  # fmt: skip
TARGET_FIELDS = frozenset(
    {"select", "site", "rack", "kind", "tags", "status", "power_state", "health"}
)


@dataclasses.dataclass(frozen=True)
class Runtime:
    """What an action needs besides the request: the database, the secrets, the engine."""

    sessions: async_sessionmaker[AsyncSession]
    vault: Vault
    engine: JobEngine


async def _site_policy(
    session: AsyncSession, ctx: RequestContext, site_ids: set[int], what: str
) -> None:
    for site_id in sorted(site_ids):
        site = await session.get(Site, site_id)
        if site is not None:
            ctx.require_ticket(site.slug, site.require_ticket, what)


def _destructive(plan: service.Plan) -> bool:
    return plan.kind is JobKind.BOOT or PowerAction(plan.action) in DESTRUCTIVE


async def act_on_device(
    run: Runtime, ctx: RequestContext, ref: str, plan: service.Plan, wait: float
) -> tuple[ActionResult, bool]:
    """One device's power or boot action and its result; False when `wait` ran out first."""
    async with unit_of_work(run.sessions) as session:
        target = await service.device_target(session, ctx, ref, plan.kind, plan.action)
        plan = dataclasses.replace(plan, targets=[target], asked={"device": target.name})
        if _destructive(plan):
            await _site_policy(session, ctx, {target.site_id}, f"{plan.kind} {plan.action}")
        kinds, what, paths = (
            (BOOT_PATHS, "boot", "an ipmi, redfish or libvirt")
            if plan.kind is JobKind.BOOT
            else (POWER_PATHS, "power", "an ipmi, redfish, pdu_outlet or libvirt")
        )
        if await service.without_power_path(session, [target], kinds):
            raise InvalidInput(
                f"{target.name} has no {what} path; add {paths} control path "
                f"(POST /api/v1/devices/{target.name}/paths)"
            )
        job = await service.replay(session, ctx, plan)
        if job is not None:
            read = await service.read_job(session, job)
            assert read.tasks
            task = read.tasks[0]
            result = _result(
                job, task.device, task.status, task.power_state, task.path, task.message
            )
            return result, task.status not in (TaskStatus.QUEUED, TaskStatus.RUNNING)
        job, task_ids = await service.create_job(session, ctx, plan, run.engine.owner)
        orders = await service.orders_for(session, run.vault, plan, job, task_ids)
    task_id = str(task_ids[0])
    waiter = run.engine.waiter(task_id)
    run.engine.launch(ctx, job, orders)
    try:
        report: Report = await asyncio.wait_for(asyncio.shield(waiter), wait)
    except TimeoutError:
        run.engine.forget(task_id, waiter)
        message = f"still running after {wait:g} s; follow GET /api/v1/jobs/{job.id}"
        return _result(job, target.name, TaskStatus.RUNNING, None, None, message), False
    done = _result(job, target.name, report.status, report.power_state, report.path, report.message)
    return done, True


def _result(
    job: Job,
    device: str,
    status: TaskStatus,
    power_state: PowerState | None,
    path: str | None,
    message: str,
) -> ActionResult:
    return ActionResult(
        device=device,
        action=job.action,
        status=status,
        power_state=power_state,
        path=path,
        message=message,
        job=job.id,
    )


async def power_many(
    run: Runtime, ctx: RequestContext, body: BulkPowerRequest, idempotency_key: str | None
) -> JobRead | DryRun:
    """Every device the selector and filters match, as one job (or what it would be)."""
    async with unit_of_work(run.sessions) as session:
        targets = await service.bulk_targets(session, ctx, body, body.action)
        if body.max_targets is not None and len(targets) > body.max_targets:
            raise InvalidInput(
                f"the selector matches {len(targets)} devices, more than max_targets "
                f"{body.max_targets}; narrow it or raise max_targets"
            )
        pathless = await service.without_power_path(session, targets)
        # Named by the node range, a device without a power path fails; picked by a filter
        # (site, rack, tag...), it is skipped: a site's PDUs and console servers are no failure.
        skipped = [] if body.select is not None else pathless
        if body.dry_run:
            return DryRun(
                action=body.action,
                total=len(targets),
                sites=dict(sorted(Counter(target.site for target in targets).items())),
                devices=[target.name for target in targets],
                without_power_path=[target.name for target in pathless],
                skipped=[target.name for target in skipped],
            )
        if len(skipped) == len(targets):
            raise InvalidInput(
                f"none of the {len(targets)} devices the filters match has a power path (ipmi, "
                "redfish, pdu_outlet or libvirt); add one, or narrow the filters (e.g. kind=server)"
            )
        plan = service.Plan(
            JobKind.POWER,
            body.action,
            targets,
            body.model_dump(include=set(TARGET_FIELDS), exclude_defaults=True, mode="json"),
            body.timeout,
            stagger=body.stagger,
            idempotency_key=idempotency_key,
            skipped=frozenset(target.device_id for target in skipped),
        )
        if _destructive(plan):
            sites = {target.site_id for target in plan.acting}
            await _site_policy(session, ctx, sites, f"power {body.action}")
        job = await service.replay(session, ctx, plan)
        if job is not None:
            return await service.read_job(session, job, with_tasks=False)
        job, task_ids = await service.create_job(session, ctx, plan, run.engine.owner)
        orders = await service.orders_for(session, run.vault, plan, job, task_ids)
        read = await service.read_job(session, job, with_tasks=False)
    run.engine.launch(ctx, job, orders)
    return read


async def power_one(run: Runtime, ctx: RequestContext, device: str, action: str) -> ActionResult:
    """A power action asked from a console: the same job, checks and audit as the API's."""
    try:
        chosen = PowerAction(action)
    except ValueError:
        choices = ", ".join(PowerAction)
        raise InvalidInput(f"unknown power action {action!r}; use one of {choices}") from None
    plan = service.Plan(JobKind.POWER, chosen, [], {}, 30.0)
    result, _ = await act_on_device(run, ctx, device, plan, wait=60.0)
    return result
