// The replay of a console session: the cast from GET /api/v1/consoles/{id}/recording (the API
// checks the role and audits the read), played by asciinema-player with its seek bar.
"use strict";

(() => {
  async function sha256(buffer) {
    if (!(window.crypto && crypto.subtle)) return null; // only in a secure context (https, localhost)
    const digest = await crypto.subtle.digest("SHA-256", buffer);
    return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function load(root) {
    const status = document.getElementById("replay-status");
    const error = document.getElementById("replay-error");
    const id = root.dataset.session;
    let response;
    try {
      response = await fetch(`/api/v1/consoles/${encodeURIComponent(id)}/recording`, { credentials: "same-origin" });
    } catch (failure) {
      status.textContent = "";
      error.textContent = `The recording could not be fetched: ${failure.message}`;
      error.hidden = false;
      return;
    }
    if (!response.ok) {
      let detail = `the server answered ${response.status}`;
      try {
        detail = (await response.json()).detail || detail;
      } catch (_) { /* not JSON */ }
      if (response.status === 401) location.assign(`/login?next=${encodeURIComponent(location.pathname)}`);
      status.textContent = "The recording is not available.";
      error.textContent = detail;
      error.hidden = false;
      return;
    }
    const bytes = await response.arrayBuffer();
    const text = new TextDecoder().decode(bytes);
    const check = document.getElementById("sha-check");
    const expected = response.headers.get("X-Recording-SHA256") || root.dataset.sha256;
    const actual = await sha256(bytes);
    if (actual && expected) {
      check.textContent = actual === expected ? "(matches the downloaded file)" : `(the downloaded file's is ${actual}: it does not match)`;
      check.className = actual === expected ? "state-succeeded" : "state-failed";
    }
    status.textContent = "Press play, or use the seek bar (space plays and pauses, arrows seek).";
    const player = AsciinemaPlayer.create({ data: text }, root, {
      fit: "width",
      controls: true,
      idleTimeLimit: 3,
      terminalFontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    });
    window.rackhandReplay = { player, cast: text };
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("player");
    if (root) load(root);
  });
})();
