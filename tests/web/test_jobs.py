"""/jobs and /jobs/{id} without a browser: who sees which job, a finished job rendered without
a stream or a cancel button, wrong filters said on the page, a big job's page bounded, the job
list's counts in one query, and the cancel button shown by the API's own rule."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, insert, select
from sqlalchemy.engine import Engine

from agents.protocol import FINISHED, TaskStatus
from app.identity.auth import CSRF_COOKIE, CSRF_HEADER
from app.inventory.models import Site
from app.jobs.models import Job, JobKind, JobStatus, Task
from app.web import jobs as job_pages
from tests.conftest import ADMIN_PASSWORD
from tests.factories import device, ok
from tests.live import until
from tests.web.test_device_list import as_browser, seed_people


def _finished_job(client: TestClient) -> str:
    """A job on node1 (no power path: its task fails at once), as the admin asked it."""
    body = {"select": "node1", "action": "on", "ticket": "INC-7", "reason": "smoke test"}
    job = ok(client.post("power", json=body), 202)
    until(lambda: ok(client.get(f"jobs/{job['id']}"))["status"] != "running", "the job to end")
    return str(job["id"])


def test_jobs_are_shown_to_those_who_may_see_them(client: TestClient) -> None:
    seed_people(client)
    device(client, "node1")
    job_id = _finished_job(client)
    olga = as_browser(client, "olga")
    listed = olga.get("/jobs")
    assert listed.status_code == 200
    assert f'href="/jobs/{job_id}"' in listed.text
    assert "INC-7" in listed.text
    page = olga.get(f"/jobs/{job_id}")
    assert page.status_code == 200
    assert ">node1<" in page.text
    assert "smoke test" in page.text
    assert "INC-7" in page.text
    assert 'data-running="false"' in page.text
    assert "job.js" not in page.text
    assert "Cancel job" not in page.text
    assert "<span data-done>1</span> of 1 devices done" in page.text
    sam = as_browser(client, "sam")
    assert f"/jobs/{job_id}" not in sam.get("/jobs").text
    hidden = sam.get(f"/jobs/{job_id}")
    assert hidden.status_code == 404
    assert "Not found" in hidden.text
    missing = sam.get("/jobs/0123456789abcdef")
    assert missing.status_code == 404
    assert hidden.text.replace(job_id, "X") == missing.text.replace("0123456789abcdef", "X")


def test_wrong_job_filters_are_said_on_the_page(client: TestClient) -> None:
    seed_people(client)
    pages = as_browser(client, "olga")
    wrong = pages.get("/jobs", params={"status": "sleeping"})
    assert wrong.status_code == 422
    assert "status: use one of" in wrong.text
    assert pages.get("/jobs", params={"action": "explode"}).status_code == 422
    hidden = pages.get("/jobs", params={"site": "sh-br12"})
    assert hidden.status_code == 404
    assert "no site &#39;sh-br12&#39;" in hidden.text
    assert pages.get("/jobs", params={"cursor": "forged"}).status_code == 400


def _job(client: TestClient, tasks: dict[str, tuple[str, TaskStatus]], **fields: Any) -> str:
    """A job row and its tasks ({device: (site slug, status)}) as the engine leaves them, written
    directly: a page's rendering needs no rack, and a running one no engine."""
    job_id = uuid.uuid4().hex

    async def write() -> None:
        async with client.app.state.write_sessions() as session:  # type: ignore[attr-defined]
            slugs = {slug for slug, _ in tasks.values()}
            found = await session.execute(select(Site.slug, Site.id).where(Site.slug.in_(slugs)))
            site_ids = dict(found.all())
            row = {
                "id": job_id,
                "kind": JobKind.POWER,
                "action": "cycle",
                "status": JobStatus.RUNNING,
                "targets": {"select": "many"},
                "total": len(tasks),
                "actor_kind": "user",
                "actor_name": "admin",
            } | fields
            session.add(Job(**row))
            await session.flush()
            await session.execute(
                insert(Task),
                [
                    {
                        "job_id": job_id,
                        "device_id": None,
                        "device_name": name,
                        "site_id": site_ids[slug],
                        "site": slug,
                        "exclusive": True,
                        "status": status,
                        "message": "",
                        "attempts": 0,
                    }
                    for name, (slug, status) in tasks.items()
                ],
            )
            await session.commit()

    client.portal.call(write)  # type: ignore[union-attr]
    return job_id


