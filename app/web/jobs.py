"""`/jobs` and `/jobs/{id}`: power and boot jobs as GET /jobs answers them to the viewer; a
running job follows the API's event stream in the browser, and is cancelled through the API.
A job's page shows its counts and a bounded list of tasks (the API lists them all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Query
from starlette.responses import Response

from agents.protocol import FINISHED, BootDevice, PowerAction, TaskStatus
from app.errors import AmbiguousReference, InvalidInput, NotFound
from app.jobs import listing, service
from app.jobs.models import JobStatus
from app.jobs.schemas import JobRead
from app.web.pages import ViewerDep, link, page_router

router = page_router()
PAGE = 50
SHOWN = 500  # tasks listed on a job's page, at any job size
Text = Annotated[str, Query(max_length=200)]


@dataclass
class JobSearch:
    """The list's filters as given (text, so a wrong one is shown back with its message)."""

    ticket: str = ""
    actor: str = ""
    site: str = ""
    device: str = ""
    action: str = ""
    status: str = ""

    def filters(self) -> dict[str, str]:
        return {name: value for name, value in vars(self).items() if value}

    def link(self, **more: str) -> str:
        return link("/jobs", self.filters() | more)

    def job_filter(self) -> listing.JobFilter:
        """The service's filter; a wrong action or status is said as the API would."""
        actions = {*PowerAction, *BootDevice}
        if self.action and self.action not in actions:
            raise InvalidInput(f"action: use one of {', '.join(sorted(actions))}")
        try:
            status = JobStatus(self.status) if self.status else None
        except ValueError:
            raise InvalidInput(f"status: use one of {', '.join(JobStatus)}") from None
        return listing.JobFilter(
            ticket=self.ticket or None,
            actor=self.actor or None,
            site=self.site or None,
            device=self.device or None,
            action=self.action or None,
            status=status,
        )


@router.get("/jobs")
async def job_list(
    viewer: ViewerDep,
    ticket: Text = "",
    actor: Text = "",
    site: Text = "",
    device: Text = "",
    action: Text = "",
    status: Text = "",
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> Response:
    """Newest first, a page at a time; a wrong filter is said on the page, with the form."""
    search = JobSearch(ticket.strip(), actor.strip(), site.strip(), device.strip(), action, status)
    jobs: list[JobRead] = []
    next_cursor, error, code = None, None, 200
    try:
        found, next_cursor = await listing.list_jobs(
            viewer.session, viewer.ctx, search.job_filter(), limit=PAGE, cursor=cursor
        )
        jobs = await service.read_jobs(viewer.session, found)
    except (NotFound, InvalidInput, AmbiguousReference) as exc:
        error = str(exc)
        code = 404 if isinstance(exc, NotFound) else 422 if type(exc) is InvalidInput else 400
    return viewer.render(
        "jobs.html",
        code,
        search=search,
        jobs=jobs,
        error=error,
        next_cursor=next_cursor,
        later_page=cursor is not None,
        actions=[*PowerAction, *BootDevice],
        statuses=list(JobStatus),
        notable=[status for status in TaskStatus if status is not TaskStatus.SUCCEEDED],
    )


@router.get("/jobs/{job_id}")
async def job_page(viewer: ViewerDep, job_id: str) -> Response:
    """One job: its counts per status and at most SHOWN tasks, those still going and those that
    went wrong first; a job the viewer may not see is a 404, as in the API."""
    job = await service.get_job(viewer.session, viewer.ctx, job_id)
    read = await service.read_job(viewer.session, job, with_tasks=False)
    tasks = await service.first_tasks(viewer.session, job, limit=SHOWN)
    running = read.status is JobStatus.RUNNING
    may_cancel = running and await service.may_cancel(viewer.session, viewer.ctx, job)
    return viewer.render(
        "job.html",
        job=read,
        tasks=tasks,
        done=sum(read.counts.get(status, 0) for status in FINISHED),
        statuses=list(TaskStatus),
        finished=sorted(FINISHED),
        job_ended=[status for status in JobStatus if status is not JobStatus.RUNNING],
        running=running,
        may_cancel=may_cancel,
    )
