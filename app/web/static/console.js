// A device's console in the browser: xterm.js on the API's own stream
// (WS /api/v1/consoles/{id}/stream, docs/consoles.md). Binary frames carry raw bytes both ways;
// text frames carry JSON controls (to the server) and events (from it). The server decides
// everything (who may type, break, power, close); this page only shows what it says.
"use strict";

(() => {
  const CLOSE_WHY = {
    4401: "You are not logged in (or your session ended)",
    4403: "You may not use this console",
    4404: "This console session is not open",
    1011: "The server could not re-check your access",
  };
  const MIN_COLS = 80; // BIOS and POST screens are drawn for 80 x 25
  const MIN_ROWS = 25;
  const encoder = new TextEncoder();

  function clock(iso) {
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) return iso;
    return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  /** The "Open a console" form of /consoles: POST /devices/{name}/consoles, then its page. */
  function wireOpenForm(form) {
    const error = document.getElementById("open-error");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      error.hidden = true;
      const body = Rackhand.formJson(form);
      const device = body.device;
      delete body.device;
      const button = form.querySelector("button[type=submit]");
      button.setAttribute("aria-busy", "true");
      button.disabled = true;
      try {
        const opened = await Rackhand.api("POST", `/api/v1/devices/${encodeURIComponent(device)}/consoles`, body);
        location.assign(`/consoles/${encodeURIComponent(opened.id)}`);
      } catch (failure) {
        error.textContent = failure.message;
        error.hidden = false;
      } finally {
        button.removeAttribute("aria-busy");
        button.disabled = false;
      }
    });
  }

  class Console {
    constructor(root) {
      this.root = root;
      this.id = root.dataset.session;
      this.device = root.dataset.device;
      this.operator = root.dataset.operator === "true";
      this.admin = root.dataset.admin === "true";
      this.mayClose = root.dataset.mayClose === "true";
      this.mode = this.operator && root.dataset.mode === "rw" ? "rw" : "ro";
      this.ws = null;
      this.you = null;
      this.writer = null;
      this.viewers = new Map(); // viewer id -> {name, mode}
      this.ended = false; // the session closed: no reconnect
      this.lastError = null; // the error event that came before a close
      this.warned = false;
      this.$ = (id) => document.getElementById(id);

      this.term = new Terminal({
        cursorBlink: true,
        convertEol: false,
        scrollback: 5000,
        fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
        fontSize: 14,
        theme: { background: "#101418", foreground: "#d8dee9" },
      });
      this.fit = new FitAddon.FitAddon();
      this.term.loadAddon(this.fit);
      this.term.open(this.$("terminal"));
      this.resizeToWindow();
      window.rackhandTerminal = this.term; // for tests and the curious: the screen's buffer
      window.rackhandConsole = this;

      this.term.onData((data) => this.type(encoder.encode(data)));
      this.term.onBinary((data) => this.type(Uint8Array.from(data, (c) => c.charCodeAt(0) & 0xff)));
      this.term.onResize(({ cols, rows }) => {
        if (this.writing) this.control({ type: "resize", cols, rows });
      });
      this.term.attachCustomKeyEventHandler((event) => this.shortcut(event));
      let pending = null;
      window.addEventListener("resize", () => {
        clearTimeout(pending);
        pending = setTimeout(() => this.resizeToWindow(), 100);
      });
      this.wire();
      this.connect();
    }

    get writing() {
      return this.writer !== null && this.you !== null && this.writer.viewer === this.you;
    }

    /** The screen's text, line by line (what a test or a screen reader user may want). */
    screenText() {
      const buffer = this.term.buffer.active;
      const lines = [];
      for (let i = 0; i < buffer.length; i += 1) {
        const line = buffer.getLine(i);
        if (line) lines.push(line.translateToString(true));
      }
      return lines.join("\n");
    }

    resizeToWindow() {
      const wanted = this.fit.proposeDimensions();
      if (!wanted || !wanted.cols || !wanted.rows) return;
      const cols = Math.max(MIN_COLS, wanted.cols);
      const rows = Math.max(MIN_ROWS, wanted.rows);
      if (cols !== this.term.cols || rows !== this.term.rows) this.term.resize(cols, rows);
    }

    // The stream ---------------------------------------------------------------------------

    connect() {
      this.close();
      this.term.reset(); // the server sends the scrollback again
      this.you = null;
      this.writer = null;
      this.lastError = null;
      this.viewers.clear();
      this.problem(null);
      this.status("Connecting…");
      const scheme = location.protocol === "https:" ? "wss:" : "ws:";
      const url = `${scheme}//${location.host}/api/v1/consoles/${encodeURIComponent(this.id)}/stream?mode=${this.mode}`;
      const ws = new WebSocket(url);
      ws.binaryType = "arraybuffer";
      ws.addEventListener("message", (event) => {
        if (ws !== this.ws) return;
        if (typeof event.data === "string") this.event(JSON.parse(event.data));
        else this.term.write(new Uint8Array(event.data));
      });
      ws.addEventListener("close", (event) => {
        if (ws === this.ws) this.closed(event);
      });
      this.ws = ws;
    }

    close() {
      const ws = this.ws;
      this.ws = null; // its close event is ours, not a loss
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
    }

    send(data) {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(data);
    }

    control(message) {
      this.send(JSON.stringify(message));
    }

    type(bytes) {
      if (this.writing) {
        this.send(bytes);
      } else if (!this.warned) {
        this.warned = true; // once per change of the lock: typing is not an error to repeat
        const why = this.mode === "ro" ? "you joined read-only" : this.lockText();
        Rackhand.notify(`Not sent: ${why}. Take the keyboard to type.`, "error");
      }
    }

    closed(event) {
      this.ws = null;
      this.setWriter(null);
      this.enable(false);
      if (this.ended) return;
      this.$("lock").textContent = "";
      const detail = this.lastError ? this.lastError.detail : event.reason;
      const why = CLOSE_WHY[event.code] || `The connection was lost (code ${event.code})`;
      this.status("Disconnected");
      this.problem(detail ? `${why}: ${detail}` : `${why}.`, {
        reconnect: true,
        recording: event.code === 4404,
        login: event.code === 4401,
      });
    }

    // Events from the server --------------------------------------------------------------

    event(message) {
      switch (message.type) {
        case "hello":
          this.you = message.you;
          for (const v of message.viewers || []) this.viewers.set(v.viewer, { name: v.name, mode: v.viewer === message.you ? message.mode : null });
          this.status(`Connected to ${message.device} via ${message.path || "?"}${message.mode === "ro" ? " (read-only)" : ""}`);
          this.setWriter(message.writer);
          this.enable(true);
          this.modes();
          break;
        case "joined":
          this.viewers.set(message.viewer, { name: message.name, mode: message.mode });
          this.showViewers();
          break;
        case "left":
          this.viewers.delete(message.viewer);
          this.showViewers();
          break;
        case "writer":
          this.setWriter(message.writer, message.forced);
          break;
        case "break":
          Rackhand.notify(`Break sent by ${message.by}.`, "ok");
          break;
        case "power":
          this.power(message);
          break;
        case "error":
          this.lastError = message;
          // before `hello` it is a refusal: the socket closes next and `closed` says it
          if (this.you !== null) Rackhand.notify(message.detail || message.error, "error");
          break;
        case "closed":
          this.ended = true;
          this.root.classList.add("ended");
          this.term.options.disableStdin = true;
          this.status("Session closed");
          this.problem(`The session has ended (${message.reason}): ${message.message}`, { recording: true, calm: true });
          break;
        default:
          break;
      }
    }

    /** The viewers' modes are not in `hello`: the API's GET says them (for the hand-over list). */
    async modes() {
      try {
        const read = await Rackhand.api("GET", `/api/v1/consoles/${encodeURIComponent(this.id)}`);
        for (const v of read.viewers || []) {
          const known = this.viewers.get(v.viewer);
          if (known) known.mode = v.mode;
        }
      } catch (_) { /* the list stays without modes */ }
      this.showViewers();
    }

    power(message) {
      const line = this.$("power-result");
      const text = message.status === "running"
        ? `Power ${message.action} by ${message.by}: running…`
        : `Power ${message.action} by ${message.by}: ${message.status}` +
          (message.path ? ` via ${message.path}` : "") +
          (message.power_state ? `, now ${message.power_state}` : "") +
          (message.message ? `. ${message.message}` : "");
      if (line) {
        line.textContent = text;
        line.className = `power-result state-${message.status}`;
        line.hidden = false;
      } else {
        Rackhand.notify(text, message.status === "failed" ? "error" : "ok");
      }
    }

    setWriter(writer, forced = false) {
      this.writer = writer || null;
      this.warned = false;
      const lock = this.$("lock");
      lock.textContent = this.lockText() + (forced && writer ? " (taken over)" : "");
      lock.classList.toggle("mine", this.writing);
      if (this.writing) this.control({ type: "resize", cols: this.term.cols, rows: this.term.rows });
      this.showButtons();
      this.showViewers();
    }

    lockText() {
      if (!this.writer) return "Nobody is typing";
      if (this.writing) return "You have the keyboard";
      return `In use by ${this.writer.name} since ${clock(this.writer.since)}`;
    }

    showViewers() {
      const list = this.$("viewers");
      const items = [...this.viewers.entries()].map(([id, v]) => {
        const item = document.createElement("li");
        item.textContent = v.name + (id === this.you ? " (you)" : "");
        if (this.writer && this.writer.viewer === id) item.append(" ⌨ typing");
        if (v.mode === "ro") {
          const note = document.createElement("span");
          note.className = "muted";
          note.textContent = " (read-only)";
          item.append(note);
        }
        return item;
      });
      list.replaceChildren(...items);
      const select = this.$("handover-to");
      if (!select) return;
      const chosen = select.value;
      const options = [...this.viewers.entries()]
        .filter(([id, v]) => id !== this.you && v.mode !== "ro")
        .map(([id, v]) => {
          const option = document.createElement("option");
          option.value = id;
          option.textContent = `${v.name} (${id.slice(0, 6)})`;
          option.selected = id === chosen;
          return option;
        });
      select.replaceChildren(...options);
      this.$("handover").hidden = !this.writing || options.length === 0;
    }

    showButtons() {
      if (!this.operator) return;
      const connected = this.you !== null;
      const rw = this.mode === "rw";
      this.$("take").hidden = !connected || !rw || this.writing; // held: the server says by whom
      const over = this.$("take-over");
      if (over) over.hidden = !connected || !rw || this.writer === null || this.writing;
      this.$("release").hidden = !this.writing;
      this.$("writer-actions").disabled = !this.writing;
      this.$("paste").disabled = !this.writing;
      const closer = this.$("close-session");
      if (closer) closer.disabled = !connected;
    }

    enable(on) {
      if (!on) this.you = null;
      this.showButtons();
    }

    status(text) {
      this.$("connection").textContent = text;
    }

    problem(text, offer = {}) {
      const box = this.$("stream-problem");
      box.hidden = !text;
      if (!text) return;
      box.className = offer.calm ? "alert" : "alert error";
      this.$("stream-problem-text").textContent = text;
      this.$("reconnect").hidden = !offer.reconnect;
      this.$("to-recording").hidden = !offer.recording;
      this.$("to-login").hidden = !offer.login;
    }

    // The controls -------------------------------------------------------------------------

    wire() {
      this.$("reconnect").addEventListener("click", () => {
        this.connect();
        this.term.focus();
      });
      if (!this.operator) return;
      this.$("take").addEventListener("click", () => this.control({ type: "take_write" }));
      const over = this.$("take-over");
      if (over) {
        over.addEventListener("click", async () => {
          const holder = this.writer ? this.writer.name : "its holder";
          if (await Rackhand.confirm("Take over the keyboard?", `${holder} is typing; taking the keyboard over is audited.`, "Take over")) {
            this.control({ type: "take_write", force: true });
          }
        });
      }
      this.$("release").addEventListener("click", () => this.control({ type: "release_write" }));
      this.$("handover-button").addEventListener("click", () => {
        const to = this.$("handover-to").value;
        if (to) this.control({ type: "release_write", to });
      });
      const readonly = this.$("readonly");
      readonly.addEventListener("change", () => {
        this.mode = readonly.checked ? "ro" : "rw";
        history.replaceState(null, "", readonly.checked ? "?mode=ro" : location.pathname);
        this.connect();
      });
      this.$("copy").addEventListener("click", () => this.copy());
      this.$("paste").addEventListener("click", () => this.pasteClipboard());
      this.$("break").addEventListener("click", async () => {
        const text = "A break stops Solaris/SPARC machines in OBP and Cisco gear in ROMMON. Send it to " + this.device + "?";
        if (await Rackhand.confirm("Send a break?", text, "Send break")) this.control({ type: "break", confirm: true });
      });
      for (const button of this.root.querySelectorAll("[data-power]")) {
        button.addEventListener("click", async () => {
          const action = button.dataset.power;
          if (await Rackhand.confirm(`Power ${action}?`, `Power ${action} ${this.device} now? This is the same power action as the API's, audited.`, `Power ${action}`)) {
            this.control({ type: "power", action });
          }
        });
      }
      const closer = this.$("close-session");
      if (closer) {
        closer.addEventListener("click", async () => {
          if (!(await Rackhand.confirm("Close the session?", `Close the console of ${this.device} for everyone watching it?`, "Close session"))) return;
          try {
            await Rackhand.api("DELETE", `/api/v1/consoles/${encodeURIComponent(this.id)}`);
          } catch (failure) {
            Rackhand.notify(failure.message, "error");
          }
        });
      }
    }

    /** Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes: not sent to the device. */
    shortcut(event) {
      if (event.type !== "keydown" || !event.ctrlKey || !event.shiftKey) return true;
      const key = event.key.toLowerCase();
      if (key === "c") {
        event.preventDefault();
        this.copy();
        return false;
      }
      if (key === "v") return false; // the browser's own paste event reaches xterm (onData)
      return true;
    }

    async copy() {
      const text = this.term.getSelection();
      if (!text) {
        Rackhand.notify("Select text in the terminal first.", "error");
        return;
      }
      try {
        await navigator.clipboard.writeText(text);
        Rackhand.notify("Copied.", "ok");
      } catch (_) {
        Rackhand.notify("The browser did not let this page use the clipboard.", "error");
      }
    }

    async pasteClipboard() {
      let text;
      try {
        text = await navigator.clipboard.readText();
      } catch (_) {
        Rackhand.notify("The browser did not let this page read the clipboard; use Ctrl+Shift+V in the terminal.", "error");
        return;
      }
      if (text) this.term.paste(text); // as typed: onData, with bracketed paste if asked for
      this.term.focus();
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const form = document.getElementById("open-console");
    if (form) wireOpenForm(form);
    const root = document.getElementById("console");
    if (root) new Console(root);
  });
})();
