// masklet app frontend: plain JS over the JSON API in server.py (no build step).
"use strict";

const $ = (sel) => document.querySelector(sel);
const canvas = $("#canvas");
const ctx = canvas.getContext("2d");

const app = {
  state: null,        // GET /api/state
  frame: 0,
  selected: null,     // selected object id
  image: null,        // current frame (HTMLImageElement)
  overlay: null,      // current overlay (HTMLImageElement)
  overlayVersion: 0,
  drag: null,         // box being drawn {x0, y0, x1, y1}
  polling: null,
  lastLatencyMs: null,
};
window.masklet = app; // for tests and the console

// ------------------------------------------------------------------ API
async function api(method, url, body) {
  const opts = { method, headers: {} };
  if (body instanceof FormData) opts.body = body;
  else if (body !== undefined) { opts.body = JSON.stringify(body); opts.headers["Content-Type"] = "application/json"; }
  const res = await fetch(url, opts);
  const data = res.headers.get("content-type")?.includes("json") ? await res.json() : null;
  if (!res.ok) throw new Error((data && data.detail) || `${res.status} ${res.statusText}`);
  return data;
}

function status(text, error = false) {
  const el = $("#status");
  el.textContent = text;
  el.classList.toggle("error", error);
}

async function guarded(fn) {
  try { return await fn(); } catch (err) { status(err.message, true); return null; }
}

function loadImage(url) {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`cannot load ${url}`));
    img.src = url;
  });
}

// ------------------------------------------------------------------ media
async function loadMedia() {
  const [info, items] = await Promise.all([api("GET", "/api/info"), api("GET", "/api/media")]);
  $("#model-name").textContent = info.model;
  const list = $("#media-list");
  list.innerHTML = "";
  for (const item of items) {
    const li = document.createElement("li");
    li.className = "media-item";
    li.dataset.path = item.path;
    li.title = item.path;
    li.innerHTML = `<span></span><span class="kind"></span>`;
    li.children[0].textContent = item.path;
    li.children[1].textContent = item.kind;
    li.onclick = () => guarded(() => openMedia(item.path));
    list.appendChild(li);
  }
  if (info.current && items.some((m) => m.path === info.current)) await guarded(() => openMedia(info.current));
}

async function openMedia(path) {
  status(`opening ${path}…`);
  const state = await api("POST", "/api/open", { path });
  document.querySelectorAll(".media-item").forEach((li) => li.classList.toggle("active", li.dataset.path === path));
  setState(state);
  app.selected = state.objects.length ? state.objects[0].id : null;
  const m = state.media;
  document.body.classList.toggle("image", m.kind === "image");
  canvas.width = m.width;
  canvas.height = m.height;
  fitCanvas();
  $("#empty").hidden = true;
  $("#scrubber").max = m.num_frames - 1;
  await showFrame(state.frame);
  renderObjects();
  status(`${path}: ${m.width}×${m.height}, ${m.num_frames} frame(s)`);
  if (state.job && state.job.running) startPolling();
}

function fitCanvas() {
  // show the frame as large as the stage allows (clicks are mapped back to image pixels in toImage)
  const stage = $("#stage");
  const scale = Math.min((stage.clientWidth - 8) / canvas.width, (stage.clientHeight - 8) / canvas.height);
  canvas.style.width = `${Math.floor(canvas.width * scale)}px`;
  canvas.style.height = `${Math.floor(canvas.height * scale)}px`;
}
window.addEventListener("resize", fitCanvas);

function setState(state) {
  app.state = state;
  $("#undo").disabled = !state.can_undo;
  $("#redo").disabled = !state.can_redo;
  renderPresence();
}

async function refresh() {
  setState(await api("GET", "/api/state"));
  renderObjects();
  await loadOverlay();
}

