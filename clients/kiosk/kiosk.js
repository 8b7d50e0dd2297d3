// The kiosk page: attract screen -> paint + wish -> working (progress, cancel) -> result
// (before/after), with errors in plain words and a reset after kiosk_idle_s without input.
// Screens are body[data-screen]: loading | attract | edit | working | result.

import { ApiError, cancelJob, fetchDataUrl, fetchImage, followJob, newSeed,
         submitInpaint } from "./api.js";
import { Painter } from "./draw.js";
import { language, setLanguage, t } from "./i18n.js";

const $ = (id) => document.getElementById(id);
const DEFAULTS = { map_url: "map", idle_s: 90, language: "de", timeout_s: 300,
                   translate: true, expand_prompt: false, style: null };
const POST_TIMEOUT_MS = 60000; // the POST itself (the image upload) must not hang

const state = {
  config: { ...DEFAULTS },
  screen: "loading",
  mapDataUrl: null, // the map's bytes as a data-URL, sent as the image
  run: null, // the request in flight: { abort, jobId, cancelled, timedOut }
  last: null, // the last request sent: { prompt, mask, seed } (retry, another version)
  resultUrl: null, // object URL of the result picture
  lastInput: Date.now(),
  errorAction: null, // what the retry button does
};

const painter = new Painter($("mask"), {
  onChange: updateTools,
  onInput: () => { hideError(); },
});
painter.cursorEl = $("cursor");

// --- screens ---------------------------------------------------------------------------
function show(screen) {
  state.screen = screen;
  document.body.dataset.screen = screen;
  $("attract").hidden = screen !== "attract";
  // behind the attract screen nothing takes focus or clicks
  for (const el of document.querySelectorAll(".bar, .layout")) el.inert = screen === "attract";
  $("working").hidden = screen !== "working";
  $("compare").hidden = screen !== "result";
  $("paint").classList.toggle("dimmed", screen === "working");
  $("edit-actions").hidden = screen === "result";
  $("result-actions").hidden = screen !== "result";
  const editable = screen === "edit";
  painter.enabled = editable;
  for (const id of ["wish", "submit"]) $(id).disabled = !editable;
  for (const el of document.querySelectorAll("#examples button, .size")) el.disabled = !editable;
  updateTools();
  state.lastInput = Date.now();
}

function updateTools() {
  const editable = state.screen === "edit";
  $("brush").disabled = $("eraser").disabled = !editable;
  $("undo").disabled = !editable || !painter.canUndo;
  $("clear").disabled = !editable || !painter.canUndo;
  $("brush").setAttribute("aria-pressed", String(painter.mode === "brush"));
  $("eraser").setAttribute("aria-pressed", String(painter.mode === "eraser"));
  for (const b of document.querySelectorAll(".size")) {
    b.setAttribute("aria-pressed", String(Number(b.dataset.size) === painter.sizeIndex));
  }
  $("mask").classList.toggle("erasing", painter.mode === "eraser");
}

// --- errors ----------------------------------------------------------------------------
function showError(message, retry = null) {
  $("error-text").textContent = message;
  state.errorAction = retry;
  $("retry").hidden = !retry;
  $("error").hidden = false;
  $("error").dataset.kind = retry ? "retry" : "info";
  (retry ? $("retry") : $("dismiss")).focus({ preventScroll: true });
}

function hideError() {
  $("error").hidden = true;
  state.errorAction = null;
}

function messageFor(err) {
  const message = friendly(err && err.message);
  switch (err && err.kind) {
    case "busy": return t("busy", { n: Math.ceil(err.retryAfter ?? 5) });
    case "tooLarge": return t("tooLarge", { message });
    case "invalid": return t("invalid", { message });
    case "network": return t("network");
    case "timeout": return t("timeout");
    case "failed": return t("failed", { message });
    default: return t("server", { message });
  }
}

function friendly(message) {
  // The server's messages are for developers: first letter up, one line, not too long.
  const text = String(message || "").replace(/\s+/g, " ").trim();
  if (!text) return "";
  const short = text.length > 160 ? `${text.slice(0, 157)}…` : text;
  return short[0].toUpperCase() + short.slice(1);
}

// --- the job ---------------------------------------------------------------------------
function setProgress(status) {
  const bar = $("progress");
  const text = $("stage-text");
  delete text.dataset.busy;
  if (!status || status.status === "queued") {
    bar.removeAttribute("value");
    text.textContent = status ? t("queuedNoCount") : t("sending");
    return;
  }
  const stage = status.stage || "";
  const { step = 0, total = 0 } = status.progress || {};
  if (stage === "denoising" && total > 0) {
    const percent = Math.min(100, Math.round((step / total) * 100));
    bar.value = percent;
    bar.setAttribute("aria-valuetext", `${percent} %`);
    text.textContent = t("painting", { n: percent });
  } else if (stage === "compositing" || stage === "saving") {
    bar.value = 100;
    text.textContent = t("finishing");
  } else {
    bar.removeAttribute("value");
    text.textContent = t("loading");
  }
}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); reject(signal.reason); },
                            { once: true });
  });
}

