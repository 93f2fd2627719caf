// /jobs/{id} of a running job: the API's event stream updates each task's row in place and the
// progress count; "Cancel job" goes through the API. A finished job's page is static.
"use strict";

(() => {
  const FINISHED = new Set(["succeeded", "failed", "timeout", "cancelled", "lost", "skipped"]);

  function setState(node, status) {
    node.textContent = status;
    node.className = `state state-${status}`;
  }

  function start(root) {
    const id = root.dataset.job;
    const rows = new Map([...root.querySelectorAll("tr[data-device]")].map((row) => [row.dataset.device, row]));
    const cancel = document.getElementById("job-cancel");
    let source = null;

    function progress() {
      const done = [...rows.values()].filter((row) => FINISHED.has(row.querySelector("[data-field=status]").textContent)).length;
      root.querySelector("[data-done]").textContent = done;
    }

    function applyTask(task) {
      const row = rows.get(task.device);
      if (!row) return;
      setState(row.querySelector("[data-field=status]"), task.status);
      row.querySelector("[data-field=power_state]").textContent = task.power_state || "";
      row.querySelector("[data-field=path]").textContent = task.path || "";
      row.querySelector("[data-field=message]").textContent = task.message || "";
    }

    function applyJob(job) {
      setState(root.querySelector("[data-job-status]"), job.status);
      (job.tasks || []).forEach(applyTask);
      if (job.finished_at) {
        const when = document.createElement("time");
        when.dateTime = job.finished_at;
        when.textContent = new Date(job.finished_at).toLocaleString();
        when.title = job.finished_at;
        root.querySelector("[data-finished]").replaceChildren(when);
      }
      progress();
      if (job.status !== "running") finish();
    }

    function finish() {
      if (source) source.close();
      source = null;
      if (cancel) cancel.hidden = true;
    }

    async function reread() {
      try {
        applyJob(await Rackhand.api("GET", `/api/v1/jobs/${encodeURIComponent(id)}`));
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
    source.addEventListener("task", (event) => {
      applyTask(JSON.parse(event.data));
      progress();
    });
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
