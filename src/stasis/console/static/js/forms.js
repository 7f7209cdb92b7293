// Forms of the editors and wizards: a labelled field with a slot for the API's message
// about it, and a refusal of the API (problem+json) shown next to the fields it names.

import { ApiError } from "./api.js";
import { h, replace, problem } from "./dom.js";

// A labelled input with a hint and an error slot the input is described by (the hint
// stays out of the label, so that a field's name is its label alone).
export function field(id, label, input, hint) {
  const error = h("span", { class: "field-error", id: `${id}-error`, "data-error-for": id, hidden: true });
  input.setAttribute("aria-describedby", `${id}-error${hint ? ` ${id}-hint` : ""}`);
  return h("div", { class: "field" }, h("label", { for: id }, label),
    hint ? h("span", { class: "hint", id: `${id}-hint` }, hint.trim()) : null, input, error);
}

export function input(id, attrs = {}) {
  return h("input", { id, name: id, ...attrs });
}

export function select(id, options, value) {
  return h("select", { id, name: id }, options.map(([v, text]) =>
    h("option", { value: v, selected: v === value }, text ?? v)));
}

export function check(id, label, checked) {
  const box = h("input", { id, name: id, type: "checkbox", checked: !!checked });
  return [box, h("label", { class: "check", for: id }, box, label)];
}

export function words(text) {
  return text.split(/[\s,]+/).map((w) => w.trim()).filter(Boolean);
}

export function pairs(text) {
  const out = {};
  for (const w of words(text)) {
    const [k, ...v] = w.split("=");
    out[k] = v.join("=");
  }
  return out;
}

export function pairsText(obj) {
  return Object.entries(obj || {}).map(([k, v]) => `${k}=${v}`).join(", ");
}

export function clearErrors(form) {
  for (const el of form.querySelectorAll("[data-error-for]")) { el.hidden = true; el.textContent = ""; }
  for (const el of form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
}

// The messages of a refusal, each with the key it names: a policy's problems
// ("the request:6: policy 'web': retention.keep_last must be ..."), a request's
// field errors ({field: "body.name", message}), or the detail alone.
export function messages(e) {
  if (!(e instanceof ApiError)) return [];
  if (Array.isArray(e.problem.problems)) {
    return e.problem.problems.map((p) => {
      const text = p.replace(/^.*?:\d+: policy '[^']*': /, "").replace(/^the request: /, "");
      const m = text.match(/^([a-z_]+(?:\.[a-z_]+)*)/);
      return { key: m ? m[1] : null, text };
    });
  }
  if (Array.isArray(e.problem.errors)) {
    return e.problem.errors.map((f) => ({ key: f.field.replace(/^body\./, ""), text: f.message }));
  }
  const m = (e.problem.detail || "").match(/^([a-z_]+): /);
  return m ? [{ key: m[1], text: e.problem.detail }] : [];
}

// Show refusal `e` in `area` and each of its messages next to the field its key maps to
// (`fields`: key -> input id; "retention.keep_last" tries that key, then "retention").
export function showProblem(form, area, e, fields) {
  clearErrors(form);
  let placed = 0;
  for (const { key, text } of messages(e)) {
    if (!key) continue;
    const parts = key.split(".");
    let id = null;
    for (let n = parts.length; n > 0 && !id; n--) id = fields[parts.slice(0, n).join(".")];
    const slot = id && form.querySelector(`[data-error-for="${id}"]`);
    if (!slot) continue;
    slot.hidden = false;
    slot.textContent = slot.textContent ? `${slot.textContent} ${text}` : text;
    form.querySelector(`#${id}`)?.setAttribute("aria-invalid", "true");
    placed++;
  }
  replace(area, problem(e));
  const first = form.querySelector("[aria-invalid]");
  if (first) first.focus();
  return placed;
}