// ------------------------------------------------------------------ frames
let frameTimer = null;
async function showFrame(t) {
  const m = app.state.media;
  t = Math.max(0, Math.min(m.num_frames - 1, t));
  app.frame = t;
  $("#scrubber").value = t;
  $("#frame-label").textContent = `${t} / ${m.num_frames - 1}`;
  const [img] = await Promise.all([loadImage(`/api/image/${t}`), loadOverlay()]);
  if (app.frame !== t) return;
  app.image = img;
  draw();
  clearTimeout(frameTimer);  // tell the server where we are (resume + encoding ahead), not on every scrub step
  frameTimer = setTimeout(() => api("PUT", "/api/frame", { frame: t }).catch(() => {}), 150);
  updateAlternative();
}

async function loadOverlay() {
  const t = app.frame;
  const img = await loadImage(`/api/overlay/${t}?v=${++app.overlayVersion}`);
  if (app.frame === t) { app.overlay = img; draw(); }
}

function promptOf(objId, t) {
  const p = app.state && app.state.prompts[String(objId)];
  return (p && p[String(t)]) || null;
}

function draw() {
  if (!app.image) return;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(app.image, 0, 0);
  if (app.overlay) ctx.drawImage(app.overlay, 0, 0);
  const r = Math.max(4, canvas.width / 160);
  ctx.lineWidth = Math.max(1.5, canvas.width / 500);
  for (const obj of app.state.objects) {
    const p = promptOf(obj.id, app.frame);
    if (!p || obj.hidden) continue;
    const sel = obj.id === app.selected;
    if (p.box) {
      ctx.strokeStyle = sel ? "#fff" : obj.color;
      ctx.strokeRect(p.box[0], p.box[1], p.box[2] - p.box[0], p.box[3] - p.box[1]);
    }
    for (const [x, y, label] of p.points || []) {
      ctx.beginPath();
      ctx.arc(x, y, sel ? r * 1.2 : r, 0, 2 * Math.PI);
      ctx.fillStyle = label ? "#2ecc40" : "#ff4136";
      ctx.fill();
      ctx.strokeStyle = sel ? "#fff" : "#000";
      ctx.stroke();
    }
  }
  if (app.drag) {
    const d = app.drag;
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = "#fff";
    ctx.strokeRect(d.x0, d.y0, d.x1 - d.x0, d.y1 - d.y0);
    ctx.setLineDash([]);
  }
}

// ------------------------------------------------------------------ prompts
function toImage(ev) {
  const rect = canvas.getBoundingClientRect();
  return [(ev.clientX - rect.left) * canvas.width / rect.width, (ev.clientY - rect.top) * canvas.height / rect.height];
}

async function ensureObject() {
  if (app.selected !== null && app.state.objects.some((o) => o.id === app.selected)) return app.selected;
  const obj = await api("POST", "/api/objects", {});
  app.selected = obj.id;
  await refresh();
  return obj.id;
}

async function sendPrompt(change) {
  if (!app.state) return;
  if (app.state.job && app.state.job.running) { status("a propagation is running: cancel it or wait", true); return; }
  const id = await ensureObject();
  const old = promptOf(id, app.frame) || { points: [], box: null };
  const body = { object: id, frame: app.frame, points: [...(old.points || [])], box: old.box };
  change(body);
  const t0 = performance.now();
  const res = await api("POST", "/api/prompts", body);
  await refresh();
  app.lastLatencyMs = performance.now() - t0;
  const score = res.mask && res.mask.score != null ? ` score ${res.mask.score.toFixed(2)}` : "";
  status(`object ${id}, frame ${app.frame}: mask in ${app.lastLatencyMs.toFixed(0)} ms${score}`);
  updateAlternative();
}

