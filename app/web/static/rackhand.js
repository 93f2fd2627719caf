// Rackhand's dashboard: every change goes through the REST API, under its rules and its audit.
// The session cookie is HttpOnly; the CSRF token is the readable `rackhand_csrf` cookie, sent
// back as the X-CSRF-Token header (a page of another site can read neither).
"use strict";

const Rackhand = (() => {
  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.detail) || `the server answered ${status}`);
      this.status = status;
      this.error = body && body.error;
      this.body = body;
    }
  }

  function csrf() {
    const found = document.cookie.split("; ").find((item) => item.startsWith("rackhand_csrf="));
    return found ? decodeURIComponent(found.slice("rackhand_csrf=".length)) : "";
  }

  function toLogin() {
    const back = location.pathname + location.search;
    location.assign(`/login?next=${encodeURIComponent(back)}`);
  }

  /** Call the API; answers the parsed JSON (null for 204), throws ApiError with its detail. */
  async function api(method, path, body, headers = {}) {
    const init = { method, credentials: "same-origin", headers: { ...headers } };
    if (method !== "GET" && method !== "HEAD") init.headers["X-CSRF-Token"] = csrf();
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const response = await fetch(path, init);
    const text = await response.text();
    let parsed = null;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch (_) {
      parsed = null;
    }
    if (!response.ok) {
      if (response.status === 401 && !path.startsWith("/api/v1/auth/")) toLogin();
      throw new ApiError(response.status, parsed);
    }
    return parsed;
  }

  /** A form's fields as a JSON object: empty fields left out, checkboxes as booleans,
   *  `data-type="number"` inputs as numbers, `data-type="list"` as comma-separated lists. */
  function formJson(form) {
    const body = {};
    for (const field of form.elements) {
      if (!field.name || field.disabled) continue;
      if (field.type === "checkbox") {
        body[field.name] = field.checked;
      } else if (field.type === "radio") {
        if (field.checked) body[field.name] = field.value;
      } else if (field.value !== "") {
        const type = field.dataset.type;
        if (type === "number") body[field.name] = Number(field.value);
        else if (type === "list") body[field.name] = field.value.split(",").map((s) => s.trim()).filter(Boolean);
        else body[field.name] = field.value;
      }
    }
    return body;
  }

  /** Say something in the page's live region (read out by screen readers). */
  function notify(text, kind = "info") {
    const notice = document.getElementById("notice");
    if (!notice) return;
    const line = document.createElement("p");
    line.className = `alert ${kind}`;
    line.textContent = text;
    notice.replaceChildren(line);
  }

  function toggleTheme() {
    const root = document.documentElement;
    const now = root.getAttribute("data-theme") ||
      (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light");
    const next = now === "dark" ? "light" : "dark";
    root.setAttribute("data-theme", next);
    localStorage.setItem("rackhand-theme", next);
  }

  async function logout() {
    try {
      await api("POST", "/api/v1/auth/logout");
    } finally {
      location.assign("/login");
    }
  }

  function wireLogin(form) {
    const error = document.getElementById("login-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      try {
        await api("POST", "/api/v1/auth/login", {
          username: form.elements.username.value,
          password: form.elements.password.value,
        });
        // The server only ever writes a path of this site here; checked again all the same.
        const next = new URL(form.dataset.next || "/", location.origin);
        location.assign(next.origin === location.origin ? next.href : "/");
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
        form.elements.password.select();
      }
    });
  }

  function local(root) {
    // Times are stored and sent in UTC; <time data-local> shows them in the viewer's zone.
    for (const node of root.querySelectorAll("time[data-local]")) {
      const when = new Date(node.getAttribute("datetime"));
      if (!Number.isNaN(when.getTime())) {
        node.title = node.getAttribute("datetime");
        node.textContent = when.toLocaleString();
      }
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-theme-toggle]").forEach((b) => b.addEventListener("click", toggleTheme));
    document.querySelectorAll("[data-logout]").forEach((b) => b.addEventListener("click", logout));
    const login = document.getElementById("login");
    if (login) wireLogin(login);
    local(document);
  });

  document.addEventListener("htmx:configRequest", (event) => {
    if (event.detail.verb !== "get") event.detail.headers["X-CSRF-Token"] = csrf();
  });
  document.addEventListener("htmx:afterSwap", (event) => local(event.detail.target));
  document.addEventListener("htmx:responseError", (event) => {
    let detail = `the server answered ${event.detail.xhr.status}`;
    try {
      detail = JSON.parse(event.detail.xhr.responseText).detail || detail;
    } catch (_) { /* a page, not JSON */ }
    if (event.detail.xhr.status === 401) toLogin();
    else notify(detail, "error");
  });

  /** Ask a yes/no question in the page's shared <dialog id="confirm"> (templates/macros.html);
   *  resolves true on OK, false on Cancel or Escape. Focus goes to its first field (a ticket)
   *  or to Cancel, the safe answer, and back to the opener when it closes. Fields the page
   *  gave it (ticket, reason) stay filled in for the caller to read from #confirm-form. */
  function confirm(title, text, okLabel = "Confirm") {
    const dialog = document.getElementById("confirm");
    if (!dialog) return Promise.resolve(false);
    const form = document.getElementById("confirm-form");
    const ok = document.getElementById("confirm-ok");
    const cancel = document.getElementById("confirm-cancel");
    const opener = document.activeElement;
    document.getElementById("confirm-title").textContent = title;
    document.getElementById("confirm-text").textContent = text;
    ok.textContent = okLabel;
    return new Promise((resolve) => {
      let answer = false;
      const yes = (event) => {
        event.preventDefault(); // a required field left empty never gets here
        answer = true;
        dialog.close("confirm");
      };
      const no = () => dialog.close("cancel");
      const done = () => {
        form.removeEventListener("submit", yes);
        cancel.removeEventListener("click", no);
        if (opener && opener.focus) opener.focus();
        resolve(answer);
      };
      form.addEventListener("submit", yes);
      cancel.addEventListener("click", no);
      dialog.addEventListener("close", done, { once: true });
      dialog.showModal();
      (form.querySelector("input, textarea") || cancel).focus();
    });
  }

  /** A result line of a page's part: an alert paragraph of `kind` (info, ok, error). */
  function alert(kind, text) {
    const node = document.createElement("p");
    node.className = `alert ${kind}`;
    node.textContent = text;
    return node;
  }

  /** The Apply and Cancel buttons under a dry run's plan; `data` names their data attributes
   *  (`data-<data>-apply`, `data-<data>-cancel`), by which the page's click handler knows them. */
  function applyOrCancel(data, canApply = true) {
    const buttons = document.createElement("div");
    buttons.className = "buttons";
    for (const [what, label, style] of [["apply", "Apply", "small"],
                                        ["cancel", "Cancel", "small secondary outline"]]) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = style;
      button.setAttribute(`data-${data}-${what}`, "");
      button.textContent = label;
      if (what === "apply") button.disabled = !canApply;
      buttons.append(button);
    }
    return buttons;
  }

  return { alert, api, ApiError, applyOrCancel, confirm, csrf, formJson, notify };
})();
window.Rackhand = Rackhand;
