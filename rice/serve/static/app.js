// The search page: send a dropped or chosen file to POST /search and show its frames and the top-k shop images.
"use strict";

const $ = (id) => document.getElementById(id);
let maxUploadMb = Infinity;

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
      `${health.index_type} index · uploads up to ${health.max_upload_mb} MB`;
    if (health.groups > 0) {
      const { groups } = await (await fetch("/groups")).json();
      for (const group of groups) $("group").add(new Option(group, group));
      $("group-label").hidden = false;
    }
  } catch (err) {
    $("status").textContent = "the server does not answer /health";
  }
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
    card.append(id, score, bar);
    item.append(img, card);
    return item;
  }));
  $("query").hidden = false;
  $("results-section").hidden = false;
}

async function search(file) {
  if (!file) return;
  if (file.size > maxUploadMb * 1024 * 1024) {
    showMessage(`${file.name} is ${(file.size / 2 ** 20).toFixed(1)} MB; this server takes up to ${maxUploadMb} MB`);
    return;
  }
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
      showMessage(`${reply.status}: ${detail}`);
      return;
    }
    showMessage("");
    render(body);
  } catch (err) {
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
loadStatus();
