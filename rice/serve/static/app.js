// The page: send a dropped or chosen file to POST /search and show its frames and the top-k shop images; scan a
// recording with POST /scan and draw its timeline of products.
"use strict";

const $ = (id) => document.getElementById(id);
let maxUploadMb = Infinity;
let lastQuery = null; // the file last searched with: changing "results" or "shop" searches with it again

function sizeText(mb) {
  // 0.5 -> "512 KB", 200 -> "200 MB", 2048 -> "2 GB": the unit a person would say
  if (mb >= 1024) return `${+(mb / 1024).toFixed(1)} GB`;
  if (mb >= 1) return `${+mb.toFixed(1)} MB`;
  return `${Math.round(mb * 1024)} KB`;
}

function clearResults() {
  $("frames").replaceChildren();
  $("results").replaceChildren();
  $("query").hidden = true;
  $("results-section").hidden = true;
}

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "info" ? "message info" : "message";
  box.hidden = !text;
}

async function loadStatus() {
  try {
    const health = await (await fetch("/health")).json();
    maxUploadMb = health.max_upload_mb;
    $("status").textContent = `${health.items} shop images · model ${health.model || "unknown"} · ` +
      `${health.index_type} index · uploads up to ${sizeText(health.max_upload_mb)}`;
    for (const [field, value] of Object.entries(health.scan_rule || {})) {
      const input = document.querySelector(`#scan-form input[name="${field}"]`);
      if (input && input.value === "") input.value = value; // the server's defaults: those of `rice scan`
    }
    if (health.groups > 0) {
      const { groups } = await (await fetch("/groups")).json();
      for (const group of groups) $("group").add(new Option(group, group));
      $("group-label").hidden = false;
    }
  } catch (err) {
    $("status").textContent = "the server does not answer /health";
  }
}

function metadataLines(metadata) {
  // The manifest's columns: title and price first, a product link (http/https only), then any other field.
  const lines = [];
  const pick = (...names) => names.map((n) => Object.keys(metadata).find((k) => k.toLowerCase() === n))
    .find((k) => k !== undefined);
  const titleKey = pick("title", "name");
  const priceKey = pick("price");
  const urlKey = pick("url", "link", "product_url");
  const line = (className, text) => {
    const div = document.createElement("div");
    div.className = className;
    div.textContent = text;
    return div;
  };
  if (titleKey) lines.push(line("title", String(metadata[titleKey])));
  if (priceKey) lines.push(line("price", String(metadata[priceKey])));
  if (urlKey && /^https?:\/\//i.test(String(metadata[urlKey]))) {
    const link = document.createElement("a");
    link.className = "product-link";
    link.href = String(metadata[urlKey]);
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    link.textContent = "product page";
    lines.push(link);
  }
  for (const [key, value] of Object.entries(metadata)) {
    if (![titleKey, priceKey, urlKey].includes(key)) {
      lines.push(line("meta muted", `${key}: ${typeof value === "object" ? JSON.stringify(value) : value}`));
    }
  }
  return lines;
}

function render(response) {
  $("query-name").textContent = `${response.query} · ${response.kind} · ${response.frames.length} frame(s)`;
  $("frames").replaceChildren(...response.frames.map((src, i) => {
    const img = new Image();
    img.src = src;
    img.alt = `frame ${i + 1}`;
    return img;
  }));
  $("timing").textContent = `top ${response.results.length} · decoded in ${response.timing_ms.decode} ms, ` +
    `searched in ${response.timing_ms.search} ms`;
  $("results").replaceChildren(...response.results.map((hit) => {
    const item = document.createElement("li");
    const img = new Image();
    img.src = hit.image_url;
    img.alt = hit.id;
    img.loading = "eager";
    const full = document.createElement("a"); // the shop image at its own size, in a new tab
    full.className = "full";
    full.href = hit.image_url;
    full.target = "_blank";
    full.rel = "noopener";
    full.title = "open the full image";
    full.append(img);
    const card = document.createElement("div");
    card.className = "card";
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = `${hit.rank}. ${hit.id}`;
    const score = document.createElement("div");
    score.textContent = `score ${hit.score.toFixed(3)}` + (hit.group ? ` · ${hit.group}` : "");
    const bar = document.createElement("div");
    bar.className = "score";
    const fill = document.createElement("div");
    fill.style.width = `${Math.max(0, Math.min(1, hit.score)) * 100}%`;
    bar.append(fill);
    card.append(id, ...metadataLines(hit.metadata || {}), score, bar);
    item.append(full, card);
    return item;
  }));
  $("query").hidden = false;
  $("results-section").hidden = false;
}

