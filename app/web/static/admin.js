// The admin pages: users, API tokens, webhooks, site agents. Every change is a call to the REST API
// (Rackhand.api), under its rules and its audit; a refusal shows the API's own words.
"use strict";

(() => {
  const NOTICE = "rackhand-admin-notice";

  /** Reload the page (it reads the new state) and say what was done once it is back. */
  function reloadSaying(text) {
    sessionStorage.setItem(NOTICE, text);
    location.reload();
  }

  function goSaying(url, text) {
    sessionStorage.setItem(NOTICE, text);
    location.assign(url);
  }

  function sayPending() {
    const text = sessionStorage.getItem(NOTICE);
    if (text) {
      sessionStorage.removeItem(NOTICE);
      Rackhand.notify(text, "ok");
    }
  }

  /** Run an API call from a control: busy while it runs, the API's detail on failure. */
  async function acting(control, work, errorOut) {
    control.setAttribute("aria-busy", "true");
    control.disabled = true;
    if (errorOut) errorOut.hidden = true;
    try {
      await work();
    } catch (failure) {
      if (errorOut) {
        errorOut.textContent = failure.message;
        errorOut.hidden = false;
      } else {
        Rackhand.notify(failure.message, "error");
      }
    } finally {
      control.removeAttribute("aria-busy");
      control.disabled = false;
    }
  }

  function submitter(form) {
    return form.querySelector("button[type=submit]");
  }

  /** The grants editor as the API's `grants`: a role at every site, or at the sites ticked. */
  function readGrants(root) {
    const grants = [];
    for (const fieldset of root.querySelectorAll("fieldset[data-role]")) {
      const every = fieldset.querySelector("input[data-every-site]");
      if (every && every.checked) {
        grants.push({ role: fieldset.dataset.role, sites: null });
        continue;
      }
      const sites = [...fieldset.querySelectorAll("input[data-site]:checked")].map((box) => box.dataset.site);
      if (sites.length) grants.push({ role: fieldset.dataset.role, sites });
    }
    return grants;
  }

  /** "every site" and single sites exclude each other: ticking one clears the others. */
  function wireEverySite(root) {
    root.addEventListener("change", (event) => {
      const box = event.target;
      const group = box.closest("fieldset");
      if (!group || box.type !== "checkbox") return;
      if (box.matches("[data-every-site]") && box.checked) {
        group.querySelectorAll("input[data-site], input[name=sites]").forEach((other) => { other.checked = false; });
      } else if (box.matches("[data-site], [name=sites]") && box.checked) {
        const every = group.querySelector("[data-every-site]");
        if (every) every.checked = false;
      }
    });
  }

  function openDialog(dialog, opener) {
    dialog.showModal();
    const first = dialog.querySelector("input:not([type=hidden]):not([readonly]), input[readonly], button");
    if (first) first.focus();
    dialog.addEventListener("close", () => { if (opener && opener.isConnected) opener.focus(); }, { once: true });
  }

  /** Copy a secret shown once from its (selected) field; say so, or how to copy it by hand. */
  async function copying(field, what) {
    field.select();
    try {
      await navigator.clipboard.writeText(field.value);
      Rackhand.notify(`${what} copied to the clipboard.`, "ok");
    } catch (_) {
      Rackhand.notify(`Copying was refused by the browser: the ${what.toLowerCase()} is selected, copy it with Ctrl+C.`, "error");
    }
  }

  function wireCloseButtons() {
    document.querySelectorAll("dialog [data-close]").forEach((button) => {
      button.addEventListener("click", () => button.closest("dialog").close());
    });
  }

  // Users -----------------------------------------------------------------------------------

  const userPath = (name) => `/api/v1/users/${encodeURIComponent(name)}`;

  function wireUsers() {
    const create = document.querySelector("form[data-create-user]");
    if (create) {
      wireEverySite(create);
      create.addEventListener("submit", (event) => {
        event.preventDefault();
        const body = {
          username: create.elements.username.value,
          password: create.elements.password.value,
          grants: readGrants(create),
        };
        if (create.elements.display_name.value) body.display_name = create.elements.display_name.value;
        acting(submitter(create), async () => {
          await Rackhand.api("POST", "/api/v1/users", body);
          reloadSaying(`User ${body.username} created.`);
        });
      });
    }

    document.querySelectorAll("[data-set-disabled]").forEach((button) => {
      button.addEventListener("click", () => {
        const disabled = button.dataset.setDisabled === "true";
        const name = button.dataset.user;
        acting(button, async () => {
          await Rackhand.api("PATCH", userPath(name), { disabled });
          reloadSaying(`User ${name} ${disabled ? "disabled" : "enabled"}.`);
        });
      });
    });

    const grantsDialog = document.getElementById("grants-dialog");
    if (grantsDialog) {
      const form = grantsDialog.querySelector("form");
      const slot = grantsDialog.querySelector("[data-editor-slot]");
      const error = grantsDialog.querySelector("[data-error]");
      wireEverySite(slot);
      document.querySelectorAll("[data-edit-grants]").forEach((button) => {
        button.addEventListener("click", () => {
          const name = button.dataset.editGrants;
          const editor = document.querySelector(`template[data-grants-of="${CSS.escape(name)}"]`);
          slot.replaceChildren(editor.content.cloneNode(true));
          grantsDialog.querySelector("[data-who]").textContent = name;
          form.dataset.user = name;
          error.hidden = true;
          openDialog(grantsDialog, button);
        });
      });
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const name = form.dataset.user;
        acting(submitter(form), async () => {
          await Rackhand.api("PATCH", userPath(name), { grants: readGrants(slot) });
          reloadSaying(`Grants of ${name} changed.`);
        }, error);
      });
    }

    const passwordDialog = document.getElementById("password-dialog");
    if (passwordDialog) {
      const form = passwordDialog.querySelector("form");
      const error = passwordDialog.querySelector("[data-error]");
      document.querySelectorAll("[data-reset-password]").forEach((button) => {
        button.addEventListener("click", () => {
          const name = button.dataset.resetPassword;
          passwordDialog.querySelector("[data-who]").textContent = name;
          form.dataset.user = name;
          form.reset();
          error.hidden = true;
          openDialog(passwordDialog, button);
        });
      });
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const name = form.dataset.user;
        acting(submitter(form), async () => {
          await Rackhand.api("PATCH", userPath(name), { password: form.elements.password.value });
          reloadSaying(`Password of ${name} set; their other logins ended.`);
        }, error);
      });
    }
  }

  // Tokens ----------------------------------------------------------------------------------

  function wireTokens() {
    const create = document.querySelector("form[data-create-token]");
    const dialog = document.getElementById("token-dialog");
    if (create && dialog) {
      const value = dialog.querySelector("[data-token-value]");
      create.addEventListener("submit", (event) => {
        event.preventDefault();
        const body = {
          name: create.elements.name.value,
          role: create.elements.role.value,
          expires_in_days: Number(create.elements.expires_in_days.value),
        };
        const sites = [...create.querySelectorAll("input[name=sites]:checked")].map((box) => box.value);
        if (sites.length) body.sites = sites;
        acting(submitter(create), async () => {
          const made = await Rackhand.api("POST", "/api/v1/tokens", body);
          dialog.querySelector("[data-token-name]").textContent = made.name;
          value.value = made.token;
          openDialog(dialog, submitter(create));
          value.select();
        });
      });
      dialog.querySelector("[data-copy-token]").addEventListener("click", () => copying(value, "Token"));
      dialog.addEventListener("close", () => {
        value.value = "";  // shown once: gone from the page when the dialog closes
        reloadSaying("Token created; it is not shown again.");
      });
    }

    document.querySelectorAll("[data-revoke-token]").forEach((button) => {
      button.addEventListener("click", async () => {
        const name = button.dataset.name;
        const text = "Scripts using it (and tokens made with it) stop working.";
        if (!(await Rackhand.confirm(`Revoke the token ${name}?`, text, "Revoke"))) return;
        acting(button, async () => {
          await Rackhand.api("DELETE", `/api/v1/tokens/${button.dataset.revokeToken}`);
          reloadSaying(`Token ${name} revoked.`);
        });
      });
    });
  }

  // Webhooks --------------------------------------------------------------------------------

  function webhookBody(form, creating) {
    const body = {
      events: [...form.querySelectorAll("input[name=events]:checked")].map((box) => box.value),
      active: form.elements.active.checked,
    };
    const every = form.querySelector("[data-every-site]");
    const sites = [...form.querySelectorAll("input[name=sites]:checked")].map((box) => box.value);
    body.sites = every && every.checked ? null : sites;
    for (const name of ["url", "secret"]) {
      if (creating || form.elements[name].value) body[name] = form.elements[name].value;
    }
    return body;
  }

  function wireWebhooks() {
    document.querySelectorAll("form[data-webhook-form]").forEach((form) => {
      wireEverySite(form);
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        const creating = form.dataset.method === "POST";
        const body = webhookBody(form, creating);
        acting(submitter(form), async () => {
          if (creating) {
            const made = await Rackhand.api("POST", "/api/v1/webhooks", body);
            goSaying(`/admin/webhooks/${made.id}`, `Webhook ${made.id} created.`);
          } else {
            await Rackhand.api("PATCH", `/api/v1/webhooks/${form.dataset.webhook}`, body);
            reloadSaying("Webhook saved.");
          }
        });
      });
    });

    document.querySelectorAll("[data-delete-webhook]").forEach((button) => {
      button.addEventListener("click", async () => {
        const id = button.dataset.deleteWebhook;
        const text = "Its deliveries go with it; pending ones are not sent.";
        if (!(await Rackhand.confirm(`Delete webhook ${id}?`, text, "Delete"))) return;
        acting(button, async () => {
          await Rackhand.api("DELETE", `/api/v1/webhooks/${id}`);
          if (button.dataset.then) goSaying(button.dataset.then, `Webhook ${id} deleted.`);
          else reloadSaying(`Webhook ${id} deleted.`);
        });
      });
    });

    document.querySelectorAll("[data-redeliver]").forEach((button) => {
      button.addEventListener("click", () => {
        const path = `/api/v1/webhooks/${button.dataset.webhook}/deliveries/${button.dataset.redeliver}/redeliver`;
        acting(button, async () => {
          await Rackhand.api("POST", path);
          reloadSaying("Sent again as a new delivery.");
        });
      });
    });
  }

  // Site agents ------------------------------------------------------------------------------

  function wireAgents() {
    const enrol = document.querySelector("form[data-enrol-agent]");
    const dialog = document.getElementById("agent-dialog");
    if (enrol && dialog) {
      const command = dialog.querySelector("[data-agent-command]");
      const token = dialog.querySelector("[data-agent-token]");
      let enrolled = "";
      enrol.addEventListener("submit", (event) => {
        event.preventDefault();
        const body = {
          site: enrol.elements.site.value,
          name: enrol.elements.name.value,
          expires_in: Math.round(Number(enrol.elements.hours.value) * 3600),
        };
        acting(submitter(enrol), async () => {
          const made = await Rackhand.api("POST", "/api/v1/agents", body);
          enrolled = `${made.site}/${made.name}`;
          dialog.querySelector("[data-agent-name]").textContent = enrolled;
          const expires = dialog.querySelector("[data-agent-expires]");
          expires.textContent = new Date(made.expires_at).toLocaleString();
          expires.title = made.expires_at;
          command.value = made.command;
          token.value = made.join_token;
          openDialog(dialog, submitter(enrol));
          command.select();
        });
      });
      dialog.querySelector("[data-copy-command]").addEventListener("click", () => copying(command, "Command"));
      dialog.addEventListener("close", () => {
        command.value = "";  // shown once: gone from the page when the dialog closes
        token.value = "";
        reloadSaying(`Agent ${enrolled} enrolled; its join token is not shown again.`);
      });
    }

    document.querySelectorAll("[data-revoke-agent]").forEach((button) => {
      button.addEventListener("click", async () => {
        const name = button.dataset.name;
        const text = "Its join token and credential stop working and its link closes within seconds. " +
          "The site stays served by its agents only: with none online, its devices cannot be reached.";
        if (!(await Rackhand.confirm(`Revoke the agent ${name}?`, text, "Revoke"))) return;
        acting(button, async () => {
          await Rackhand.api("DELETE", `/api/v1/agents/${button.dataset.revokeAgent}`);
          reloadSaying(`Agent ${name} revoked.`);
        });
      });
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    sayPending();
    wireCloseButtons();
    wireUsers();
    wireTokens();
    wireWebhooks();
    wireAgents();
  });
})();