function requestBody(job) {
  const body = {
    prompt: job.prompt, image: state.mapDataUrl, mask: job.mask,
    translate: state.config.translate !== false, inpaint_area: "masked", seed: job.seed,
  };
  if (state.config.expand_prompt) body.expand_prompt = true;
  if (state.config.style) body.style = state.config.style;
  return body;
}

async function startJob(job) {
  if (state.run) return; // one at a time
  hideError();
  state.last = job;
  const abort = new AbortController();
  const run = { abort, jobId: null, cancelled: false, timedOut: false };
  state.run = run;
  const timeoutMs = Math.max(10, Number(state.config.timeout_s) || 300) * 1000;
  const deadline = Date.now() + timeoutMs;
  const overall = setTimeout(() => { run.timedOut = true; abort.abort("timeout"); }, timeoutMs);
  setProgress(null);
  show("working");
  $("cancel").focus({ preventScroll: true });
  try {
    if (!state.mapDataUrl) state.mapDataUrl = await fetchDataUrl(state.config.map_url);
    let status;
    for (;;) {
      if (abort.signal.aborted) throw new ApiError("cancelled", "aborted");
      const postAbort = new AbortController();
      const stopPost = () => postAbort.abort();
      abort.signal.addEventListener("abort", stopPost, { once: true });
      const postTimer = setTimeout(stopPost, POST_TIMEOUT_MS);
      try {
        status = await submitInpaint(requestBody(job), { signal: postAbort.signal });
        break;
      } catch (err) {
        if (abort.signal.aborted) throw err;
        if (err.kind === "cancelled") throw new ApiError("network", "no answer");
        if (err.kind !== "busy") throw err;
        // Queue full (429) or shutting down (503): wait as told, then again by ourselves.
        const wait = Math.max(1, Math.min(err.retryAfter ?? 5, 60));
        if (Date.now() + wait * 1000 >= deadline) throw new ApiError("timeout", "busy");
        for (let left = Math.ceil(wait); left > 0; left -= 1) {
          $("stage-text").textContent = t("busy", { n: left });
          $("stage-text").dataset.busy = "true";
          $("progress").removeAttribute("value");
          await sleep(Math.min(1000, wait * 1000), abort.signal);
        }
        setProgress(null);
      } finally {
        clearTimeout(postTimer);
        abort.signal.removeEventListener("abort", stopPost);
      }
    }
    run.jobId = status.job_id;
    if (run.cancelled) { await cancelJob(run.jobId); return; }
    setProgress(status);
    const final = status.status === "succeeded" ? status : await followJob(run.jobId, {
      onUpdate: setProgress, timeoutMs: Math.max(1000, deadline - Date.now()),
      signal: abort.signal,
    });
    if (final.status === "succeeded") {
      const image = final.result && final.result.images && final.result.images[0];
      if (!image) throw new ApiError("failed", "no image in the result");
      $("stage-text").textContent = t("fetching");
      const url = await fetchImage(image.url, { signal: abort.signal });
      if (state.run !== run) { URL.revokeObjectURL(url); return; }
      showResult(url, image);
    } else if (final.status === "cancelled" && run.cancelled) {
      return;
    } else {
      const error = final.error || {};
      throw new ApiError("failed", error.message || final.status);
    }
  } catch (err) {
    if (state.run !== run || run.cancelled) return;
    const problem = run.timedOut ? new ApiError("timeout", "timeout")
      : err instanceof ApiError ? err : new ApiError("network", String(err));
    if (run.jobId && (problem.kind === "timeout" || problem.kind === "network")) {
      cancelJob(run.jobId); // nobody waits for it any more
    }
    state.run = null;
    show("edit");
    const retryable = ["network", "timeout", "failed", "server", "busy"].includes(problem.kind);
    showError(messageFor(problem), retryable ? () => startJob(state.last) : null);
  } finally {
    clearTimeout(overall);
    if (state.run === run) state.run = null;
  }
}

async function cancelRun({ quiet = false } = {}) {
  const run = state.run;
  if (!run) return;
  run.cancelled = true;
  state.run = null;
  run.abort.abort("cancelled");
  if (!quiet) {
    show("edit");
    $("hint").textContent = t("cancelled");
    $("hint").dataset.note = "cancelled";
  }
  if (run.jobId) await cancelJob(run.jobId);
}

function showResult(url, image) {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = url;
  const after = $("after");
  after.src = url;
  after.dataset.src = image.url;
  after.dataset.seed = String(image.seed ?? "");
  after.alt = state.last ? state.last.prompt : "";
  $("before").src = $("map").src;
  setSlider(50);
  show("result");
  $("again").focus({ preventScroll: true });
}

function setSlider(value) {
  $("slider").value = String(value);
  $("before").style.clipPath = `inset(0 ${100 - value}% 0 0)`;
  $("divider").style.left = `${value}%`;
  $("slider").setAttribute("aria-valuetext", `${t("before")} ${value} %`);
}

function clearResult() {
  if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
  state.resultUrl = null;
  $("after").removeAttribute("src");
  delete $("after").dataset.src;
}

