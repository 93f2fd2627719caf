// The device page's actions. Every change goes through the REST API (Rackhand.api), under
// its rules and audit: power and boot are jobs, a console is a session to go and watch.
"use strict";

(() => {
  const panel = document.getElementById("power");
  if (!panel) return;
  const name = panel.dataset.device;
  const base = `/api/v1/devices/${encodeURIComponent(name)}`;
  const result = document.getElementById("action-result");
  const stateNode = panel.querySelector("[data-power-state]");
  const whenNode = panel.querySelector("[data-power-when]");
  const buttons = () => panel.querySelectorAll("button[data-power], button[data-boot], button[data-console]");

  function busy(on) {
    buttons().forEach((button) => { button.disabled = on; });
    panel.setAttribute("aria-busy", on ? "true" : "false");
  }

  function say(kind, parts) {
    const line = document.createElement("p");
    line.className = `alert ${kind}`;
    line.append(...parts);
    result.replaceChildren(line);
  }

  function jobLink(id) {
    const link = document.createElement("a");
    link.href = `/jobs/${encodeURIComponent(id)}`;
    link.textContent = `job ${id.slice(0, 8)}`;
    return link;
  }

  function showState(state) {
    if (!state || !stateNode) return;
    stateNode.textContent = state;
    stateNode.className = `state state-${state}`;
    if (whenNode) {
      const time = document.createElement("time");
      const now = new Date();
      time.dateTime = now.toISOString();
      time.textContent = now.toLocaleString();
      whenNode.replaceChildren("read ", time, " (just now)");
    }
  }

  async function send(label, path, body) {
    busy(true);
    say("info", [`${label}: sent, waiting for ${name}…`]);
    try {
      const answer = await Rackhand.api("POST", `${base}/${path}`, body);
      const ok = answer.status === "succeeded";
      const running = answer.status === "running" || answer.status === "queued";
      const words = running ? "still running; follow the job" : answer.message || answer.status;
      say(ok ? "ok" : running ? "info" : "error",
        [`${label}: ${answer.status}. ${words} `, "(", jobLink(answer.job), ")"]);
      if (ok) showState(answer.power_state);
    } catch (failure) {
      say("error", [`${label} refused: ${failure.message}`]);
    } finally {
      busy(false);
    }
  }

  /** The shared confirmation (Rackhand.confirm), then the action with its ticket and reason. */
  async function ask(button, text, action) {
    const label = button.dataset.label;
    if (!(await Rackhand.confirm(`${label}: ${name}?`, text, label))) return;
    const fields = Rackhand.formJson(document.getElementById("confirm-form"));
    await action({ ticket: fields.ticket, reason: fields.reason });
    button.focus(); // the buttons were busy until the answer
  }

  panel.querySelectorAll("button[data-power]").forEach((button) => {
    button.addEventListener("click", () => {
      const action = button.dataset.power;
      const label = button.dataset.label;
      if (button.hasAttribute("data-confirm")) {
        ask(button, `This sends "${action}" to ${name}: a running operating system loses power or restarts.`,
          (extra) => send(label, "power", { action, ...extra }));
      } else {
        send(label, "power", { action });
      }
    });
  });

  panel.querySelectorAll("button[data-boot]").forEach((button) => {
    button.addEventListener("click", () => {
      const device = button.dataset.boot;
      const persistent = document.getElementById("boot-persistent").checked;
      const when = persistent ? "every boot from now on" : "the next boot only";
      ask(button, `${name} will boot from ${button.dataset.label} on ${when}. Power is not touched.`,
        (extra) => send(`Boot from ${button.dataset.label}`, "boot", { device, persistent, ...extra }));
    });
  });

  const consoleButton = panel.querySelector("button[data-console]");
  if (consoleButton) {
    consoleButton.addEventListener("click", async () => {
      busy(true);
      say("info", [`Opening the console of ${name}…`]);
      try {
        const session = await Rackhand.api("POST", `${base}/consoles`, { via: "auto" });
        location.assign(`/consoles/${encodeURIComponent(session.id)}`);
      } catch (failure) {
        say("error", [`Console refused: ${failure.message}`]);
        busy(false);
      }
    });
  }
})();

