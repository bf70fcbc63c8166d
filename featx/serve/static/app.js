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
    button.setAttribute("aria-label", `search from neighbour ${row.rank}: ${row.label ?? "unlabelled"}, score ${row.score.toFixed(3)}`);
    const img = document.createElement("img");
    img.alt = row.label ?? "unlabelled";
    const label = document.createElement("span");
    label.textContent = `${row.label ?? "–"} · ${row.split ?? ""}`;
    const score = document.createElement("span");
    score.textContent = `score ${row.score.toFixed(3)}`;
    button.append(img, label, score);
    button.addEventListener("click", () => searchFromKey(row));
    item.append(button);
    list.append(item);
    thumbnail(img, row.key);
  }
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

start();
