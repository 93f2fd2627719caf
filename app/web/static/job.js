// /jobs/{id} of a running job: the API's event stream keeps a running tally of the tasks per
// status (the page shows at most a few hundred rows of a job of any size) and updates the row of
// the task an event names, if it is shown; "Cancel job" goes through the API. A finished job's
// page is static. Which statuses are final comes from the server (data-finished-tasks and
// data-ended-jobs), not a copy here.
"use strict";

(() => {
  function words(text) {
    return new Set((text || "").split(" ").filter(Boolean));
  }

  function setState(node, status) {
    node.textContent = status;
    node.className = `state state-${status}`;
  }

  function start(root) {
    const id = root.dataset.job;
    const FINISHED = words(root.dataset.finishedTasks);
    const ENDED = words(root.dataset.endedJobs);
    const rows = new Map([...root.querySelectorAll("tr[data-device]")].map((row) => [row.dataset.device, row]));
    const cancel = document.getElementById("job-cancel");
    const counts = new Map(); // status: tasks
    const known = new Map(); // device: its last status seen, so no event is counted twice
    let done = 0;
    let source = null;

    function show() {
      root.querySelector("[data-done]").textContent = done.toLocaleString();
      root.querySelectorAll("[data-count]").forEach((item) => {
        const count = counts.get(item.dataset.count) || 0;
        item.querySelector("[data-number]").textContent = count.toLocaleString();
        item.hidden = count === 0;
      });
    }

    function showRow(task) {
      const row = rows.get(task.device);
      if (!row) return;
      setState(row.querySelector("[data-field=status]"), task.status);
      row.querySelector("[data-field=power_state]").textContent = task.power_state || "";
      row.querySelector("[data-field=path]").textContent = task.path || "";
      row.querySelector("[data-field=message]").textContent = task.message || "";
    }

    // The tally starts again from a read of the job: its counts, and its tasks if it has them
    // (the stream's snapshot does; the final read asks for counts only).
    function restart(job) {
      counts.clear();
      Object.entries(job.counts).forEach(([status, count]) => counts.set(status, count));
      done = [...counts].reduce((sum, [status, count]) => sum + (FINISHED.has(status) ? count : 0), 0);
      if (job.tasks) {
        known.clear();
        job.tasks.forEach((task) => {
          known.set(task.device, task.status);
          showRow(task);
        });
      }
      show();
    }

    // One event: only its task's row and the tally change (no rescan of the table).
    function applyTask(task) {
      const before = known.get(task.device);
      if (FINISHED.has(before)) return; // a final status stays; a late event is older news
      if (before !== undefined) counts.set(before, (counts.get(before) || 1) - 1);
      counts.set(task.status, (counts.get(task.status) || 0) + 1);
      if (FINISHED.has(task.status)) done += 1;
      known.set(task.device, task.status);
      showRow(task);
      show();
    }

    function applyJob(job) {
      setState(root.querySelector("[data-job-status]"), job.status);
      if (job.counts) restart(job);
      if (job.finished_at) {
        const when = document.createElement("time");
        when.dateTime = job.finished_at;
        when.textContent = new Date(job.finished_at).toLocaleString();
        when.title = job.finished_at;
        root.querySelector("[data-finished]").replaceChildren(when);
      }
      if (ENDED.has(job.status)) finish();
    }

    function finish() {
      if (source) source.close();
      source = null;
      if (cancel) cancel.hidden = true;
    }

    async function reread() {
      try {
        applyJob(await Rackhand.api("GET", `/api/v1/jobs/${encodeURIComponent(id)}?tasks=false`));
      } catch (failure) {
        Rackhand.notify(failure.message, "error");
      }
    }

    source = new EventSource(`/api/v1/jobs/${encodeURIComponent(id)}/events`);
    source.addEventListener("job", (event) => {
      const data = JSON.parse(event.data);
      if (data.tasks) applyJob(data); // the snapshot the stream starts with
      else {
        // the end: the stream says only the final status; the job's own read has the rest
        setState(root.querySelector("[data-job-status]"), data.status);
        finish();
        reread();
      }
    });
    source.addEventListener("task", (event) => applyTask(JSON.parse(event.data)));
    source.addEventListener("closed", (event) => {
      finish();
      Rackhand.notify(JSON.parse(event.data).detail, "error");
    });
    source.addEventListener("error", () => {
      if (source && source.readyState === EventSource.CLOSED) {
        Rackhand.notify("the live updates stopped; reload the page to see the job as it is now", "error");
      }
    });

    if (cancel) {
      cancel.addEventListener("click", async () => {
        cancel.disabled = true;
        try {
          applyJob(await Rackhand.api("POST", `/api/v1/jobs/${encodeURIComponent(id)}/cancel`));
          Rackhand.notify("The job was cancelled; finished tasks keep their results.", "ok");
        } catch (failure) {
          Rackhand.notify(failure.message, "error");
        } finally {
          cancel.disabled = false;
        }
      });
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("job");
    if (root && root.dataset.running === "true") start(root);
  });
})();
