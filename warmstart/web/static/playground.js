// The playground: shows the model's state while the user types, streams the answer, and says whether it
// was served warm or cold and how long it waited. The warm hint itself is sent by /warmstart.js.
"use strict";
(function () {
  const { api, seconds, phaseName, el } = WS;
  const $ = (id) => document.getElementById(id);
  const script = document.querySelector("script[data-model]");
  const model = script.dataset.model;
  const messages = [];
  let busy = false;
  let noChat = false;  // the model has no chat template

  $("snippet").textContent = '<script src="' + location.origin + '/warmstart.js" data-model="' + model +
    '" data-prompt="textarea" defer></script>';

  async function models() {
    const res = await api("/v1/models", { cache: "no-store" });
    if (!res.ok) return;
    const list = (await res.json()).data;
    const select = $("model");
    // a model without a chat template (a base model) cannot answer a chat: listed, but not offered
    const canChat = (m) => !(m.capabilities && m.capabilities.chat === false);
    select.replaceChildren(...list.map((m) => el("option", {
      value: m.id, selected: m.id === model, disabled: !canChat(m) && m.id !== model,
      text: m.id + (canChat(m) ? "" : " (no chat template: completions only)"),
    })));
    const current = list.find((m) => m.id === model);
    if (current && !canChat(current)) {
      noChat = true;
      $("send").disabled = true;
      $("prompt").disabled = true;
      $("prompt").placeholder = model + " has no chat template, so it cannot chat here; send it completions (/v1/completions) instead.";
    }
    select.addEventListener("change", () => { location.search = "?model=" + encodeURIComponent(select.value); });
  }

  function describe(m) {
    const warm = m.replicas.filter((r) => r.state === "warm");
    if (m.state === "starting") {
      const r = m.replicas.find((x) => x.state === "starting");
      const done = r ? Object.keys(r.phases).map(phaseName).join(", ") : "";
      return "starting" + (r && r.phase ? ": " + phaseName(r.phase) : "") + (done ? " (done: " + done + ")" : "") +
        (r ? ", started by " + r.trigger : "");
    }
    if (m.state === "warm") {
      const busyNow = warm.some((r) => r.in_flight > 0);
      const left = warm.map((r) => r.expires_in_s).filter((s) => s !== null);
      const when = busyNow ? "answering now" : left.length === warm.length && left.length ? "unloads in " + seconds(Math.max(...left)) + " if idle" : "stays loaded";
      return "ready, a prompt is answered at once · " + when;
    }
    if (m.problem && m.state === "cold") return "cannot start: " + m.problem;
    if (m.state === "failed") return "failed: " + (m.last_failure || "see the server log");
    if (m.state === "cold") {
      const last = m.last_start;
      return "not loaded: a prompt now waits for a start" + (last && last.outcome === "ok" ? " (the last took " + seconds(last.total_s) + ")" : "");
    }
    return m.state;
  }

  async function pollState() {
    let delay = 1000;
    try {
      const res = await api("/v1/models/" + encodeURIComponent(model), { cache: "no-store" });
      if (res.ok) {
        const m = await res.json();
        const badge = $("state");
        badge.className = "badge s-" + m.state;
        badge.dataset.state = m.state;
        badge.textContent = m.state;
        $("status").textContent = describe(m);
        if (m.state === "starting") delay = 400;
      } else {
        $("status").textContent = res.status === 404 ? "no model named " + model + " on this server" : "state unavailable (HTTP " + res.status + ")";
      }
    } catch (err) {
      $("status").textContent = "cannot reach warmstart, retrying";
      delay = 3000;
    }
    setTimeout(pollState, document.hidden ? 5000 : delay);
  }

  function message(role, text) {
    const node = el("div", { class: "msg " + role }, el("span", { class: "text", text: text }));
    $("log").append(node);
    return node;
  }

  async function send(event) {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (!text || busy || noChat) return;
    busy = true;
    $("send").disabled = true;
    const stop = new AbortController();
    const stopButton = $("stop");
    stopButton.hidden = false;
    stopButton.onclick = () => stop.abort();
    $("prompt").value = "";
    messages.push({ role: "user", content: text });
    message("user", text);
    const out = message("assistant", "");
    const body = out.querySelector(".text");
    const meta = el("span", { class: "meta", text: "waiting…" });
    out.append(meta);
    const badge = $("state");
    if (badge.dataset.state === "cold" || badge.dataset.state === "failed") {
      // this request starts the model: say so now rather than at the next poll (a start can be shorter than one)
      badge.className = "badge s-starting";
      badge.dataset.state = "starting";
      badge.textContent = "starting";
      $("status").textContent = "starting the model for this prompt";
    }
    const t0 = performance.now();
    const ticker = setInterval(() => { meta.textContent = "waiting… " + seconds((performance.now() - t0) / 1000); }, 100);
    let answer = "";
    let first = null;
    let chunks = 0;
    try {
      const res = await api("/v1/chat/completions", {
        method: "POST", headers: { "content-type": "application/json" },
        body: JSON.stringify({ model, messages, stream: true, max_tokens: 256 }),
        signal: stop.signal,
      });
      const start = res.headers.get("x-warmstart-start");
      const waited = res.headers.get("x-warmstart-wait-ms");
      if (!res.ok) {
        let why = "HTTP " + res.status;
        try { why = (await res.json()).error.message; } catch (e) { /* keep the status */ }
        throw new Error(why);
      }
      clearInterval(ticker);
      out.dataset.start = start;
      out.dataset.waitMs = waited;
      const served = () => [el("b", { text: "served " + start }), " · waited " + Number(waited).toLocaleString("en-US") + " ms for a replica"];
      meta.replaceChildren(...served(), " · streaming…");
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data:")) continue;
            const data = line.slice(5).trim();
            if (data === "[DONE]") continue;
            const chunk = JSON.parse(data);
            if (chunk.error) throw new Error(chunk.error.message || "the engine reported an error");
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.content) {
              if (first === null) first = performance.now();
              chunks += 1;
              answer += delta.content;
              body.textContent = answer;
            }
          }
        }
      }
      const end = performance.now();
      messages.push({ role: "assistant", content: answer });
      meta.replaceChildren(...served(), " · first token after " + seconds(((first ?? end) - t0) / 1000) +
        " · " + chunks + " chunks in " + seconds((end - t0) / 1000));
      out.dataset.chunks = String(chunks);
      out.dataset.done = "true";
    } catch (err) {
      clearInterval(ticker);
      if (stop.signal.aborted) {
        // stopped by the user: what came is kept, and the engine stops generating when the stream closes
        messages.push({ role: "assistant", content: answer });
        meta.textContent = "stopped after " + chunks + " chunks";
        out.dataset.done = "stopped";
        return;
      }
      out.classList.add("failed");
      out.dataset.done = "error";
      meta.textContent = "error: " + err.message;
      messages.pop();
    } finally {
      busy = false;
      $("send").disabled = noChat;
      stopButton.hidden = true;
    }
  }

  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("composer").requestSubmit(); }
  });
  pollState();
  models();
})();
