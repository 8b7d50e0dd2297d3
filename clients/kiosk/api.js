// Talking to Bildwerk (same origin): POST /inpaint with Prefer: respond-async, follow the
// job at /jobs/{id}/events (Server-Sent Events; GET /jobs/{id} polling when the stream
// fails), DELETE /jobs/{id} to cancel, and the result image from its /blobs URL.

const FINAL = new Set(["succeeded", "failed", "cancelled", "interrupted", "rejected"]);

// A failed request, sorted into what the page tells the visitor.
export class ApiError extends Error {
  constructor(kind, message, { status = 0, retryAfter = null, code = null } = {}) {
    super(message);
    this.kind = kind; // busy | tooLarge | invalid | network | failed | timeout | server | cancelled
    this.status = status;
    this.retryAfter = retryAfter;
    this.code = code;
  }
}

async function errorFrom(response) {
  let message = response.statusText || `HTTP ${response.status}`;
  let code = null;
  try {
    const body = await response.json();
    if (body && body.error) {
      message = body.error.message || message;
      code = body.error.code || null;
    }
  } catch { /* not JSON */ }
  const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
  const status = response.status;
  const kind = status === 429 || status === 503 ? "busy"
    : status === 413 ? "tooLarge"
    : status === 422 || status === 400 || status === 415 ? "invalid"
    : "server";
  return new ApiError(kind, message, { status, retryAfter, code });
}

export function parseRetryAfter(value) {
  if (!value) return null;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
}

// POST /inpaint; resolves with the job's status (202) or, if the server answered at once,
// with a finished status carrying the result.
export async function submitInpaint(body, { signal } = {}) {
  let response;
  try {
    response = await fetch("/inpaint", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Prefer": "respond-async",
                 "Accept": "application/json" },
      body: JSON.stringify(body),
      signal,
    });
  } catch (err) {
    if (signal && signal.aborted) throw new ApiError("cancelled", "aborted");
    throw new ApiError("network", String(err && err.message || err));
  }
  if (response.status === 202) return response.json();
  if (response.ok) {
    const result = await response.json();
    return { job_id: result.job_id, status: "succeeded", result };
  }
  throw await errorFrom(response);
}

export async function cancelJob(jobId) {
  try {
    const response = await fetch(`/jobs/${encodeURIComponent(jobId)}`, { method: "DELETE" });
    return response.ok;
  } catch {
    return false;
  }
}

// Follow a job until it ends. onUpdate(status) for every status/progress snapshot.
// Resolves with the final status; rejects with ApiError on timeout or abort.
export function followJob(jobId, { onUpdate = () => {}, timeoutMs = 300000, signal,
                                   pollMs = 1000 } = {}) {
  return new Promise((resolve, reject) => {
    let source = null;
    let pollTimer = null;
    let done = false;
    let lastEvent = Date.now();
    const url = `/jobs/${encodeURIComponent(jobId)}`;

    const finish = (fn, value) => {
      if (done) return;
      done = true;
      if (source) source.close();
      clearTimeout(pollTimer);
      clearTimeout(deadline);
      clearInterval(watchdog);
      if (signal) signal.removeEventListener("abort", onAbort);
      fn(value);
    };
    const onStatus = (status) => {
      lastEvent = Date.now();
      if (!status || typeof status !== "object") return;
      if (FINAL.has(status.status)) finish(resolve, status);
      else onUpdate(status);
    };
    const onAbort = () => finish(reject, new ApiError("cancelled", "aborted"));
    const deadline = setTimeout(
      () => finish(reject, new ApiError("timeout", "the job took too long")), timeoutMs);

    // Polling: when the event stream fails, or goes quiet for too long.
    let pollFailures = 0;
    const poll = async () => {
      if (done) return;
      try {
        const response = await fetch(url, { headers: { Accept: "application/json" },
                                            cache: "no-store" });
        if (response.status === 404) {
          finish(reject, new ApiError("failed", "the job is gone"));
          return;
        }
        if (!response.ok) throw await errorFrom(response);
        pollFailures = 0;
        onStatus(await response.json());
      } catch (err) {
        pollFailures += 1;
        if (pollFailures >= 5) {
          finish(reject, err instanceof ApiError && err.kind !== "server" ? err
            : new ApiError("network", String(err && err.message || err)));
          return;
        }
      }
      if (!done) pollTimer = setTimeout(poll, pollMs);
    };
    const startPolling = () => {
      if (source) { source.close(); source = null; }
      if (!pollTimer && !done) poll();
    };

    // A stream that says nothing for 20 s (a proxy holding it, a lost connection that
    // never errored): check by polling once, and keep polling from then on.
    const watchdog = setInterval(() => {
      if (!done && source && Date.now() - lastEvent > 20000) startPolling();
    }, 5000);

    if (signal) {
      if (signal.aborted) { onAbort(); return; }
      signal.addEventListener("abort", onAbort);
    }
    if (typeof EventSource !== "function") { startPolling(); return; }
    try {
      source = new EventSource(`${url}/events`);
    } catch {
      startPolling();
      return;
    }
    const parse = (event) => {
      try { return JSON.parse(event.data); } catch { return null; }
    };
    for (const name of ["status", "progress"]) {
      source.addEventListener(name, (event) => onStatus(parse(event)));
    }
    for (const name of FINAL) {
      source.addEventListener(name, (event) => {
        const data = parse(event) || {};
        onStatus({ ...data, status: data.status && FINAL.has(data.status) ? data.status : name });
      });
    }
    source.onerror = () => {
      if (!done) startPolling(); // EventSource would reconnect; we poll instead
    };
  });
}

// The result picture as an object URL (fetched, so a failure is an error, not a broken img).
export async function fetchImage(url, { signal } = {}) {
  let response;
  try {
    response = await fetch(url, { signal });
  } catch (err) {
    if (signal && signal.aborted) throw new ApiError("cancelled", "aborted");
    throw new ApiError("network", String(err && err.message || err));
  }
  if (!response.ok) throw await errorFrom(response);
  return URL.createObjectURL(await response.blob());
}

// A file (the map) as a data-URL, its bytes unchanged.
export async function fetchDataUrl(url) {
  const response = await fetch(url, { cache: "no-cache" });
  if (!response.ok) throw await errorFrom(response);
  const blob = await response.blob();
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(blob);
  });
}

export function newSeed() {
  const value = new Uint32Array(1);
  crypto.getRandomValues(value);
  return value[0];
}
