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
