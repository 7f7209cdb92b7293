// Forms of the editors and wizards: a labelled field with a slot for the API's message
// about it, and a refusal of the API (problem+json) shown next to the fields it names.

import { ApiError, api } from "./api.js";
import { h, replace, problem } from "./dom.js";

// A labelled input with a hint and an error slot the input is described by (the hint
// stays out of the label, so that a field's name is its label alone).
export function field(id, label, input, hint) {
  const error = h("span", { class: "field-error", id: `${id}-error`, "data-error-for": id, hidden: true });
  input.setAttribute("aria-describedby", `${id}-error${hint ? ` ${id}-hint` : ""}`);
  return h("div", { class: "field" }, h("label", { for: id }, label),
    hint ? h("span", { class: "hint", id: `${id}-hint` }, hint.trim()) : null, input, error);
}

// A checkbox in its label, with the error slot it is described by.
export function checkField(box, label) {
  const error = h("span", { class: "field-error", id: `${box.id}-error`, "data-error-for": box.id, hidden: true });
  box.setAttribute("aria-describedby", `${box.id}-error`);
  return h("div", { class: "field" }, h("label", { class: "check", for: box.id }, box, label), error);
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

// Where restored disks and NICs go, from what the user's tenant allows (a choice the
// API checks again): a directory (storage), or with `pool` a libvirt storage pool
// instead (the API refuses both at once: its message shows next to the pool), and a
// network. The fields, the part of a body they make, and their ids by body key.
export function placement(ctx, prefix, { storageHint, network = true, pool = true } = {}) {
  const tenant = ctx.me.tenant;
  const pools = tenant?.restore_pools || [];
  const storage = input(`${prefix}-storage`, { list: `${prefix}-dirs`,
    required: !!tenant && !pools.length, placeholder: tenant ? tenant.restore_dirs[0] || "" : "the default" });
  const poolIn = input(`${prefix}-pool`, { list: `${prefix}-pools`, placeholder: pools[0] || "none: a directory" });
  const net = input(`${prefix}-network`, { list: `${prefix}-nets`, placeholder: "as in the point" });
  const nodes = [
    field(`${prefix}-storage`, "Storage", storage, storageHint || " a directory for the disks"),
    h("datalist", { id: `${prefix}-dirs` }, (tenant?.restore_dirs || []).map((d) => h("option", { value: d }))),
    pool ? field(`${prefix}-pool`, "Pool", poolIn, " or a libvirt storage pool whose new volumes take the disks") : null,
    pool ? h("datalist", { id: `${prefix}-pools`, "data-testid": `${prefix}-pools` }, pools.map((d) => h("option", { value: d }))) : null,
    network ? field(`${prefix}-network`, "Network", net, " every interface on this network; empty: as in the point") : null,
    h("datalist", { id: `${prefix}-nets` }, (tenant?.restore_networks || []).map((d) => h("option", { value: d }))),
  ];
  const values = () => {
    const out = {};
    if (storage.value.trim()) out.storage = storage.value.trim();
    if (pool && poolIn.value.trim()) out.pool = poolIn.value.trim();
    if (network && net.value.trim()) out.network = net.value.trim();
    return out;
  };
  const fields = { storage: `${prefix}-storage`, pool: `${prefix}-pool`, network: `${prefix}-network` };
  return { nodes, values, fields };
}

// POST a work route from `form`: its job's page, or a refusal shown next to `fields`.
export async function submitJob(ctx, form, area, path, body, button, fields) {
  button.disabled = true;
  try {
    const started = await api(path, { method: "POST", body });
    ctx.go(`#/jobs/${started.job.id}`);
  } catch (e) {
    button.disabled = false;
    showProblem(form, area, e, fields);
  }
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
  // "pool: ..." names its field; so does a CLI option the message shares with the CLI
  // ("--pool and --storage are two places for the disks: ...")
  const m = (e.problem.detail || "").match(/^([a-z_]+): |^--([a-z][a-z-]*)\b/);
  return m ? [{ key: (m[1] || m[2]).replace(/-/g, "_"), text: e.problem.detail }] : [];
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
