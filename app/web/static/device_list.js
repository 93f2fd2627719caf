// /devices: tick rows (or take the whole search), preview with the API's dry run, confirm in a
// <dialog>, and send the request through the REST API; its answer names the job to follow.
"use strict";

(() => {
  const SHOWN = 200; // device names listed in the confirmation

  function bulkTargets() {
    const node = document.getElementById("bulk-targets");
    return node ? JSON.parse(node.textContent) : null;
  }

  function ticked() {
    return [...document.querySelectorAll("#results input.pick-row:checked")];
  }

  function requestKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  function plural(count, word) {
    return `${count.toLocaleString()} ${word}${count === 1 ? "" : "s"}`;
  }

  function wire(bulk) {
    const dialog = document.getElementById("bulk-dialog");
    const form = document.getElementById("bulk-form");
    const preview = document.getElementById("bulk-preview");
    const picker = document.getElementById("bulk-action");
    const matching = bulk.querySelector("[data-scope-matching]");
    const error = document.getElementById("bulk-error");
    let pending = null; // what Confirm will send

    function refresh() {
      const rows = [...document.querySelectorAll("#results input.pick-row")];
      const count = ticked().length;
      bulk.querySelector("[data-selected-count]").textContent = count;
      const all = document.getElementById("select-page");
      if (all) {
        all.checked = rows.length > 0 && count === rows.length;
        all.indeterminate = count > 0 && count < rows.length;
      }
      const summary = document.getElementById("results-summary");
      bulk.querySelector("[data-matching-count]").textContent = summary ? summary.dataset.matched : "";
      const targets = bulkTargets();
      matching.disabled = targets === null;
      matching.closest("label").title = targets === null
        ? "a text search or the reachability filter cannot be sent as a bulk request; tick rows or use a node range"
        : "";
      if (matching.disabled && matching.checked) bulk.querySelector("input[value=selected]").checked = true;
    }

    function wireResults() {
      const all = document.getElementById("select-page");
      if (all) {
        all.addEventListener("change", () => {
          document.querySelectorAll("#results input.pick-row").forEach((box) => { box.checked = all.checked; });
          refresh();
        });
      }
      document.querySelectorAll("#results input.pick-row").forEach((box) => box.addEventListener("change", refresh));
      refresh();
    }

    function show(text, names, sites, warning) {
      dialog.querySelector("[data-summary]").textContent = text;
      dialog.querySelector("[data-sites]").textContent = sites;
      const list = document.getElementById("bulk-devices");
      list.replaceChildren(...names.slice(0, SHOWN).map((name) => {
        const item = document.createElement("li");
        item.textContent = name;
        return item;
      }));
      if (names.length > SHOWN) {
        const more = document.createElement("li");
        more.textContent = `and ${(names.length - SHOWN).toLocaleString()} more`;
        list.append(more);
      }
      const warn = document.getElementById("bulk-warning");
      warn.textContent = warning;
      warn.hidden = !warning;
      error.hidden = true;
      dialog.showModal();
      document.getElementById("bulk-ticket").focus();
    }

    function siteList(sites) {
      return "At " + Object.entries(sites).map(([slug, count]) => `${slug} (${count.toLocaleString()})`).join(", ") + ".";
    }

    async function openPreview() {
      const [kind, action] = picker.value.split(":");
      const scope = bulk.querySelector("input[name=scope]:checked").value;
      const rows = ticked();
      if (scope === "selected" && rows.length === 0) {
        Rackhand.notify("Tick at least one device, or choose all devices matching the search.", "error");
        return;
      }
      document.getElementById("stagger-box").hidden = !(kind === "power" && (action === "on" || action === "cycle"));
      document.getElementById("persistent-box").hidden = kind !== "boot";
      if (kind === "boot") {
        if (scope !== "selected") {
          Rackhand.notify("Boot changes apply to ticked devices: tick the rows to change.", "error");
          return;
        }
        const names = rows.map((box) => box.value);
        const sites = {};
        rows.forEach((box) => { sites[box.dataset.site] = (sites[box.dataset.site] || 0) + 1; });
        pending = { kind, action, names, key: requestKey() };
        show(`Boot from ${action}: ${plural(names.length, "device")}.`, names, siteList(sites), "");
        return;
      }
      const targets = scope === "selected" ? { select: rows.map((box) => box.value).join(",") } : bulkTargets();
      let dry;
      try {
        dry = await Rackhand.api("POST", "/api/v1/power", { ...targets, action, dry_run: true });
      } catch (failure) {
        Rackhand.notify(failure.message, "error");
        return;
      }
      pending = { kind, action, targets, key: requestKey() };
      const notes = [];
      if (dry.skipped.length) notes.push(`Skipped (no power path): ${dry.skipped.join(", ")}.`);
      const failing = dry.without_power_path.filter((name) => !dry.skipped.includes(name));
      if (failing.length) notes.push(`Will fail (no power path): ${failing.join(", ")}.`);
      show(`Power ${action}: ${plural(dry.total, "device")}.`, dry.devices, siteList(dry.sites), notes.join(" "));
    }

    async function confirm() {
      if (!pending) return;
      const fields = Rackhand.formJson(form);
      const common = { ticket: fields.ticket, reason: fields.reason };
      const button = document.getElementById("bulk-confirm");
      button.disabled = true;
      button.setAttribute("aria-busy", "true");
      error.hidden = true;
      try {
        if (pending.kind === "power") {
          const body = { ...pending.targets, action: pending.action, ...common };
          if (!document.getElementById("stagger-box").hidden && fields.stagger) body.stagger = fields.stagger;
          const job = await Rackhand.api("POST", "/api/v1/power", body, { "Idempotency-Key": pending.key });
          location.assign(`/jobs/${encodeURIComponent(job.id)}`);
          return;
        }
        const jobs = [];
        for (const name of pending.names) {
          const body = { device: pending.action, persistent: fields.persistent, wait: 0, ...common };
          const key = `${pending.key}-${jobs.length}`;
          const done = await Rackhand.api("POST", `/api/v1/devices/${encodeURIComponent(name)}/boot`, body, { "Idempotency-Key": key });
          jobs.push(done.job);
        }
        location.assign(jobs.length === 1 ? `/jobs/${encodeURIComponent(jobs[0])}` : `/jobs?action=${encodeURIComponent(pending.action)}`);
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        if (/ticket/i.test(failure.message)) document.getElementById("bulk-ticket").focus();
      } finally {
        button.disabled = false;
        button.removeAttribute("aria-busy");
      }
    }

    preview.addEventListener("click", openPreview);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      confirm();
    });
    document.getElementById("bulk-cancel").addEventListener("click", () => dialog.close());
    dialog.addEventListener("close", () => {
      pending = null;
      preview.focus();
    });
    document.addEventListener("htmx:afterSwap", (event) => {
      if (event.detail.target.id === "results") wireResults();
    });
    wireResults();
  }

  // A new search's results are announced: the table itself is too long for a live region.
  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target.id !== "results") return;
    const said = event.detail.target.querySelector("#results-summary, [role=alert]");
    document.getElementById("results-status").textContent = said ? said.textContent.trim() : "";
  });

  document.addEventListener("DOMContentLoaded", () => {
    const bulk = document.getElementById("bulk");
    if (bulk) wire(bulk);
  });
})();