async function search(file) {
  if (!file) return;
  if (file.size > maxUploadMb * 1024 * 1024) {
    clearResults();
    showMessage(`${file.name} is ${sizeText(file.size / 2 ** 20)}; this server takes up to ${sizeText(maxUploadMb)}`);
    return;
  }
  lastQuery = file;
  const params = new URLSearchParams({ top_k: $("top-k").value });
  if ($("group").value) params.set("group", $("group").value);
  const form = new FormData();
  form.append("file", file, file.name);
  showMessage(`searching with ${file.name}…`, "info");
  $("drop").classList.add("busy");
  try {
    const reply = await fetch(`/search?${params}`, { method: "POST", body: form });
    const body = await reply.json().catch(() => ({ detail: reply.statusText }));
    if (!reply.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      clearResults(); // the old results belong to another query: never leave them under an error
      showMessage(`${reply.status}: ${detail}`);
      return;
    }
    showMessage("");
    render(body);
  } catch (err) {
    clearResults();
    showMessage(`the request failed: ${err}`);
  } finally {
    $("drop").classList.remove("busy");
    $("file").value = "";
  }
}

const drop = $("drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  search(event.dataTransfer.files[0]);
});
$("file").addEventListener("change", () => search($("file").files[0]));
for (const option of ["top-k", "group"]) {
  $(option).addEventListener("change", () => { if (lastQuery) search(lastQuery); });
}
loadStatus();

// ---------------------------------------------------------------------------------------- scanning a recording
// POST /scan queues a job; GET /scan/ID is polled every 500 ms for its progress and the segments found so far,
// and the timeline is drawn from them: one coloured block per segment over the recording, and a list of segments.
const SCAN_POLL_MS = 500;
let scanJob = null;
let scanDrawn = "";

function setScanStatus(text, status) {
  $("scan-status").textContent = text;
  $("scan").dataset.status = status;
}

function clock(seconds) {
  const minutes = Math.floor(seconds / 60);
  return `${minutes}:${(seconds - 60 * minutes).toFixed(1).padStart(4, "0")}`;
}

function productColours(segments) {
  // One colour per product, in order of first appearance, hues a golden angle apart: neighbours always differ.
  const colours = new Map();
  for (const s of segments) {
    if (!colours.has(s.id)) colours.set(s.id, `hsl(${Math.round((colours.size * 137.508) % 360)}, 65%, 52%)`);
  }
  return colours;
}

function figure(src, caption) {
  const fig = document.createElement("figure");
  const img = new Image();
  img.src = src;
  img.alt = caption;
  img.className = caption === "key frame" ? "scan-thumb" : "scan-shop";
  const label = document.createElement("figcaption");
  label.textContent = caption;
  fig.append(img, label);
  return fig;
}

function drawTimeline(segments, duration, done) {
  const key = JSON.stringify([duration, segments.map((s) => [s.start, s.end, s.id])]);
  if (key === scanDrawn) return; // unchanged since the last poll: keep the images already loaded
  scanDrawn = key;
  const span = Math.max(duration, ...segments.map((s) => s.end), 1e-6);
  const colours = productColours(segments);
  $("scan-strip").replaceChildren(...segments.map((s, n) => {
    const block = document.createElement("div");
    block.className = "scan-block";
    block.style.left = `${(100 * s.start) / span}%`;
    block.style.width = `${(100 * (s.end - s.start)) / span}%`;
    block.style.background = colours.get(s.id);
    block.title = `${s.id} · ${clock(s.start)} – ${clock(s.end)}`;
    block.addEventListener("click", () => {
      const item = $("scan-segments").children[n];
      item.scrollIntoView({ behavior: "smooth", block: "nearest" });
      item.classList.add("flash");
      setTimeout(() => item.classList.remove("flash"), 1200);
    });
    return block;
  }));
  $("scan-segments").replaceChildren(...segments.map((s) => {
    const item = document.createElement("li");
    item.className = "scan-segment";
    item.style.setProperty("--segment-colour", colours.get(s.id));
    const card = document.createElement("div");
    const times = document.createElement("div");
    times.className = "times";
    times.textContent = `${clock(s.start)} – ${clock(s.end)}`;
    const id = document.createElement("div");
    id.className = "id";
    id.textContent = s.id;
    const score = document.createElement("div");
    score.className = "muted";
    score.textContent = `score ${s.score.toFixed(3)}` + (s.group ? ` · ${s.group}` : "");
    card.append(times, id, score);
    item.append(figure(s.thumbnail_url, "key frame"), figure(s.image_url, "shop image"), card);
    return item;
  }));
  $("scan-timeline").hidden = segments.length === 0 && !done;
  if (done && segments.length === 0) {
    const none = document.createElement("li");
    none.className = "muted";
    none.textContent = "no product found";
    $("scan-segments").replaceChildren(none);
  }
}

