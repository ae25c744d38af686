"use strict";
// pydeep's report page: draws the panels from the JSON document in #data.
// Every number comes from that document, which the viewer's own functions
// wrote (the same as top, lines, bytecode, heap --growth print).
(function () {
  const data = JSON.parse(document.getElementById("data").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const svgEl = (tag, attrs) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    return e;
  };
  const top = data.top;
  const period = data.period_ns;
  const time = (ns) => {
    if (ns >= 1e9) return (ns / 1e9).toFixed(3) + " s";
    if (ns >= 1e6) return (ns / 1e6).toFixed(1) + " ms";
    return (ns / 1e3).toFixed(0) + " µs";
  };
  const pct = (n, whole) => (whole ? (100 * n / whole) : 0).toFixed(2) + "%";

  // Summary.
  $("summary").textContent = [
    data.argv || data.file,
    data.python ? "CPython " + data.python : null,
    data.rate_hz ? data.rate_hz + " Hz" : null,
    top.samples + " samples standing for " + top.ticks + " ticks (" + time(top.time_ns) + ")",
    top.threads.length + " threads",
  ].filter(Boolean).join(" · ");
  $("footer").textContent = data.viewer + " · " + data.file;

  // Flame graph (icicle).
  const flame = data.flame;
  const nodes = flame.parent.length;
  const children = Array.from({ length: nodes }, () => []);
  for (let i = 1; i < nodes; i++) children[flame.parent[i]].push(i);
  for (const list of children) list.sort((a, b) => flame.value[b] - flame.value[a]);
  const ROW = 18;
  const flameEl = $("flame");
  let root = 0;
  let matcher = null;
  const hue = (text) => {
    let h = 0;
    for (let i = 0; i < text.length; i++) h = (h * 31 + text.charCodeAt(i)) >>> 0;
    return h;
  };
  const colour = (node) => {
    const name = flame.names[flame.name[node]];
    if (node === 0) return "#cfd8dc";
    if (flame.parent[node] === 0) return "#90caf9";
    if (name === "<idle>") return "#b0bec5";
    if (name === "<GIL held>") return "#81c784";
    if (name === "<no GIL>") return "#ffb74d";
    const h = hue(name);
    return "hsl(" + (10 + h % 40) + "," + (60 + h % 30) + "%," + (55 + (h >> 8) % 15) + "%)";
  };
  const title = (node) => {
    const value = flame.value[node];
    return flame.titles[flame.name[node]] + " (" + value + " ticks, " + time(value * period) + ", " +
      pct(value, flame.value[0]) + ")";
  };
  const matches = (node) => matcher !== null && matcher(flame.titles[flame.name[node]]);
  function addFrame(node, x, width, depth, ancestor) {
    const div = el("div", { class: "frame" + (ancestor ? " ancestor" : ""), "data-node": node, title: title(node) });
    div.style.left = x + "px";
    div.style.width = width + "px";
    div.style.top = depth * ROW + "px";
    div.style.background = colour(node);
    if (width > 24) div.textContent = flame.names[flame.name[node]];
    if (matches(node)) div.classList.add("match");
    flameEl.appendChild(div);
    return div;
  }
  function drawFlame() {
    flameEl.textContent = "";
    flameEl.dataset.root = root;
    const width = flameEl.clientWidth || 1000;
    const ancestors = [];
    for (let n = root; n !== 0; n = flame.parent[n]) ancestors.unshift(flame.parent[n]);
    ancestors.forEach((node, depth) => addFrame(node, 0, width, depth, true));
    let deepest = ancestors.length;
    const scale = width / Math.max(1, flame.value[root]);
    const stack = [[root, 0, ancestors.length]];
    while (stack.length) {
      const [node, x, depth] = stack.pop();
      const w = flame.value[node] * scale;
      if (w < 0.5) continue;
      addFrame(node, x, w, depth, false);
      deepest = Math.max(deepest, depth);
      let cx = x;
      for (const child of children[node]) {
        stack.push([child, cx, depth + 1]);
        cx += flame.value[child] * scale;
      }
    }
    flameEl.style.height = (deepest + 1) * ROW + "px";
    updateMatched();
  }
  function updateMatched() {
    if (matcher === null) { $("matched").textContent = ""; return; }
    // Ticks of the outermost matching nodes under the zoom root.
    let matched = 0;
    const stack = [root];
    while (stack.length) {
      const node = stack.pop();
      if (matches(node)) { matched += flame.value[node]; continue; }
      for (const child of children[node]) stack.push(child);
    }
    $("matched").textContent = "matched " + pct(matched, flame.value[root]);
  }
  flameEl.addEventListener("click", (event) => {
    const frame = event.target.closest(".frame");
    if (!frame) return;
    const node = Number(frame.dataset.node);
    root = node === root ? flame.parent[node] : node;
    if (frame.classList.contains("ancestor")) root = node;
    drawFlame();
  });
  flameEl.addEventListener("mouseover", (event) => {
    const frame = event.target.closest(".frame");
    if (frame) $("details").textContent = frame.title;
  });
  const select = $("thread");
  select.appendChild(el("option", { value: 0 }, "all threads (" + time(flame.value[0] * period) + ")"));
  for (const thread of flame.threads) {
    if (thread.node === null) continue;
    select.appendChild(el("option", { value: thread.node }, thread.describe + " (" + time(thread.ticks * period) + ")"));
  }
  select.addEventListener("change", () => { root = Number(select.value); drawFlame(); });
  $("reset").addEventListener("click", () => { root = 0; select.value = "0"; drawFlame(); });
  $("search").addEventListener("input", () => {
    const text = $("search").value;
    if (!text) {
      matcher = null;
    } else {
      let regex = null;
      try { regex = new RegExp(text); } catch (e) { regex = null; }
      matcher = regex ? (t) => regex.test(t) : (t) => t.includes(text);
    }
    for (const frame of flameEl.children) {
      frame.classList.toggle("match", matches(Number(frame.dataset.node)));
    }
    updateMatched();
  });
  window.addEventListener("resize", drawFlame);

  // Timeline.
  const timeline = data.timeline;
  if (!timeline) {
    $("timeline").textContent = "No samples.";
  } else {
    const capacity = Math.max(1, timeline.bucket_ns / timeline.period_ns);
    for (const thread of timeline.threads) {
      const row = el("div", { class: "timeline-row", "data-thread": thread.thread });
      const total = thread.ticks.reduce((a, b) => a + b, 0);
      const missed = thread.missed.reduce((a, b) => a + b, 0);
      row.appendChild(el("div", { class: "name", title: thread.describe },
        thread.describe + " · " + time(total * timeline.period_ns) + (missed ? " · " + missed + " missed" : "")));
      const n = thread.ticks.length;
      const svg = svgEl("svg", { viewBox: "0 0 " + n + " 10", preserveAspectRatio: "none" });
      thread.ticks.forEach((ticks, i) => {
        if (ticks === 0) {
          svg.appendChild(svgEl("rect", { x: i, y: 0, width: 1, height: 10, fill: "#cfd8dc", class: "gap" }));
          return;
        }
        const h = Math.min(10, 10 * ticks / capacity);
        const m = Math.min(h, 10 * thread.missed[i] / capacity);
        svg.appendChild(svgEl("rect", { x: i, y: 10 - h, width: 1, height: h - m, fill: "#1e88e5" }));
        if (m > 0) svg.appendChild(svgEl("rect", { x: i, y: 10 - m, width: 1, height: m, fill: "#e53935", class: "missed" }));
      });
      const t0 = timeline.first_seconds;
      svg.appendChild(svgEl("title", {})).textContent =
        "from " + t0.toFixed(3) + " s, " + time(timeline.bucket_ns) + " per bucket";
      row.appendChild(svg);
      $("timeline").appendChild(row);
    }
  }

  // Top table.
  const tbody = document.querySelector("#top-table tbody");
  for (const f of top.functions) {
    const tr = el("tr", { "data-label": f.label, "data-own": f.own, "data-total": f.total });
    for (const text of [f.own_percent.toFixed(2) + "%", f.total_percent.toFixed(2) + "%", f.own, f.total,
      time(f.own_ns), time(f.total_ns), f.label]) {
      tr.appendChild(el("td", {}, String(text)));
    }
    tbody.appendChild(tr);
  }

  // Source with line heat.
  if (!data.sources.length) $("sources").textContent = "No source lines sampled.";
  for (const source of data.sources) {
    $("sources").appendChild(el("h3", {}, source.file + " (" + pct(source.own, top.ticks) + " own)"));
    if (source.missing) {
      $("sources").appendChild(el("p", {}, "Source not available (neither on disk nor embedded)."));
      continue;
    }
    const table = el("table", { class: "source" });
    const most = Math.max(1, ...source.lines.map((l) => l[2]));
    for (const [number, text, own, total] of source.lines) {
      const tr = el("tr", { "data-line": number });
      tr.appendChild(el("td", { class: "num" }, own ? pct(own, top.ticks) : ""));
      tr.appendChild(el("td", { class: "num" }, total ? pct(total, top.ticks) : ""));
      tr.appendChild(el("td", { class: "num" }, String(number)));
      const code = el("td", {}, text);
      if (own) code.style.background = "rgba(229,57,53," + (0.1 + 0.6 * own / most).toFixed(3) + ")";
      tr.appendChild(code);
      table.appendChild(tr);
    }
    $("sources").appendChild(table);
  }

  // Bytecode.
  if (!data.bytecode.length) $("bytecode").textContent = "No bytecode recorded.";
  for (const panel of data.bytecode) {
    $("bytecode").appendChild(el("h3", {}, (panel.function || "?") + " (" + panel.samples + " samples)"));
    $("bytecode").appendChild(el("pre", { class: "bytecode" }, panel.text));
  }

  // Snapshots.
  const snapshots = data.snapshots;
  const snapshotText = [["Frames and variables", snapshots.scopes], ["Generators and asyncio tasks", snapshots.generators]];
  let anySnapshot = false;
  for (const [name, text] of snapshotText) {
    if (!text) continue;
    anySnapshot = true;
    $("snapshots").appendChild(el("h3", {}, name));
    $("snapshots").appendChild(el("pre", { class: "snapshot" }, text));
  }
  if (!anySnapshot) $("snapshots").textContent = "None recorded (record with --snapshot-every).";

  // Heap chart.
  const heap = snapshots.heap;
  if (!heap) {
    $("heap").textContent = "None recorded (record with --heap-every).";
  } else {
    const W = 800, H = 240, P = 40;
    const svg = svgEl("svg", { width: W, height: H, id: "heap-chart" });
    const t0 = heap.seconds[0], t1 = heap.seconds[heap.seconds.length - 1];
    const most = Math.max(1, ...heap.series.flatMap((s) => s.counts));
    const x = (t) => P + (W - 2 * P) * (t1 > t0 ? (t - t0) / (t1 - t0) : 0.5);
    const y = (c) => H - P - (H - 2 * P) * c / most;
    svg.appendChild(svgEl("line", { x1: P, y1: H - P, x2: W - P, y2: H - P, stroke: "#999" }));
    svg.appendChild(svgEl("line", { x1: P, y1: P, x2: P, y2: H - P, stroke: "#999" }));
    const label = svgEl("text", { x: P, y: P - 8, "font-size": 11 });
    label.textContent = most + " objects";
    svg.appendChild(label);
    const legend = el("div", { class: "legend" });
    heap.series.forEach((series, i) => {
      const colourOf = "hsl(" + (i * 47 % 360) + ",65%,45%)";
      const points = series.counts.map((c, j) => x(heap.seconds[j]) + "," + y(c)).join(" ");
      const line = svgEl("polyline", { points, fill: "none", stroke: colourOf, "stroke-width": 2, class: "series" });
      line.appendChild(svgEl("title", {})).textContent = series.name;
      svg.appendChild(line);
      legend.appendChild(el("span", { style: "color:" + colourOf }, series.name + " " + series.counts[series.counts.length - 1]));
    });
    $("heap").appendChild(svg);
    $("heap").appendChild(legend);
    if (heap.growth) $("heap").appendChild(el("pre", { class: "growth" }, heap.growth));
  }

  drawFlame();
  document.body.dataset.ready = "true";
})();