function submit() {
  if (state.screen !== "edit") return;
  const prompt = $("wish").value.trim();
  if (painter.isEmpty) { showError(t("needPaint")); return; }
  if (!prompt) { showError(t("needWish")); $("wish").focus(); return; }
  resetHint();
  startJob({ prompt, mask: painter.maskDataUrl(), seed: newSeed() });
}

function resetHint() {
  $("hint").textContent = t("hint");
  delete $("hint").dataset.note;
}

function startOver() {
  cancelRun({ quiet: true });
  clearResult();
  painter.reset();
  painter.setMode("brush");
  $("wish").value = "";
  state.last = null;
  hideError();
  resetHint();
  show("edit");
}

function goAttract() {
  startOver();
  setLanguage(state.config.language);
  renderExamples();
  show("attract");
  $("attract").focus({ preventScroll: true });
}

// --- wiring ----------------------------------------------------------------------------
function renderExamples() {
  const box = $("examples");
  box.replaceChildren();
  for (const text of t("examples")) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "chip";
    b.textContent = text;
    b.dataset.testid = "example";
    b.setAttribute("data-testid", "example");
    b.disabled = state.screen !== "edit";
    b.addEventListener("click", () => {
      $("wish").value = text;
      hideError();
    });
    box.append(b);
  }
}

function wire() {
  $("attract").addEventListener("click", () => show("edit"));
  document.addEventListener("keydown", (e) => { // any key wakes the page, as a tap does
    if (state.screen !== "attract" || e.key === "Tab") return;
    e.preventDefault();
    show("edit");
  });
  $("brush").addEventListener("click", () => { painter.setMode("brush"); updateTools(); });
  $("eraser").addEventListener("click", () => { painter.setMode("eraser"); updateTools(); });
  for (const b of document.querySelectorAll(".size")) {
    b.addEventListener("click", () => { painter.setSizeIndex(Number(b.dataset.size));
                                        updateTools(); });
  }
  $("undo").addEventListener("click", () => painter.undo());
  $("clear").addEventListener("click", () => painter.clear());
  $("submit").addEventListener("click", submit);
  $("wish").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(); }
  });
  $("wish").addEventListener("input", hideError);
  $("cancel").addEventListener("click", () => cancelRun());
  $("again").addEventListener("click", () => {
    if (state.last) startJob({ ...state.last, seed: newSeed() });
  });
  $("edit").addEventListener("click", () => { clearResult(); show("edit"); });
  $("reset").addEventListener("click", startOver);
  $("retry").addEventListener("click", () => {
    const action = state.errorAction;
    hideError();
    if (action) action();
  });
  $("dismiss").addEventListener("click", hideError);
  $("slider").addEventListener("input", () => setSlider(Number($("slider").value)));
  // Dragging anywhere on the picture moves the split too.
  const compare = $("compare");
  const dragTo = (e) => {
    const rect = compare.getBoundingClientRect();
    setSlider(Math.round(Math.min(Math.max((e.clientX - rect.left) / rect.width, 0), 1) * 100));
  };
  compare.addEventListener("pointerdown", (e) => {
    if (e.target === $("slider")) return;
    compare.setPointerCapture(e.pointerId);
    dragTo(e);
  });
  compare.addEventListener("pointermove", (e) => {
    if (compare.hasPointerCapture(e.pointerId)) dragTo(e);
  });
  document.querySelector(".lang").addEventListener("click", () => {
    setLanguage(language() === "de" ? "en" : "de");
    renderExamples();
    if (!$("hint").dataset.note) resetHint();
    else $("hint").textContent = t("cancelled");
  });
  for (const type of ["pointerdown", "pointermove", "keydown", "input", "wheel"]) {
    document.addEventListener(type, () => { state.lastInput = Date.now(); },
                              { capture: true, passive: true });
  }
  setInterval(() => {
    if (state.screen === "attract" || state.screen === "loading") return;
    if (state.screen === "working") { state.lastInput = Date.now(); return; }
    const idleMs = Math.max(5, Number(state.config.idle_s) || 90) * 1000;
    if (Date.now() - state.lastInput >= idleMs) goAttract();
  }, 500);
}

async function loadConfig() {
  try {
    const response = await fetch("config.json", { cache: "no-store" });
    if (response.ok) return { ...DEFAULTS, ...(await response.json()) };
  } catch { /* defaults */ }
  return { ...DEFAULTS };
}

async function init() {
  wire();
  state.config = await loadConfig();
  setLanguage(state.config.language);
  renderExamples();
  const map = $("map");
  await new Promise((resolve) => {
    map.onload = resolve;
    map.onerror = resolve;
    map.src = state.config.map_url;
  });
  if (!map.naturalWidth) {
    show("edit");
    showError(t("mapMissing"), () => location.reload());
    return;
  }
  $("frame").style.setProperty("--aspect", String(map.naturalWidth / map.naturalHeight));
  painter.setSize(map.naturalWidth, map.naturalHeight);
  fetchDataUrl(state.config.map_url).then((url) => { state.mapDataUrl = url; })
    .catch(() => { /* fetched again on the first send */ });
  document.body.dataset.idleS = String(state.config.idle_s);
  show("attract");
}

init();