function showScan(state) {
  const p = state.progress;
  const done = state.status === "done";
  const duration = done ? state.result.duration : (p.duration || p.scanned);
  const rate = p.realtime_factor ? ` · ${p.realtime_factor.toFixed(1)}× real time` : "";
  const found = `${p.segments} segment(s)`;
  const text = {
    queued: "waiting for the scans before it",
    running: `scanning ${clock(p.scanned)} / ${p.duration ? clock(p.duration) : "?"}${rate} · ${found}`,
    done: `done · ${clock(duration)} scanned${rate} · ${found}`,
    failed: `failed: ${state.error}`,
    cancelled: `cancelled at ${clock(p.scanned)} · ${found}`,
  }[state.status];
  setScanStatus(`${state.filename}: ${text}`, state.status);
  $("scan").dataset.job = state.id;
  const bar = $("scan-progress");
  bar.hidden = !["queued", "running"].includes(state.status);
  bar.value = duration ? Math.min(1, p.scanned / duration) : 0;
  drawTimeline(done ? state.result.segments : state.segments, duration || 0, done);
  const active = ["queued", "running"].includes(state.status);
  $("scan-cancel").hidden = !active;
  $("scan-button").disabled = active;
  return active;
}

async function followScan(id) {
  if (id !== scanJob) return; // another scan replaced this one
  try {
    const reply = await fetch(`/scan/${encodeURIComponent(id)}`);
    const body = await reply.json().catch(() => ({ detail: reply.statusText }));
    if (!reply.ok) {
      setScanStatus(`${reply.status}: ${body.detail}`, "failed");
      $("scan-button").disabled = false;
      $("scan-cancel").hidden = true;
      return;
    }
    if (id === scanJob && showScan(body)) setTimeout(() => followScan(id), SCAN_POLL_MS);
  } catch (err) {
    setTimeout(() => followScan(id), 4 * SCAN_POLL_MS); // the server may be busy: try again a little later
  }
}

async function startScan(event) {
  event.preventDefault();
  const file = $("scan-file").files[0];
  if (!file) {
    setScanStatus("choose a recording to scan first", "failed");
    return;
  }
  if (file.size > maxUploadMb * 1024 * 1024) {
    setScanStatus(`${file.name} is ${sizeText(file.size / 2 ** 20)}; this server takes up to ${sizeText(maxUploadMb)}`,
      "failed");
    return;
  }
  const params = new URLSearchParams();
  if ($("group").value) params.set("group", $("group").value);
  for (const input of $("scan-form").querySelectorAll("input[type=number]")) {
    if (input.value !== "") params.set(input.name, input.value); // empty: the server's default
  }
  const form = new FormData();
  form.append("file", file, file.name);
  scanJob = null;
  scanDrawn = "";
  $("scan-timeline").hidden = true;
  $("scan-button").disabled = true;
  setScanStatus(`uploading ${file.name}…`, "uploading");
  try {
    const reply = await fetch(`/scan?${params}`, { method: "POST", body: form });
    const body = await reply.json().catch(() => ({ detail: reply.statusText }));
    if (!reply.ok) {
      const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      setScanStatus(`${reply.status}: ${detail}`, "failed");
      $("scan-button").disabled = false;
      return;
    }
    scanJob = body.id;
    showScan(body);
    setTimeout(() => followScan(body.id), SCAN_POLL_MS);
  } catch (err) {
    setScanStatus(`the upload failed: ${err}`, "failed");
    $("scan-button").disabled = false;
  }
}

async function cancelScan() {
  if (!scanJob) return;
  const reply = await fetch(`/scan/${encodeURIComponent(scanJob)}`, { method: "DELETE" });
  if (reply.ok) showScan(await reply.json());
}

$("scan-form").addEventListener("submit", startScan);
$("scan-cancel").addEventListener("click", cancelScan);
