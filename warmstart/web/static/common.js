// Shared by the dashboard and the playground: API calls with the key kept in sessionStorage, and formatting.
"use strict";
(function () {
  const KEY = "warmstart.apiKey";
  let asking = null; // one key prompt at a time, shared by every request that got a 401

  function key() {
    return sessionStorage.getItem(KEY) || "";
  }

  // Show the key form (present in both pages) and resolve once the user has entered a key.
  function askKey(message) {
    if (asking) return asking;
    const form = document.getElementById("keyform");
    const input = document.getElementById("keyinput");
    document.getElementById("keymessage").textContent = message;
    form.hidden = false;
    input.value = "";
    input.focus();
    asking = new Promise((resolve) => {
      form.onsubmit = (event) => {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        sessionStorage.setItem(KEY, value);
        form.hidden = true;
        asking = null;
        resolve();
      };
    });
    return asking;
  }

  // fetch() with the API key; on 401 ask for a key and try again.
  async function api(path, options) {
    options = options || {};
    for (;;) {
      const headers = new Headers(options.headers || {});
      const k = key();
      if (k) headers.set("Authorization", "Bearer " + k);
      const res = await fetch(path, Object.assign({}, options, { headers }));
      if (res.status !== 401) return res;
      let message = "This warmstart needs an API key.";
      try {
        const body = await res.json();
        if (k && body.error && body.error.code === "invalid_api_key") message = "That key was not accepted; try another.";
      } catch (e) { /* not JSON: keep the plain message */ }
      sessionStorage.removeItem(KEY);
      await askKey(message);
    }
  }

  function seconds(s) {
    if (s === null || s === undefined) return "–";
    if (s < 0.001) return "0 ms";
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 10) return s.toFixed(2) + " s";
    if (s < 120) return s.toFixed(1) + " s";
    const whole = Math.round(s);
    const m = Math.floor(whole / 60);
    if (m < 120) return m + "m " + String(whole % 60).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h " + String(m % 60).padStart(2, "0") + "m";
  }

  function count(n) {
    return n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US");
  }

  function percent(r) {
    if (r === null || r === undefined) return "–";
    const p = r * 100;
    return (p === 100 || p === 0 ? p.toFixed(0) : p >= 99 ? p.toFixed(2) : p.toFixed(1)) + "%";
  }

  // The phases of a start, in the order they happen, with the names people use for them.
  const PHASES = {
    verify: "file check", spawn: "process start", import: "import", load: "weight load", kv_init: "KV-cache init",
    compile: "compile", warmup: "warm-up", ready: "ready", audit: "audit log",
  };
  function phaseName(p) {
    return PHASES[p] || p;
  }

  // element builder: el("div", {class: "x"}, child, "text")
  function el(tag, attrs) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i];
      if (c === null || c === undefined) continue;
      node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  window.WS = { api, key, askKey, seconds, count, percent, phaseName, PHASES, el };
})();
