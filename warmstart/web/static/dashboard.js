// The dashboard: polls GET /api/dashboard (about once a second while visible) and updates the page in place.
"use strict";
(function () {
  const { api, seconds, count, percent, phaseName, PHASES, el } = WS;
  const RANK = { starting: 0, warm: 1, sleeping: 2, stopping: 3, failed: 4, cold: 5 };
  const MAX_ROWS = 500; // drawn at once; the filter narrows the rest
  const rows = new Map(); // model name -> { tr, cells }
  let data = null;
  let selected = null;
  let chosenByUser = false;
  let lastDetail = "";
  let failures = 0;

  const $ = (id) => document.getElementById(id);
  const set = (node, text) => { if (node.textContent !== text) node.textContent = text; };
  const setClass = (node, cls) => { if (node.className !== cls) node.className = cls; };

  async function poll() {
    let delay = 1000;
    try {
      const res = await api("/api/dashboard", { cache: "no-store" });
      if (!res.ok) throw new Error("HTTP " + res.status);
      data = await res.json();
      failures = 0;
      render();
      live(true);
    } catch (err) {
      failures += 1;
      live(false, err);
      delay = Math.min(10000, 1000 * 2 ** Math.min(failures, 4));
    }
    if (document.hidden) delay = Math.max(delay, 5000);
    setTimeout(poll, delay);
  }

  function live(ok, err) {
    setClass($("live-dot"), ok ? "dot ok" : "dot bad");
    set($("live"), ok ? "live · " + new Date(data.now * 1000).toLocaleTimeString() : "cannot reach warmstart (" + err.message + "), retrying");
  }

  function render() {
    cards(data.totals);
    const since = data.window_s < data.uptime_s + 1 && data.window_s < 3600 ? " (the server started " + seconds(data.uptime_s) + " ago)" : "";
    set($("window"), "Cards: the last " + seconds(data.window_s) + since + ", from warmstart's own metrics. warmstart " + data.version + ".");
    table();
    if (!chosenByUser) autoSelect();
    detail();
  }

  function cards(t) {
    set($("c-ratio"), percent(t.warm_ratio));
    set($("c-ratio-sub"), t.requests ? count(t.warm) + " of " + count(t.requests) + " requests served warm" : "no requests yet");
    set($("c-requests"), count(t.requests));
    set($("c-requests-sub"), count(t.warm) + " warm · " + count(t.cold) + " cold · " + count(t.errors) + " errors");
    // the median is estimated from the histogram's buckets (as Prometheus does); the means are exact
    set($("c-ttft"), t.ttft_p50_s === null ? "–" : "≈ " + seconds(t.ttft_p50_s));
    set($("c-ttft-sub"), "median · mean warm " + seconds(t.ttft_warm_mean_s) + " · cold " + seconds(t.ttft_cold_mean_s));
    set($("c-cost"), count(Math.round(t.loaded_s)) + " s");
    set($("c-cost-sub"), (t.loaded_s / 3600).toFixed(2) + " replica-hours loaded (starting or warm)");
    set($("c-starts"), count(t.starts));
    set($("c-starts-sub"), t.starts_failed ? count(t.starts_failed) + " failed" : "none failed");
    set($("c-hints"), count(t.hints));
    set($("c-hints-sub"), count(t.hints - t.hints_refused) + " accepted · " + count(t.hints_refused) + " refused");
    const states = Object.entries(data.states).sort((a, b) => (RANK[a[0]] ?? 9) - (RANK[b[0]] ?? 9));
    set($("counts"), data.models.length + (data.models.length === 1 ? " model: " : " models: ") + states.map(([s, n]) => n + " " + s).join(" · "));
  }

  function visible(m, filter, show) {
    if (filter && !m.name.toLowerCase().includes(filter)) return false;
    if (show === "all") return true;
    if (show === "loaded") return m.state !== "cold" || m.replicas.length > 0;
    return m.state === show;
  }

  function table() {
    const filter = $("filter").value.trim().toLowerCase();
    const show = $("show").value;
    const shown = data.models.filter((m) => visible(m, filter, show));
    shown.sort((a, b) => (RANK[a.state] ?? 9) - (RANK[b.state] ?? 9) || a.name.localeCompare(b.name));
    const drawn = shown.slice(0, MAX_ROWS);
    const tbody = $("rows");
    const names = new Set(data.models.map((m) => m.name));
    for (const name of rows.keys()) if (!names.has(name)) { rows.get(name).tr.remove(); rows.delete(name); }
    drawn.forEach((m) => update(row(m.name), m));
    // re-order only when the order changed: moving hundreds of rows every second would cost the browser
    const order = drawn.map((m) => rows.get(m.name).tr);
    const current = Array.from(tbody.children);
    if (order.length !== current.length || order.some((tr, i) => tr !== current[i])) tbody.replaceChildren(...order);
    const more = $("more");
    more.hidden = shown.length <= MAX_ROWS;
    set(more, (shown.length - MAX_ROWS) + " more models: type in the filter to find one.");
  }

  function row(name) {
    let r = rows.get(name);
    if (r) return r;
    const cells = {};
    const tr = el("tr", { "data-model": name });
    for (const key of ["name", "state", "replicas", "unload", "last", "requests", "ratio", "ttft"]) {
      cells[key] = el("td", { class: ["name", "state"].includes(key) ? key : key === "last" ? "" : "num" });
      tr.append(cells[key]);
    }
    cells.badge = el("span", { class: "badge" });
    cells.state.append(cells.badge);
    tr.addEventListener("click", () => { selected = name; chosenByUser = true; lastDetail = ""; render(); });
    r = { tr, cells };
    rows.set(name, r);
    return r;
  }

  function stateText(m) {
    if (m.state === "starting") return "starting" + (m.phase ? " · " + phaseName(m.phase) : "");
    return m.state;
  }

  function unloadText(m) {
    if (m.state !== "warm") return "–";
    if (m.unload_in_s !== null) return seconds(m.unload_in_s);
    return m.replicas.some((r) => r.in_flight > 0) ? "busy" : "never";
  }

  function update(r, m) {
    const c = r.cells;
    r.tr.dataset.state = m.state;
    setClass(r.tr, m.name === selected ? "selected" : "");
    set(c.name, m.name);
    setClass(c.badge, "badge s-" + m.state);
    set(c.badge, stateText(m));
    const live = m.replicas.filter((x) => x.state !== "failed").length;
    const busy = m.replicas.reduce((n, x) => n + x.in_flight, 0);
    set(c.replicas, live ? live + (busy ? " (" + busy + " busy)" : "") : "–");
    set(c.unload, unloadText(m));
    const last = m.last_start;
    set(c.last, m.state === "starting" ? m.trigger + " · under way" :
      last ? last.trigger + " · " + (last.outcome === "ok" ? seconds(last.total_s) : last.outcome) : "–");
    const h = m.hour;
    set(c.requests, h ? count(h.warm) + " / " + count(h.cold) : "–");
    set(c.ratio, h ? percent(h.warm_ratio) : "–");
    set(c.ttft, h && h.ttft_p50_s !== null ? "≈ " + seconds(h.ttft_p50_s) : "–");
  }

  function autoSelect() {
    // follow what is happening: a start under way, else the model that started last
    let best = null;
    let bestAt = -1;
    for (const m of data.models) {
      if (m.state === "starting") { best = m.name; break; }
      const at = m.last_start ? m.last_start.at : -1;
      if (at > bestAt) { best = m.name; bestAt = at; }
    }
    if (best !== selected) { selected = best; lastDetail = ""; }
  }

  function phaseClass(p) {
    return "ph ph-" + (p in PHASES ? p : "other");
  }

  // One bar per phase: its seconds, its share of the start, widths relative to the longest phase.
  function phaseBars(phases, running) {
    const entries = Object.entries(phases);
    if (running) entries.push([running.phase, running.seconds]);
    const longest = Math.max(1e-9, ...entries.map(([, s]) => s));
    const total = entries.reduce((t, [, s]) => t + s, 0) || 1e-9;
    const list = el("div", { class: "phases" });
    for (const [p, s] of entries) {
      const isRunning = running && p === running.phase && s === running.seconds;
      const bar = el("span", { class: phaseClass(p) + (isRunning ? " running" : "") });
      bar.style.width = Math.max(0.5, (s / longest) * 100) + "%";
      list.append(el("div", { class: "phase", "data-phase": p, "data-seconds": s.toFixed(4) },
        el("span", { class: "pname", text: phaseName(p) + (isRunning ? " …" : "") }),
        el("span", { class: "track" }, bar),
        el("span", { class: "psec", text: seconds(s) }),
        el("span", { class: "pshare", text: Math.round((s / total) * 100) + "%" })));
    }
    return list;
  }

  // Recent starts, one stacked bar each, on a common scale.
  function history(starts) {
    const longest = Math.max(1e-9, ...starts.map((s) => s.total_s));
    const list = el("div", { class: "history" });
    for (const s of starts.slice().reverse()) {
      const stack = el("span", { class: "stack" });
      stack.style.width = Math.max(1, (s.total_s / longest) * 100) + "%";
      const sum = Object.values(s.phases).reduce((a, b) => a + b, 0) || 1e-9;
      for (const [p, sec] of Object.entries(s.phases)) {
        const seg = el("span", { class: phaseClass(p), title: phaseName(p) + " " + seconds(sec) });
        seg.style.width = (sec / sum) * 100 + "%";
        stack.append(seg);
      }
      list.append(el("div", { class: "hrow" + (s.outcome === "ok" ? "" : " bad"), "data-outcome": s.outcome },
        el("span", { class: "hwhen", text: new Date(s.at * 1000).toLocaleTimeString() }),
        el("span", { class: "htrig", text: s.trigger }),
        el("span", { class: "track" }, stack),
        el("span", { class: "psec", text: s.outcome === "ok" ? seconds(s.total_s) : s.outcome })));
    }
    return list;
  }

  function legend() {
    const box = el("div", { class: "legend" });
    for (const p of Object.keys(PHASES)) box.append(el("span", {}, el("i", { class: phaseClass(p) }), phaseName(p)));
    return box;
  }

  function detail() {
    const box = $("detail");
    const m = data.models.find((x) => x.name === selected);
    if (!m) {
      if (lastDetail !== "none") { box.replaceChildren(el("p", { class: "hint", text: "Select a model to see its starts." })); lastDetail = "none"; }
      return;
    }
    const key = JSON.stringify(m);
    if (key === lastDetail) return;
    lastDetail = key;
    box.dataset.model = m.name;
    const parts = [el("h2", {}, m.name + " ", el("span", { class: "badge s-" + m.state, text: stateText(m) }))];
    const facts = el("dl", { class: "facts" },
      el("dt", { text: "engine" }), el("dd", { text: m.engine }),
      el("dt", { text: "keep-alive" }), el("dd", { text: m.keep_alive_s === null ? "forever" : seconds(m.keep_alive_s) }),
      el("dt", { text: "unload in" }), el("dd", { text: unloadText(m) }),
      el("dt", { text: "held requests" }), el("dd", { text: String(m.queue) }));
    parts.push(facts);
    if (m.replicas.length) {
      const t = el("table", { class: "replicas" }, el("tr", {}, ...["replica", "state", "pid", "in flight", "idle", "trigger"].map((h) => el("th", { text: h }))));
      for (const r of m.replicas) {
        t.append(el("tr", {}, el("td", { text: r.id }), el("td", { text: r.state + (r.phase ? " · " + phaseName(r.phase) : "") }),
          el("td", { text: r.pid ?? "–" }), el("td", { text: String(r.in_flight) }), el("td", { text: seconds(r.idle_s) }),
          el("td", { text: r.trigger })));
      }
      parts.push(t);
    }
    const starting = m.replicas.find((r) => r.state === "starting");
    if (starting) {
      const done = Object.values(starting.phases).reduce((a, b) => a + b, 0);
      const running = starting.phase ? { phase: starting.phase, seconds: Math.max(0, (starting.elapsed_s || 0) - done) } : null;
      parts.push(el("h3", { text: "Starting now (" + starting.trigger + "), " + seconds(starting.elapsed_s) + " so far" }));
      parts.push(phaseBars(starting.phases, running));
    }
    const last = m.last_start;
    if (last) {
      const head = "Last start: " + (last.outcome === "ok" ? seconds(last.total_s) : last.outcome) + ", by " + last.trigger +
        ", at " + new Date(last.at * 1000).toLocaleTimeString();
      const section = el("div", { class: "laststart", "data-outcome": last.outcome }, el("h3", { text: head }), phaseBars(last.phases, null));
      if (last.error) section.append(el("p", { class: "error", text: last.error }));
      parts.push(section);
    } else if (!starting) {
      parts.push(el("p", { class: "hint", text: "Not started since warmstart started." }));
    }
    if (m.starts.length > 1) parts.push(el("h3", { text: "Recent starts" }), history(m.starts));
    if (last || starting) parts.push(legend());
    const h = m.hour;
    if (h) {
      parts.push(el("h3", { text: "Last hour" }), el("dl", { class: "facts" },
        el("dt", { text: "requests" }), el("dd", { text: count(h.warm) + " warm · " + count(h.cold) + " cold · " + count(h.errors) + " errors" }),
        el("dt", { text: "warm ratio" }), el("dd", { text: percent(h.warm_ratio) }),
        el("dt", { text: "first token" }), el("dd", { text: "median ≈ " + seconds(h.ttft_p50_s) + " · mean warm " + seconds(h.ttft_warm_mean_s) + " · cold " + seconds(h.ttft_cold_mean_s) }),
        el("dt", { text: "loaded" }), el("dd", { text: count(Math.round(h.loaded_s)) + " replica-seconds" }),
        el("dt", { text: "hints" }), el("dd", { text: count(h.hints) + " (" + count(h.hints_refused) + " refused)" })));
    }
    if (m.problem) parts.push(el("p", { class: "error", text: "Cannot start: " + m.problem }));
    if (m.last_failure) parts.push(el("p", { class: "error", text: "Last failure: " + m.last_failure }));
    box.replaceChildren(...parts);
  }

  $("filter").addEventListener("input", () => data && render());
  $("show").addEventListener("change", () => data && render());
  poll();
})();