canvas.addEventListener("contextmenu", (ev) => ev.preventDefault());
canvas.addEventListener("mousedown", (ev) => {
  if (!app.image) return;
  const [x, y] = toImage(ev);
  app.drag = { x0: x, y0: y, x1: x, y1: y, button: ev.button, shift: ev.shiftKey, moved: false };
});
canvas.addEventListener("mousemove", (ev) => {
  if (!app.drag) return;
  const [x, y] = toImage(ev);
  app.drag.x1 = x; app.drag.y1 = y;
  const rect = canvas.getBoundingClientRect();
  const px = Math.hypot(x - app.drag.x0, y - app.drag.y0) * rect.width / canvas.width;
  if (px > 6) { app.drag.moved = true; draw(); }
});
window.addEventListener("mouseup", (ev) => {
  const d = app.drag;
  if (!d) return;
  app.drag = null;
  if (d.moved) {
    const box = [Math.min(d.x0, d.x1), Math.min(d.y0, d.y1), Math.max(d.x0, d.x1), Math.max(d.y0, d.y1)]
      .map((v, i) => Math.max(0, Math.min(i % 2 ? canvas.height : canvas.width, v)));
    guarded(() => sendPrompt((b) => { b.box = box; }));
  } else if (ev.target === canvas) {
    const label = d.button === 2 || d.shift ? 0 : 1;
    guarded(() => sendPrompt((b) => { b.points.push([d.x0, d.y0, label]); }));
  }
  draw();
});

function updateAlternative() {
  const p = app.selected !== null && promptOf(app.selected, app.frame);
  $("#alternative").disabled = !(p && p.points && p.points.length === 1 && !p.box);
}

async function nextAlternative() {
  const p = promptOf(app.selected, app.frame);
  if (!p || !p.points || p.points.length !== 1 || p.box) return;
  const choice = ((p.choice ?? 0) + 1) % 3;
  const res = await api("POST", "/api/prompts/choice", { object: app.selected, frame: app.frame, choice });
  await refresh();
  status(`candidate mask ${res.choice + 1} of ${res.candidates.length} (predicted IoU ${res.candidates[res.choice].toFixed(2)})`);
}

async function clearFrame() {
  if (app.selected === null) return;
  await api("DELETE", `/api/prompts/${app.selected}/${app.frame}`);
  await refresh();
}

// ------------------------------------------------------------------ objects
function renderObjects() {
  const list = $("#object-list");
  list.innerHTML = "";
  if (!app.state) return;
  app.state.objects.forEach((obj, i) => {
    const li = document.createElement("li");
    li.className = "object" + (obj.id === app.selected ? " selected" : "");
    li.dataset.id = obj.id;
    li.innerHTML = `<input type="color"><input class="name" title="name"><div class="tools">
      <button class="hide" title="Hide / show (H)"></button><button class="del" title="Delete object">✕</button></div>
      <input class="label" title="class label">`;
    const [color, name, , label] = [li.querySelector("input[type=color]"), li.querySelector(".name"), null,
      li.querySelector(".label")];
    color.value = obj.color;
    name.value = obj.name;
    label.value = obj.label;
    li.querySelector(".hide").textContent = obj.hidden ? "show" : "hide";
    li.onclick = (ev) => { if (ev.target === li || ev.target.tagName !== "INPUT") selectObject(obj.id); };
    name.onfocus = label.onfocus = () => selectObject(obj.id, false);
    const patch = (fields) => guarded(async () => { await api("PATCH", `/api/objects/${obj.id}`, fields); await refresh(); });
    color.onchange = () => patch({ color: color.value });
    name.onchange = () => patch({ name: name.value });
    label.onchange = () => patch({ label: label.value });
    li.querySelector(".hide").onclick = (ev) => { ev.stopPropagation(); patch({ hidden: !obj.hidden }); };
    li.querySelector(".del").onclick = (ev) => {
      ev.stopPropagation();
      if (!confirm(`Delete ${obj.name} and all its masks? (Undo brings it back.)`)) return;
      guarded(async () => { await api("DELETE", `/api/objects/${obj.id}`); if (app.selected === obj.id) app.selected = null; await refresh(); });
    };
    li.title = `object ${obj.id} (key ${i + 1})`;
    list.appendChild(li);
  });
}

