// The console's only way to the server: the REST API under /api/v1, by the session
// cookie, with the session's CSRF token on every request that changes something.

export const V1 = "/api/v1";

let csrf = null;

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem?.detail || problem?.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem || {};
  }
}

export function setCsrf(token) { csrf = token; }

// `body` goes as JSON; `text` with `textType` as it is (a policy file as TOML).
export async function api(path, { method = "GET", body, query, text, textType } = {}) {
  const url = new URL(V1 + path, location.origin);
  for (const [k, v] of Object.entries(query || {})) {
    if (v === null || v === undefined || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) url.searchParams.append(k, one);
  }
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (text !== undefined) headers["Content-Type"] = textType;
  if (method !== "GET" && csrf) headers["X-CSRF-Token"] = csrf;
  const r = await fetch(url, {
    method, headers, credentials: "same-origin",
    body: text !== undefined ? text : body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 204) return null;
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json() : await r.text();
  if (!r.ok) {
    const err = new ApiError(r.status, typeof data === "object" ? data : { detail: data });
    if (r.status === 401) window.dispatchEvent(new CustomEvent("stasis:signed-out"));
    throw err;
  }
  return data;
}

// Every item of a listing (following `next`), up to `max`.
export async function all(path, query = {}, max = 1000) {
  const items = [];
  let cursor = null;
  do {
    const page = await api(path, { query: { ...query, limit: Math.min(1000, max), cursor } });
    items.push(...page.items);
    cursor = page.next;
  } while (cursor && items.length < max);
  return items;
}

// A URL of the API for a link (a download) with its query.
export function href(path, query = {}) {
  const url = new URL(V1 + path, location.origin);
  for (const [k, v] of Object.entries(query)) {
    if (v === null || v === undefined || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) url.searchParams.append(k, one);
  }
  return url.pathname + url.search;
}

// Follow a job's event stream: onProgress({state, bytes_read, bytes_written}),
// onLog(line), onEnd(job). The browser reconnects by itself with Last-Event-ID;
// the stream is closed at its end or by the returned function.
export function follow(id, { onProgress, onLog, onEnd, onTrouble }) {
  const es = new EventSource(`${V1}/jobs/${id}/events`);
  es.addEventListener("progress", (e) => onProgress?.(JSON.parse(e.data)));
  es.addEventListener("log", (e) => onLog?.(JSON.parse(e.data)));
  es.addEventListener("end", (e) => { es.close(); onEnd?.(JSON.parse(e.data)); });
  es.addEventListener("error", () => onTrouble?.(es.readyState));
  return () => es.close();
}
