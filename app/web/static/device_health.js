// The Health section's changes, through the REST API (Rackhand.api) under its rules and audit:
// "Clear log" (operators; asks first, with a ticket and a reason), then the log is read again;
// "Copy to catalogue" (admins): a dry run first, whose changes are shown, then "Apply" copies
// and the inventory is read again. Reads themselves are htmx fragments (templates/device.html).
"use strict";

(() => {
  const section = document.getElementById("health");
  if (!section || !section.dataset.device) return;
  const name = section.dataset.device;
  const api = `/api/v1/devices/${encodeURIComponent(name)}`;
  const page = `/devices/${encodeURIComponent(name)}`;

  const line = Rackhand.alert;

  function busy(part, on) {
    part.querySelectorAll("button").forEach((button) => { button.disabled = on; });
    part.setAttribute("aria-busy", on ? "true" : "false");
  }

  /** Fetch a part again (htmx swaps it in), then say `said` in its result line. */
  async function reread(part, target, resultId, said) {
    await htmx.ajax("GET", `${page}/${part}`, { target, swap: "innerHTML" });
    const result = document.getElementById(resultId);
    if (result && said) result.replaceChildren(said);
  }

  async function clearLog(button) {
    const log = document.getElementById("event-log");
    const result = document.getElementById("clear-result");
    const text = `Every entry of ${name}'s BMC event log is removed; what it held is kept in the audit.`;
    if (!(await Rackhand.confirm(`Clear the event log of ${name}?`, text, "Clear log"))) return;
    const fields = Rackhand.formJson(document.getElementById("confirm-form"));
    const body = {};
    if (fields.ticket) body.ticket = fields.ticket;
    if (fields.reason) body.reason = fields.reason;
    busy(log, true);
    result.replaceChildren(line("info", `Clearing the event log of ${name}…`));
    try {
      const answer = await Rackhand.api("POST", `${api}/events/clear`, body);
      const count = answer.events.length;
      await reread("events", "#event-log", "clear-result",
        line("ok", `Cleared the event log of ${name}: ${count} entr${count === 1 ? "y" : "ies"} removed.`));
    } catch (failure) {
      result.replaceChildren(line("error", `Clearing the log of ${name} failed: ${failure.message}`));
      busy(log, false);
      button.focus();
    }
  }

  function plan(answer) {
    const parts = [line("info", `Dry run: copying ${name}'s FRU data would change ${answer.changes.length} field${answer.changes.length === 1 ? "" : "s"}.`)];
    if (answer.changes.length) {
      const list = document.createElement("ul");
      for (const change of answer.changes) {
        const item = document.createElement("li");
        item.dataset.change = change.field;
        item.textContent = `${change.field}: ${change.catalogue || "(empty)"} → ${change.fru}`;
        list.append(item);
      }
      parts.push(list);
    }
    parts.push(Rackhand.applyOrCancel("inventory", answer.changes.length > 0));
    return parts;
  }

  async function copy(dryRun) {
    const part = document.getElementById("inventory");
    const result = document.getElementById("copy-result");
    busy(part, true);
    result.replaceChildren(line("info", `Reading ${name}'s FRU data…`));
    try {
      const answer = await Rackhand.api("POST", `${api}/inventory/apply?dry_run=${dryRun}`);
      if (dryRun) {
        busy(part, false);
        result.replaceChildren(...plan(answer));
        result.querySelector(answer.changes.length ? "button[data-inventory-apply]" : "button[data-inventory-cancel]").focus();
        return;
      }
      const fields = answer.changes.map((change) => change.field).join(", ") || "nothing";
      await reread("inventory", "#inventory", "copy-result", null);
      Rackhand.notify(`Copied ${name}'s FRU data into the catalogue: ${fields}.`, "ok");
    } catch (failure) {
      result.replaceChildren(line("error", `Copy to catalogue of ${name} failed: ${failure.message}`));
      busy(part, false);
    }
  }

  // Delegated: the parts' buttons are replaced by each read.
  section.addEventListener("click", (event) => {
    const button = event.target.closest("button");
    if (!button) return;
    if (button.hasAttribute("data-clear-events")) clearLog(button);
    else if (button.hasAttribute("data-inventory-copy")) copy(true);
    else if (button.hasAttribute("data-inventory-apply")) copy(false);
    else if (button.hasAttribute("data-inventory-cancel")) {
      document.getElementById("copy-result").replaceChildren();
      document.querySelector("#inventory button[data-inventory-copy]").focus();
    }
  });
})();