function selectObject(id, rerender = true) {
  app.selected = id;
  if (rerender) renderObjects();
  else document.querySelectorAll(".object").forEach((li) => li.classList.toggle("selected", Number(li.dataset.id) === id));
  draw();
  updateAlternative();
}

async function newObject() {
  const obj = await api("POST", "/api/objects", {});
  app.selected = obj.id;
  await refresh();
  status(`object ${obj.id} added: click on it`);
}

// ------------------------------------------------------------------ presence strip
function renderPresence() {
  const box = $("#presence");
  box.innerHTML = "";
  const s = app.state;
  if (!s || s.media.kind !== "video") return;
  const n = s.media.num_frames;
  for (const obj of s.objects) {
    const row = document.createElement("div");
    row.className = "row";
    const name = document.createElement("span");
    name.textContent = obj.name;
    const c = document.createElement("canvas");
    c.width = Math.min(n, 2000);
    c.height = 1;
    c.title = "presence from the object score: object colour = present, yellow = unsure, black = lost, grey = not tracked, white = your prompt";
    const g = c.getContext("2d");
    const scores = s.presence[String(obj.id)] || [];
    const prompted = s.prompts[String(obj.id)] || {};
    for (let x = 0; x < c.width; x++) {
      const t = Math.floor(x * n / c.width);
      const v = scores[t];
      if (prompted[String(t)]) g.fillStyle = "#ffffff";
      else if (v === null || v === undefined) g.fillStyle = "#3a3d44";
      else {
        const p = 1 / (1 + Math.exp(-v));
        g.fillStyle = p < 0.5 ? "#000000" : p < 0.9 ? "#fdd835" : obj.color;
      }
      g.fillRect(x, 0, 1, 1);
    }
    c.onclick = (ev) => { const r = c.getBoundingClientRect(); showFrame(Math.floor((ev.clientX - r.left) / r.width * n)); };
    row.append(name, c);
    box.appendChild(row);
  }
}

// ------------------------------------------------------------------ propagation
async function propagate(direction) {
  if (!app.state || app.state.media.kind !== "video") return;
  const job = await api("POST", "/api/propagate", { frame: app.frame, direction });
  app.state.job = job;
  startPolling();
}

function startPolling() {
  $("#cancel").disabled = false;
  clearInterval(app.polling);
  let lastShown = -1;
  app.polling = setInterval(async () => {
    let job;
    try { job = await api("GET", "/api/propagate"); } catch (err) { return; }
    const bar = $("#progress");
    bar.max = Math.max(1, job.total);
    bar.value = job.done;
    status(`propagating ${job.direction}: ${job.done}/${job.total} frames (${(job.seconds / Math.max(1, job.done)).toFixed(2)} s/frame)`);
    if (job.last_frame !== null && job.last_frame !== lastShown) {
      lastShown = job.last_frame;
      if (job.last_frame === app.frame) loadOverlay();
      setState(await api("GET", "/api/state"));
    }
    if (!job.running) {
      clearInterval(app.polling);
      app.polling = null;
      $("#cancel").disabled = true;
      await refresh();
      if (job.error) status(`propagation failed: ${job.error}`, true);
      else status(`${job.cancelled ? "cancelled after" : "propagated"} ${job.done} frames in ${job.seconds.toFixed(1)} s`);
    }
  }, 250);
}

async function cancel() {
  await api("POST", "/api/propagate/cancel");
}

// ------------------------------------------------------------------ history, export, import
async function undo(redo = false) {
  setState(await api("POST", redo ? "/api/redo" : "/api/undo"));
  renderObjects();
  await loadOverlay();
}

async function exportAs(format) {
  status(`exporting ${format}…`);
  const res = await api("POST", "/api/export", { format });
  const out = $("#export-result");
  out.innerHTML = "";
  if (res.url) {
    const a = document.createElement("a");
    a.href = res.url;
    a.textContent = `download ${format}`;
    a.style.color = "#8ab4f8";
    out.append(a, document.createElement("br"));
  }
  out.append(res.path);
  status(`exported ${format}: ${res.path}`);
}