def test_a_big_job_s_page_counts_all_and_lists_the_first(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The page lists SHOWN tasks (picked by the database: still going, then failed, then the
    rest), counts all of them per status, and points to the API for the whole list."""
    seed_people(client)
    statuses = [TaskStatus.SUCCEEDED] * 4 + [
        TaskStatus.FAILED,
        TaskStatus.QUEUED,
        TaskStatus.RUNNING,
        TaskStatus.TIMEOUT,
    ]
    tasks = {f"n{n}": ("bj-dc1", status) for n, status in enumerate(statuses)}
    job_id = _job(client, tasks)
    monkeypatch.setattr(job_pages, "SHOWN", 3)
    answer = as_browser(client, "admin", ADMIN_PASSWORD).get(f"/jobs/{job_id}")
    assert answer.status_code == 200
    page = answer.text
    rows = re.findall(r'<tr data-device="(n\d)">', page)
    assert rows == ["n5", "n6", "n4"]  # queued n5, running n6; then failed n4 (before timeout n7)
    assert "Showing 3 of 8 tasks" in page
    assert f"GET /api/v1/jobs/{job_id}" in page
    assert "<span data-done>6</span> of 8 devices done" in page
    counted = dict(re.findall(r'<li data-count="(\w+)">.*?<span data-number>(\d+)</span>', page))
    assert counted == {
        "queued": "1",
        "running": "1",
        "succeeded": "4",
        "failed": "1",
        "timeout": "1",
    }
    assert '<li data-count="lost" hidden>' in page
    # The final statuses come from the server's enums; job.js keeps no copy of them.
    finished = " ".join(sorted(FINISHED))
    assert f'data-finished-tasks="{finished}"' in page
    assert 'data-ended-jobs="succeeded failed partial cancelled"' in page
    script = (Path(job_pages.__file__).parent / "static" / "job.js").read_text()
    assert not any(f'"{status}"' in script for status in TaskStatus)


@contextmanager
def _task_counts_queries() -> Iterator[list[str]]:
    """The grouped count queries of tasks sent to the database while inside."""
    sent: list[str] = []

    def seen(*args: Any) -> None:
        statement = str(args[2])
        if "FROM task" in statement and "count(" in statement:
            sent.append(statement)

    event.listen(Engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(Engine, "before_cursor_execute", seen)


def test_the_job_list_counts_a_page_of_jobs_in_one_query(client: TestClient) -> None:
    seed_people(client)
    for n in range(3):
        _job(
            client,
            {f"a{n}": ("bj-dc1", TaskStatus.SUCCEEDED), f"b{n}": ("bj-dc1", TaskStatus.FAILED)},
            status=JobStatus.PARTIAL,
        )
    with _task_counts_queries() as sent:
        listed = ok(client.get("jobs"))["items"]
    assert len(sent) == 1
    assert [job["counts"] for job in listed] == [{"succeeded": 1, "failed": 1}] * 3
    pages = as_browser(client, "admin", ADMIN_PASSWORD)
    with _task_counts_queries() as sent:
        page = pages.get("/jobs")
    assert len(sent) == 1
    assert page.text.count('2 <small class="muted">(1 failed)</small>') == 3


def test_the_cancel_button_follows_the_api_s_rule(client: TestClient) -> None:
    """Cancelling takes an operator at every site of the job: olga (operator at bj-dc1) gets
    the button on a bj-dc1 job; on her own job that also reaches sh-br12 she gets none, and the
    API refuses her too. A viewer gets none."""
    seed_people(client)
    here = _job(client, {"node1": ("bj-dc1", TaskStatus.RUNNING)})
    both = _job(
        client,
        {"node2": ("bj-dc1", TaskStatus.RUNNING), "br-web01": ("sh-br12", TaskStatus.QUEUED)},
        actor_name="olga",
    )
    olga = as_browser(client, "olga")
    assert 'id="job-cancel"' in olga.get(f"/jobs/{here}").text
    mixed = olga.get(f"/jobs/{both}")
    assert mixed.status_code == 200
    assert 'data-running="true"' in mixed.text
    assert 'id="job-cancel"' not in mixed.text
    refused = olga.post(f"/api/v1/jobs/{both}/cancel", headers=_csrf(olga))
    assert refused.status_code == 404
    vera = as_browser(client, "vera")
    assert 'id="job-cancel"' not in vera.get(f"/jobs/{here}").text


def _csrf(client: TestClient) -> dict[str, str]:
    return {CSRF_HEADER: client.cookies.get(CSRF_COOKIE) or ""}
