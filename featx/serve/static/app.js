// featx's page: a client of the service's own HTTP API (/info, /predict, /search, /thumbnail); no logic of its own.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { token: sessionStorage.getItem("featx-token"), info: null };

function headers() {
  return state.token ? { Authorization: `Bearer ${state.token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    askForToken(state.token ? "That token was not accepted." : "");
    throw new Error("the service needs its token");
  }
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}

function askForToken(message) {
  $("main").hidden = true;
  $("token-form").hidden = false;
  $("token-error").textContent = message;
  $("loaded").textContent = "locked";
  $("token").focus();
}

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token").value.trim();
  sessionStorage.setItem("featx-token", state.token);
  start();
});

async function start() {
  try {
    state.info = await (await api("/info")).json();
  } catch (error) {
    if (!$("token-form").hidden) return;
    $("loaded").textContent = `cannot reach the service: ${error.message}`;
    return;
  }
  $("token-form").hidden = true;
  $("main").hidden = false;
  const info = state.info;
  const parts = [info.backbone.describe];
  if (info.dataset) parts.push(`dataset ${info.dataset}`);
  if (info.head) parts.push(`head ${info.head.name} (${info.head.classes.length} classes)`);
  $("loaded").textContent = parts.join(" · ");
  if (info.dataset && !state.map) loadMap();
  if (info.dataset && !state.audit) loadAudit();
  if (info.dataset) $("select-section").hidden = false;
}

function setStatus(text, isError = false) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

async function thumbnail(img, key) {
  // fetched with the token (an <img src> cannot send it), then shown from a blob URL
  try {
    const blob = await (await api(`/thumbnail/${key}`)).blob();
    img.src = URL.createObjectURL(blob);
  } catch (error) {
    img.alt = `no thumbnail: ${error.message}`;
  }
}

function showNeighbours(rows) {
  const list = $("neighbours");
  list.replaceChildren();
  $("neighbours-title").hidden = rows.length === 0;
  for (const row of rows) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.key = row.key;
    button.setAttribute("aria-label", `search from neighbour ${row.rank}: ${row.label ?? "unlabelled"}, similarity ${row.similarity.toFixed(3)}`);
    const img = document.createElement("img");
    img.alt = row.label ?? "unlabelled";
    const label = document.createElement("span");
    label.textContent = `${row.label ?? "–"} · ${row.split ?? ""}`;
    const similarity = document.createElement("span");
    similarity.textContent = `similarity ${row.similarity.toFixed(3)}`;
    button.append(img, label, similarity);
    button.addEventListener("click", () => searchFromKey(row));
    item.append(button);
    list.append(item);
    thumbnail(img, row.key);
  }
}

function sampleButton(key, caption, description) {
  // a thumbnail with a caption that searches from the sample when pressed
  const item = document.createElement("li");
  const button = document.createElement("button");
  button.type = "button";
  button.dataset.key = key;
  button.setAttribute("aria-label", description);
  const img = document.createElement("img");
  img.alt = caption;
  const text = document.createElement("span");
  text.textContent = caption;
  button.append(img, text);
  button.addEventListener("click", () => {
    searchFromKey({ key, label: caption });
    $("query-title").scrollIntoView({ behavior: "smooth" });
  });
  item.append(button);
  thumbnail(img, key);
  return item;
}

async function loadAudit() {
  let audit;
  try {
    audit = await (await api("/audit")).json();
  } catch (_) {
    return;  // no report for this dataset: the section stays hidden
  }
  state.audit = audit;
  const s = audit.summary;
  $("audit-summary").textContent = `${s.label_issues} likely label issues, ${s.near_leaks} near-twins and ` +
    `${s.exact_leaks} identical images across splits, ${s.outliers_z_over_5} outliers (from featx audit).`;
  $("audit-issues").replaceChildren(...audit.label_issues.map((f) =>
    sampleButton(f.key, `${f.given} → ${f.suggested}`, `labelled ${f.given}, likely ${f.suggested}`)));
  $("audit-leaks").replaceChildren(...audit.near_leaks.flatMap((f) => [
    sampleButton(f.key, `${f.split}: ${f.label}`, `held-out image labelled ${f.label}`),
    sampleButton(f.train_key, `train: ${f.train_label} (${f.similarity.toFixed(3)})`, `its training twin`)]));
  $("audit-outliers").replaceChildren(...audit.outliers.map((f) =>
    sampleButton(f.key, `${f.label ?? "–"} (z ${f.z.toFixed(0)})`, `outlier labelled ${f.label ?? "nothing"}`)));
  $("audit-section").hidden = false;
}

async function loadSelection(event) {
  // what featx select would choose: each pick a thumbnail that searches from it when pressed
  if (event) event.preventDefault();
  const budget = Math.max(1, Math.min(200, parseInt($("select-budget").value, 10) || 24));
  const strategy = $("select-strategy").value;
  $("select-status").textContent = "choosing…";
  let chosen;
  try {
    chosen = await (await api(`/select?budget=${budget}&strategy=${strategy}`)).json();
  } catch (error) {
    $("select-status").textContent = `could not choose: ${error.message}`;
    return;
  }
  $("select-status").textContent = "";
  $("select-summary").textContent = `${chosen.picks.length} of ${chosen.pool} images (${chosen.strategy}` +
    (chosen.known ? `, ${chosen.known} labels known` : "") + `): featx select ${chosen.dataset} --budget ` +
    `${budget} writes them as a CSV to fill in.`;
  $("select-picks").replaceChildren(...chosen.picks.map((p, i) =>
    sampleButton(p.key, `${i + 1}. ${p.suggested_label ? p.suggested_label + "?" : p.reason}`,
      `pick ${i + 1}: ${p.reason}`)));
}

function k() {
  return Math.max(1, Math.min(100, parseInt($("k").value, 10) || 12));
}

async function searchFromFile(file) {
  if (!file) return;
  $("query").hidden = false;
  $("query-image").src = URL.createObjectURL(file);
  $("query-caption").textContent = file.name || "pasted image";
  $("predictions").replaceChildren();
  setStatus("searching…");
  try {
    if (state.info && state.info.head) {
      const form = new FormData();
      form.append("files", file, file.name || "pasted.png");
      const predicted = await (await api("/predict?top_k=3", { method: "POST", body: form })).json();
      for (const p of predicted.results[0].predictions) {
        const li = document.createElement("li");
        li.textContent = `${p.label}: ${(p.probability * 100).toFixed(1)}%`;
        $("predictions").append(li);
      }
    }
    if (state.info && state.info.dataset) {
      const form = new FormData();
      form.append("files", file, file.name || "pasted.png");
      const found = await (await api(`/search?k=${k()}`, { method: "POST", body: form })).json();
      showNeighbours(found.results[0].results);
    }
    setStatus("");
  } catch (error) {
    setStatus(error.message, true);
  }
}

async function searchFromKey(row) {
  $("query").hidden = false;
  $("predictions").replaceChildren();
  $("query-caption").textContent = `${row.label ?? "sample"} (${row.key.slice(0, 12)}…)`;
  thumbnail($("query-image"), row.key);
  setStatus("searching…");
  try {
    const form = new FormData();
    form.append("key", row.key);
    const found = await (await api(`/search?k=${k()}`, { method: "POST", body: form })).json();
    showNeighbours(found.results[0].results);
    setStatus("");
  } catch (error) {
    setStatus(error.message, true);
  }
}

$("file").addEventListener("change", (event) => searchFromFile(event.target.files[0]));
const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  searchFromFile(event.dataTransfer.files[0]);
});
drop.addEventListener("keydown", (event) => {
  if (event.key === "Enter" || event.key === " ") { event.preventDefault(); $("file").click(); }
});
document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData?.items || [])].find((i) => i.type.startsWith("image/"));
  if (item) searchFromFile(item.getAsFile());
});

// ---- the map: one point per sample, drawn on a canvas so a million stay smooth ----
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf", "#393b79", "#e7ba52", "#637939", "#ad494a", "#7b4173", "#3182bd"];
const CELLS = 64;

// /map?format=binary (featx/serve/packed_map.py): coordinates and label codes, 7 bytes a point; a point's key
// comes from /map/point/{i} when it is pointed at or clicked
function unpackMap(buffer) {
  const magic = new TextDecoder().decode(new Uint8Array(buffer, 0, 8));
  if (magic !== "FXMAP001") throw new Error("the map's answer is not a packed map");
  const view = new DataView(buffer);
  const n = view.getUint32(8, true), size = view.getUint32(12, true);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 16, size)));
  let at = 16 + size;
  const take = (Type) => { const a = new Type(buffer, at, n); at += n * Type.BYTES_PER_ELEMENT; return a; };
  const xs = take(Uint16Array), ys = take(Uint16Array);
  const x = new Float32Array(n), y = new Float32Array(n);
  for (let i = 0; i < n; i++) { x[i] = xs[i] / 65535; y[i] = ys[i] / 65535; }
  return { ...header, n, x, y, codes: { labels: take(Uint16Array), splits: take(Uint8Array) },
           names: { labels: header.labels, splits: header.splits }, none: { labels: 65535, splits: 255 },
           points: new Map() };
}

function valueOf(m, field, i) {
  const code = m.codes[field][i];
  return code === m.none[field] ? null : m.names[field][code];
}

async function mapPoint(i) {
  const m = state.map;
  if (!m.points.has(i)) m.points.set(i, (await api(`/map/point/${i}`)).json());
  return m.points.get(i);
}

async function loadMap() {
  $("map-section").hidden = false;
  $("map-status").textContent = "computing the map (once per dataset; `featx map` does it ahead of time)…";
  try {
    state.map = unpackMap(await (await api("/map?format=binary")).arrayBuffer());
  } catch (error) {
    $("map-status").textContent = `no map: ${error.message}`;
    return;
  }
  const m = state.map;
  m.grid = new Map();  // cell → point indices, for finding the point under the pointer
  for (let i = 0; i < m.n; i++) {
    const cell = Math.min(CELLS - 1, Math.floor(m.x[i] * CELLS)) * CELLS + Math.min(CELLS - 1, Math.floor(m.y[i] * CELLS));
    if (!m.grid.has(cell)) m.grid.set(cell, []);
    m.grid.get(cell).push(i);
  }
  $("map-status").textContent = `${m.n.toLocaleString()} images (${m.method})`;
  drawMap();
}

function mapGeometry() {
  const canvas = $("map");
  const rect = canvas.getBoundingClientRect();
  const pad = 8;
  return { canvas, rect, pad, w: rect.width - 2 * pad, h: rect.height - 2 * pad };
}

function drawMap() {
  const m = state.map;
  if (!m) return;
  const { canvas, rect, pad, w, h } = mapGeometry();
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(rect.width * ratio);
  canvas.height = Math.round(rect.height * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, rect.width, rect.height);
  const field = $("colour").value;
  const codes = m.codes[field], none = m.none[field];
  const present = new Set(codes);
  const names = [...m.names[field].map((name, code) => [name, code]).filter(([, code]) => present.has(code)),
                 ...(present.has(none) ? [["–", none]] : [])];
  const colour = new Map(names.map(([, code], i) => [code, PALETTE[i % PALETTE.length]]));
  if (m.n > 20000) {
    // many points: written straight into the canvas's pixels, one pass, a few tens of milliseconds at a million
    const image = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const rgb = new Map([...colour].map(([code, hex]) => [code, [1, 3, 5].map((j) => parseInt(hex.slice(j, j + 2), 16))]));
    const dot = Math.max(1, Math.round(1.5 * ratio));
    for (let i = 0; i < m.n; i++) {
      const px = Math.round((pad + m.x[i] * w) * ratio), py = Math.round((pad + m.y[i] * h) * ratio);
      if (px < 0 || py < 0 || px + dot > canvas.width || py + dot > canvas.height) continue;
      const [r, g, b] = rgb.get(codes[i]);
      for (let dy = 0; dy < dot; dy++) {
        for (let dx = 0; dx < dot; dx++) {
          const at = ((py + dy) * canvas.width + px + dx) * 4;
          image.data[at] = r; image.data[at + 1] = g; image.data[at + 2] = b; image.data[at + 3] = 255;
        }
      }
    }
    ctx.putImageData(image, 0, 0);
  } else {
    for (const [, code] of names) {  // one fillStyle per class: far fewer state changes than per point
      ctx.fillStyle = colour.get(code);
      for (let i = 0; i < m.n; i++) {
        if (codes[i] === code) ctx.fillRect(pad + m.x[i] * w - 1.5, pad + m.y[i] * h - 1.5, 3, 3);
      }
    }
  }
  canvas.dataset.points = String(m.n);
  $("legend").replaceChildren(...names.map(([name, code]) => {
    const li = document.createElement("li");
    const swatch = document.createElement("i");
    swatch.style.background = colour.get(code);
    li.append(swatch, document.createTextNode(name));
    return li;
  }));
}

function pointAt(event) {
  const m = state.map;
  if (!m) return -1;
  const { rect, pad, w, h } = mapGeometry();
  const x = (event.clientX - rect.left - pad) / w;
  const y = (event.clientY - rect.top - pad) / h;
  const cx = Math.floor(x * CELLS), cy = Math.floor(y * CELLS);
  let best = -1, bestDistance = (8 / Math.min(w, h)) ** 2;  // within 8 px
  for (let dx = -1; dx <= 1; dx++) {
    for (let dy = -1; dy <= 1; dy++) {
      for (const i of m.grid.get((cx + dx) * CELLS + (cy + dy)) || []) {
        const d = (m.x[i] - x) ** 2 + (m.y[i] - y) ** 2;
        if (d < bestDistance) { best = i; bestDistance = d; }
      }
    }
  }
  return best;
}

$("map").addEventListener("mousemove", (event) => {
  const i = pointAt(event);
  const tip = $("tip");
  if (i < 0) { tip.hidden = true; state.hover = -1; return; }
  if (i !== state.hover) {
    state.hover = i;
    $("tip-label").textContent = `${valueOf(state.map, "labels", i) ?? "–"} · ${valueOf(state.map, "splits", i) ?? ""}`;
    $("tip-image").removeAttribute("src");
    mapPoint(i).then((point) => { if (state.hover === i) thumbnail($("tip-image"), point.key); })
      .catch((error) => { $("tip-image").alt = `no thumbnail: ${error.message}`; });
  }
  const { rect } = mapGeometry();
  tip.style.left = `${Math.min(event.clientX - rect.left + 12, rect.width - 90)}px`;
  tip.style.top = `${event.clientY - rect.top + 12}px`;
  tip.hidden = false;
});
$("map").addEventListener("mouseleave", () => { $("tip").hidden = true; state.hover = -1; });
$("map").addEventListener("click", (event) => {
  const i = pointAt(event);
  if (i < 0) return;
  mapPoint(i).then((point) => {
    searchFromKey({ key: point.key, label: point.label });
    $("query-title").scrollIntoView({ behavior: "smooth" });
  }).catch((error) => setStatus(`no such point: ${error.message}`));
});
$("colour").addEventListener("change", drawMap);
$("select-form").addEventListener("submit", loadSelection);
window.addEventListener("resize", drawMap);

start();