// A hypervisor's guest sync: a dry run first, whose plan is shown, then "Apply" runs the real
// sync and the Guests section's content is fetched again (htmx swaps it in, buttons and all).
(() => {
  const ACTIONS = { created: "create", updated: "update", gone: "mark gone", skipped: "skip" };

  const section = () => document.getElementById("guests");
  const result = () => document.getElementById("sync-result");

  function busy(on) {
    section().querySelectorAll("button[data-sync], button[data-sync-apply]")
      .forEach((button) => { button.disabled = on; });
    section().setAttribute("aria-busy", on ? "true" : "false");
  }

  const line = Rackhand.alert;

  function counts(answer, done) {
    const words = done
      ? [`${answer.created} created`, `${answer.updated} updated`, `${answer.gone} marked gone`]
      : [`${answer.created} would be created`, `${answer.updated} updated`, `${answer.gone} marked gone`];
    words.push(`${answer.unchanged} unchanged`);
    if (answer.skipped) words.push(`${answer.skipped} skipped`);
    return `${answer.listed} domain${answer.listed === 1 ? "" : "s"} listed: ${words.join(", ")}.`;
  }

  /** "state: running → shut off; vcpus: 2" (a field new to the catalogue has no before). */
  function changes(change) {
    const said = Object.entries(change.changes).map(([field, [before, after]]) =>
      before === null ? `${field}: ${after}` : `${field}: ${before} → ${after}`);
    if (change.message) said.push(change.message);
    return said.join("; ");
  }

  function plan(answer, name) {
    const rows = answer.guests.filter((change) => change.action !== "unchanged");
    const parts = [line("info", `Dry run of ${name}: ${counts(answer, false)}`)];
    if (rows.length) {
      const table = document.createElement("table");
      table.className = "striped sync-plan";
      const head = table.createTHead().insertRow();
      for (const title of ["Device", "Would", "Changes"]) {
        const cell = document.createElement("th");
        cell.scope = "col";
        cell.textContent = title;
        head.append(cell);
      }
      const body = table.createTBody();
      for (const change of rows) {
        const row = body.insertRow();
        row.dataset.change = change.action;
        row.insertCell().textContent = change.device;
        row.insertCell().textContent = ACTIONS[change.action] || change.action;
        row.insertCell().textContent = changes(change);
      }
      parts.push(table);
    }
    parts.push(Rackhand.applyOrCancel("sync"));
    return parts;
  }

  async function sync(dryRun) {
    const name = section().dataset.device;
    const url = `/api/v1/devices/${encodeURIComponent(name)}/sync?dry_run=${dryRun}`;
    busy(true);
    result().replaceChildren(line("info", `Asking ${name} for its guests…`));
    try {
      const answer = await Rackhand.api("POST", url);
      if (dryRun) {
        result().replaceChildren(...plan(answer, name));
        result().querySelector("button[data-sync-apply]").focus();
        busy(false);
        return;
      }
      await htmx.ajax("GET", `/devices/${encodeURIComponent(name)}/guests`,
        { target: "#guests", swap: "innerHTML" });
      busy(false);
      result().replaceChildren(line("ok", `Synced ${name}: ${counts(answer, true)}`));
      section().querySelector("button[data-sync]").focus();
    } catch (failure) {
      result().replaceChildren(line("error", `Sync of ${name} failed: ${failure.message}`));
      busy(false);
    }
  }

  // Delegated: the section's buttons are replaced after each sync.
  document.addEventListener("click", (event) => {
    const button = event.target.closest("#guests button");
    if (!button) return;
    if (button.hasAttribute("data-sync")) sync(true);
    else if (button.hasAttribute("data-sync-apply")) sync(false);
    else if (button.hasAttribute("data-sync-cancel")) {
      result().replaceChildren();
      section().querySelector("button[data-sync]").focus();
    }
  });
})();
