"""/jobs and /jobs/{id} without a browser: who sees which job, a finished job rendered without
a stream or a cancel button, and wrong filters said on the page."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tests.factories import device, ok
from tests.web.test_device_list import as_browser, seed_people


def _finished_job(client: TestClient) -> str:
    """A job on node1 (no power path: its task fails at once), as the admin asked it."""
    body = {"select": "node1", "action": "on", "ticket": "INC-7", "reason": "smoke test"}
    job = ok(client.post("power", json=body), 202)
    deadline = time.monotonic() + 20
    while ok(client.get(f"jobs/{job['id']}"))["status"] == "running":
        assert time.monotonic() < deadline, "the job did not end"
        time.sleep(0.05)
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
