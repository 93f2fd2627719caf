// The audit page: times are typed in the viewer's zone and sent as UTC (the API's `since` and
// `until` need an offset); empty filters are left out of the URL; "Verify chain" asks the API.
"use strict";

(() => {
  const pad = (n) => String(n).padStart(2, "0");

  /** A Date as a datetime-local value, in the viewer's zone, to the second. */
  function localValue(when) {
    return `${when.getFullYear()}-${pad(when.getMonth() + 1)}-${pad(when.getDate())}` +
      `T${pad(when.getHours())}:${pad(when.getMinutes())}:${pad(when.getSeconds())}`;
  }

  function wireFilters(form) {
    for (const local of form.querySelectorAll("input[data-moment]")) {
      const hidden = form.elements[local.dataset.moment];
      const when = hidden.value ? new Date(hidden.value) : null;
      if (when && !Number.isNaN(when.getTime())) local.value = localValue(when);
    }
    form.addEventListener("submit", () => {
      for (const local of form.querySelectorAll("input[data-moment]")) {
        const hidden = form.elements[local.dataset.moment];
        const when = local.value ? new Date(local.value) : null;  // read as local time
        hidden.value = when && !Number.isNaN(when.getTime()) ? when.toISOString() : "";
      }
      // A bookmarkable URL: only the filters that say something.
      for (const field of form.elements) {
        if (field.name && field.value === "") field.disabled = true;
      }
      setTimeout(() => { for (const field of form.elements) field.disabled = false; });
    });
  }

  function verdict(result) {
    if (result.ok) return [`Chain ok: ${result.checked} events checked.`, "ok"];
    const bad = result.first_bad || {};
    const where = bad.seq != null ? `event #${bad.seq}` : "the end of the chain";
    return [`Chain broken at ${where}: ${bad.reason}. ${result.checked} events before it are intact.`, "error"];
  }

  function wireVerify(button) {
    const out = document.getElementById("verify-result");
    button.addEventListener("click", async () => {
      button.setAttribute("aria-busy", "true");
      button.disabled = true;
      out.hidden = false;
      out.className = "verify-result alert";
      out.textContent = "Verifying the chain…";
      try {
        const [text, kind] = verdict(await Rackhand.api("GET", "/api/v1/audit/verify"));
        out.textContent = text;
        out.classList.add(kind);
      } catch (failure) {
        out.textContent = failure.message;
        out.classList.add("error");
      } finally {
        button.removeAttribute("aria-busy");
        button.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("audit-filters");
    if (form) wireFilters(form);
    const verify = document.querySelector("[data-verify]");
    if (verify) wireVerify(verify);
  });
})();