$("#import-file").onchange = (ev) => guarded(async () => {
  const file = ev.target.files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  const res = await api("POST", "/api/import", form);
  ev.target.value = "";
  await refresh();
  status(`imported ${res.objects} object(s) on ${res.frames} frame(s)`);
});

// ------------------------------------------------------------------ wiring
$("#add-object").onclick = () => guarded(newObject);
$("#undo").onclick = () => guarded(() => undo(false));
$("#redo").onclick = () => guarded(() => undo(true));
$("#propagate-forward").onclick = () => guarded(() => propagate("forward"));
$("#propagate-backward").onclick = () => guarded(() => propagate("backward"));
$("#propagate-both").onclick = () => guarded(() => propagate("both"));
$("#cancel").onclick = () => guarded(cancel);
$("#alternative").onclick = () => guarded(nextAlternative);
$("#clear-frame").onclick = () => guarded(clearFrame);
document.querySelectorAll("[data-format]").forEach((b) => { b.onclick = () => guarded(() => exportAs(b.dataset.format)); });
$("#scrubber").oninput = (ev) => guarded(() => showFrame(Number(ev.target.value)));
$("#prev-frame").onclick = () => app.state && guarded(() => showFrame(app.frame - 1));
$("#next-frame").onclick = () => app.state && guarded(() => showFrame(app.frame + 1));
$("#help-button").onclick = () => { $("#help").hidden = false; };
$("#help-close").onclick = () => { $("#help").hidden = true; };
$("#media-filter").oninput = (ev) => {
  const q = ev.target.value.toLowerCase();
  document.querySelectorAll(".media-item").forEach((li) => { li.hidden = !li.dataset.path.toLowerCase().includes(q); });
};

document.addEventListener("keydown", (ev) => {
  if (ev.target.tagName === "INPUT" && ev.target.type !== "range") return;
  const k = ev.key;
  const mod = ev.ctrlKey || ev.metaKey;
  if (k === "?") { $("#help").hidden = !$("#help").hidden; return; }
  if (k === "Escape") { $("#help").hidden = true; if (app.polling) guarded(cancel); return; }
  if (!app.state) return;
  const n = app.state.media.num_frames;
  let handled = true;
  if (mod && (k === "z" || k === "Z")) guarded(() => undo(ev.shiftKey));
  else if (mod && (k === "y" || k === "Y")) guarded(() => undo(true));
  else if (mod) handled = false;
  else if (k === "ArrowRight") guarded(() => showFrame(app.frame + (ev.shiftKey ? 10 : 1)));
  else if (k === "ArrowLeft") guarded(() => showFrame(app.frame - (ev.shiftKey ? 10 : 1)));
  else if (k === "Home") guarded(() => showFrame(0));
  else if (k === "End") guarded(() => showFrame(n - 1));
  else if (k === "n" || k === "N") guarded(newObject);
  else if (k === "f" || k === "F") guarded(() => propagate("forward"));
  else if (k === "b" || k === "B") guarded(() => propagate("backward"));
  else if (k === "a" || k === "A") guarded(() => propagate("both"));
  else if (k === "m" || k === "M") guarded(nextAlternative);
  else if (k === "h" || k === "H") {
    const obj = app.state.objects.find((o) => o.id === app.selected);
    if (obj) guarded(async () => { await api("PATCH", `/api/objects/${obj.id}`, { hidden: !obj.hidden }); await refresh(); });
  } else if (k === "Delete" || k === "Backspace") guarded(clearFrame);
  else if (/^[1-9]$/.test(k)) { const obj = app.state.objects[Number(k) - 1]; if (obj) selectObject(obj.id); }
  else handled = false;
  if (handled) ev.preventDefault();
});

guarded(loadMedia);
