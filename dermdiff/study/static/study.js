// Drives one study page: fetch the next unit, show it, post the answer, repeat.
// The server keeps all state (plan, answers), so reloading or restarting resumes where the rater was.
// An image that fails to load never leaves the rater stuck: in a grid its tile is marked unavailable and
// reported as skipped with the page; in the timed task the unit is reported as skipped and the next follows.
(function () {
  "use strict";
  const root = document.getElementById("study");
  if (!root) return;
  const task = root.dataset.task;
  const viewMs = Math.round(parseFloat(root.dataset.viewSeconds) * 1000);
  const $ = (id) => document.getElementById(id);
  let state = null;
  let selected = new Set();
  let broken = new Set();
  let shownAt = 0;
  let hideTimer = null;
  let busy = false;

  function toast(text) {
    const el = $("toast");
    el.textContent = text;
    el.hidden = false;
    setTimeout(() => { el.hidden = true; }, 4000);
  }

  async function call(method, url, body) {
    const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(url, options);
    if (response.status === 401) { window.location.href = "/"; throw new Error("logged out"); }
    const data = await response.json().catch(() => ({}));
    return { status: response.status, data };
  }

  function showProgress(next) {
    const share = next.total ? next.answered / next.total : 0;
    $("progress-fill").style.width = (100 * share).toFixed(1) + "%";
    $("progress-text").textContent = next.answered + " / " + next.total;
  }

  function render(next) {
    state = next;
    showProgress(next);
    const prompt = $("prompt");
    if (next.finished) {
      $("done").hidden = false;
      for (const id of ["grid", "viewer"]) { if ($(id)) $(id).hidden = true; }
      for (const el of document.querySelectorAll(".actions, .instructions")) el.hidden = true;
      return;
    }
    prompt.hidden = !next.prompt;
    const label = next.prompt_label || "";
    prompt.textContent = label.charAt(0).toUpperCase() + label.slice(1);
    if (task === "timed") renderTimed(next); else renderGrid(next);
  }

  // Grid tasks: "select the realistic images" and "which images show condition X".
  function renderGrid(next) {
    const grid = $("grid");
    grid.replaceChildren();
    selected = new Set();
    broken = new Set();
    next.items.forEach((id, index) => {
      const tile = document.createElement("button");
      tile.type = "button";
      tile.className = "tile";
      tile.dataset.id = id;
      tile.setAttribute("aria-pressed", "false");
      const img = document.createElement("img");
      img.src = "/image/" + id;
      img.alt = "Image " + (index + 1);
      img.draggable = false;
      const badge = document.createElement("span");
      badge.className = "badge";
      badge.textContent = index < 9 ? String(index + 1) : "";
      img.onerror = () => markBroken(tile, badge);
      tile.append(img, badge);
      tile.addEventListener("click", () => toggle(tile));
      grid.append(tile);
    });
    $("submit").disabled = false;
    updateCount();
    shownAt = performance.now();
  }

  function markBroken(tile, badge) {
    broken.add(tile.dataset.id);
    selected.delete(tile.dataset.id);
    tile.disabled = true;
    tile.classList.add("broken");
    tile.setAttribute("aria-pressed", "false");
    badge.textContent = "unavailable";
    updateCount();
  }

  function toggle(tile) {
    const id = tile.dataset.id;
    if (broken.has(id)) return;
    if (selected.has(id)) selected.delete(id); else selected.add(id);
    tile.setAttribute("aria-pressed", String(selected.has(id)));
    updateCount();
  }

  function updateCount() {
    $("selected-count").textContent = selected.size + " selected";
  }

  async function submitGrid() {
    if (busy || !state || state.finished) return;
    busy = true;
    $("submit").disabled = true;
    try {
      const body = { unit: state.unit, selected: [...selected], skipped: [...broken],
                     response_ms: Math.round(performance.now() - shownAt) };
      await settle(await call("POST", "/api/answer", body));
    } finally { busy = false; }
  }

  // Timed task: show the image for a fixed time, then hide it and wait for the answer.
  function renderTimed(next) {
    clearTimeout(hideTimer);
    const img = $("timed-image");
    const veil = $("veil");
    const fill = $("timer-fill");
    img.hidden = true;
    veil.textContent = "Loading…";
    veil.hidden = false;
    fill.style.transition = "none";
    fill.style.width = "100%";
    for (const id of ["answer-real", "answer-synthetic"]) $(id).disabled = true;
    img.onload = () => {
      veil.hidden = true;
      img.hidden = false;
      shownAt = performance.now();
      for (const id of ["answer-real", "answer-synthetic"]) $(id).disabled = false;
      requestAnimationFrame(() => {
        fill.style.transition = "width " + viewMs + "ms linear";
        fill.style.width = "0%";
      });
      hideTimer = setTimeout(() => {
        img.hidden = true;
        veil.textContent = "Real or synthetic?";
        veil.hidden = false;
      }, viewMs);
    };
    const item = next.items[0];
    img.onerror = () => {
      if (state !== next) return;  // a late error from an image already replaced
      clearTimeout(hideTimer);
      veil.textContent = "This image could not be shown; skipping it…";
      skipTimed(next, item);
    };
    img.src = "/image/" + item;
  }

  async function skipTimed(next, item) {
    if (busy) return;
    busy = true;
    try {
      await settle(await call("POST", "/api/answer", { unit: next.unit, skipped: [item] }));
    } finally { busy = false; }
  }

  async function answerTimed(answer) {
    if (busy || !state || state.finished || $("answer-real").disabled) return;
    busy = true;
    try {
      const body = { unit: state.unit, item: state.items[0], answer, response_ms: Math.round(performance.now() - shownAt) };
      await settle(await call("POST", "/api/answer", body));
    } finally { busy = false; }
  }

  async function settle(result) {
    if (result.status === 201) { render(result.data); return; }
    if (result.status === 409) { await load(); return; }  // already stored (e.g. a double click)
    toast(result.data.error || "Something went wrong (" + result.status + ")");
    await load();
  }

  async function load() {
    const result = await call("GET", "/api/next");
    if (result.status === 200) render(result.data); else toast(result.data.error || "Could not load the next item");
  }

  document.addEventListener("keydown", (event) => {
    if (event.altKey || event.ctrlKey || event.metaKey || event.target.tagName === "INPUT") return;
    const key = event.key.toLowerCase();
    if (task === "timed") {
      if (key === "r" || key === "arrowleft") { event.preventDefault(); answerTimed("real"); }
      if (key === "s" || key === "arrowright") { event.preventDefault(); answerTimed("synthetic"); }
      return;
    }
    if (key === "enter") { event.preventDefault(); submitGrid(); return; }
    if (/^[1-9]$/.test(key)) {
      const tile = document.querySelectorAll("#grid .tile")[parseInt(key, 10) - 1];
      if (tile) toggle(tile);
    }
  });

  if (task === "timed") {
    $("answer-real").addEventListener("click", () => answerTimed("real"));
    $("answer-synthetic").addEventListener("click", () => answerTimed("synthetic"));
  } else {
    $("submit").addEventListener("click", submitGrid);
  }
  load();
})();
