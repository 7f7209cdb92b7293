// Building DOM nodes and formatting values: the console's few hand-written helpers.

import { ApiError, api } from "./api.js";

const apiPost = (path, body) => api(path, { method: "POST", body });

// h("a", {href: "#/"}, "text", child, [more]) -> an element. Attributes starting with
// "on" are event listeners; null, undefined and false children and attributes are left out.
export function h(tag, attrs = {}, ...children) {
  const el = tag === "svg" || attrs?.svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false || k === "svg") continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2).toLowerCase(), v);
    else if (k === "class") el.setAttribute("class", v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  append(el, children);
  return el;
}

export function svg(tag, attrs = {}, ...children) {
  return h(tag, { ...attrs, svg: true }, ...children);
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

export function bytes(n) {
  if (n === null || n === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

export function ago(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export function since(iso) {
  return iso ? ago((Date.now() - Date.parse(iso)) / 1000) : "–";
}

export function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString(undefined, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
  });
}

export function time(iso) {
  return h("time", { datetime: iso, title: iso }, when(iso));
}

export function duration(s) {
  if (s === null || s === undefined) return "–";
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

const STATES = {
  succeeded: "ok", met: "ok", running: "run", queued: "", failed: "bad", interrupted: "warn",
  breached: "warn", none: "",
};

export function badge(text, kind = STATES[text] ?? "") {
  return h("span", { class: `badge ${kind}` }, text);
}

export function link(href, ...children) {
  return h("a", { href }, ...children);
}

export function table(caption, heads, rows, empty = "Nothing here yet.") {
  if (!rows.length) return h("p", { class: "muted" }, empty);
  return h("div", { class: "scroll" }, h("table", {},
    caption ? h("caption", { class: "sr-only" }, caption) : null,
    h("thead", {}, h("tr", {}, heads.map((t) => {
      const [text, cls] = Array.isArray(t) ? t : [t, null];
      return h("th", { scope: "col", class: cls }, text);
    }))),
    h("tbody", {}, rows)));
}

export function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export function announce(text) {
  const el = document.getElementById("announce");
  if (el) { el.textContent = ""; setTimeout(() => { el.textContent = text; }, 30); }
}

// An error of the API (problem+json: what failed, what was kept safe, the hint) shown.
export function problem(e) {
  if (e instanceof ApiError) {
    return h("div", { class: "error", role: "alert" },
      h("strong", {}, e.problem.title || `Error ${e.status}`), ": ", e.message,
      e.problem.hint ? h("div", { class: "hint" }, e.problem.hint) : null);
  }
  return h("div", { class: "error", role: "alert" }, h("strong", {}, "Error"), ": ",
    String(e?.message || e));
}

// Start a job (POST to a work route) and go to its page.
export async function startJob(ctx, path, body, button, where) {
  button.disabled = true;
  try {
    const started = await apiPost(path, body);
    ctx.go(`#/jobs/${started.job.id}`);
  } catch (e) {
    button.disabled = false;
    replace(where, problem(e));
  }
}
