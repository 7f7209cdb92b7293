// Groups: the list with what each resolves to now, one group's page with its editor
// (members, name globs, labels, consistency, description) and a new group. The API
// checks every change first: a refused one changes nothing and says why, next to the
// field it names.

import { all, api } from "../api.js";
import { h, replace, link, badge, table, facts, announce } from "../dom.js";
import { field, input, select, words, pairs, pairsText, showProblem } from "../forms.js";

const LEVELS = ["crash", "filesystem", "application"];
const KEYS = { name: "gf-name", vms: "gf-vms", add_vms: "gf-vms", remove_vms: "gf-vms", select: "gf-select",
  add_select: "gf-select", remove_select: "gf-select", labels: "gf-labels", add_labels: "gf-labels",
  remove_labels: "gf-labels", consistency: "gf-consistency", description: "gf-description" };

function resolvedText(g) {
  if (!g.resolved) return "–";
  return [g.resolved.members.join(", ") || "no VM",
    g.resolved.missing.length ? ` (missing: ${g.resolved.missing.join(", ")})` : ""].join("");
}

async function list(ctx) {
  const groups = await all("/groups");
  return h("div", {},
    h("div", { class: "spread" }, h("h1", {}, "Groups"),
      ctx.can("groups:write") ? h("a", { class: "button", href: "#/groups/new" }, "New group") : null),
    h("section", { class: "panel", "aria-label": "Groups" },
      table("Groups", ["Name", "Members", "Name globs", "Labels", "Consistency", "Resolves to now"], groups.map((g) => h("tr", {},
        h("td", {}, link(`#/groups/${encodeURIComponent(g.name)}`, g.name)), h("td", {}, g.members.join(", ") || "–"),
        h("td", {}, g.select.join(", ") || "–"), h("td", {}, pairsText(g.labels) || "–"),
        h("td", {}, badge(g.consistency)), h("td", {}, resolvedText(g)))), "No groups yet.")));
}

const diff = (before, after) => [after.filter((x) => !before.includes(x)), before.filter((x) => !after.includes(x))];

async function page(ctx, name) {
  const creating = name === null;
  const g = creating ? null : await api(`/groups/${encodeURIComponent(name)}`);
  const writable = ctx.can("groups:write");
  const f = {
    name: input("gf-name", { required: true, value: g?.name || "", readonly: !creating }),
    vms: input("gf-vms", { value: (g?.members || []).join(", ") }),
    select: input("gf-select", { value: (g?.select || []).join(", ") }),
    labels: input("gf-labels", { value: pairsText(g?.labels) }),
    consistency: select("gf-consistency", LEVELS.map((l) => [l]), g?.consistency || "crash"),
    description: input("gf-description", { value: g?.description || "" }),
  };
  if (!writable) Object.values(f).forEach((el) => { el.disabled = true; });
  const area = h("div", { "aria-live": "polite" });
  const save = h("button", { type: "submit" }, creating ? "Create group" : "Save changes");
  const form = h("form", { class: "editor", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    save.disabled = true;
    const vms = words(f.vms.value);
    const sel = words(f.select.value);
    const labels = pairs(f.labels.value);
    try {
      let done;
      if (creating) {
        done = await api("/groups", { method: "POST", body: { name: f.name.value.trim(), vms, select: sel, labels,
          consistency: f.consistency.value, description: f.description.value } });
      } else {
        const [addVms, removeVms] = diff(g.members, vms);
        const [addSel, removeSel] = diff(g.select, sel);
        const removeLabels = Object.keys(g.labels).filter((k) => !(k in labels));
        const addLabels = Object.fromEntries(Object.entries(labels).filter(([k, v]) => g.labels[k] !== v));
        done = await api(`/groups/${encodeURIComponent(name)}`, { method: "PATCH", body: {
          add_vms: addVms, remove_vms: removeVms, add_select: addSel, remove_select: removeSel,
          add_labels: addLabels, remove_labels: removeLabels, consistency: f.consistency.value,
          description: f.description.value } });
      }
      announce(`Group ${done.name} saved`);
      ctx.go(`#/groups/${encodeURIComponent(done.name)}`);
    } catch (err) { save.disabled = false; showProblem(form, area, err, KEYS); }
  } },
  field("gf-name", "Name", f.name), field("gf-vms", "VMs", f.vms, " names, by commas"),
  field("gf-select", "Name globs", f.select, " db-*"), field("gf-labels", "Labels", f.labels, " key=value, by commas"),
  field("gf-consistency", "Consistency", f.consistency), field("gf-description", "Description", f.description),
  writable ? h("div", { class: "row" }, save) : null, area);
  const del = writable && g ? h("button", { type: "button", class: "danger", onclick: async (e) => {
    if (!confirm(`Delete group ${name}? Its points stay.`)) return;
    e.currentTarget.disabled = true;
    try { await api(`/groups/${encodeURIComponent(name)}`, { method: "DELETE" }); ctx.go("#/groups"); }
    catch (err) { showProblem(form, area, err, KEYS); }
  } }, "Delete group…") : null;
  return h("div", {},
    h("p", { class: "crumbs" }, link("#/groups", "Groups"), " / "),
    h("div", { class: "spread" }, h("h1", {}, creating ? "New group" : `Group ${name}`), h("div", { class: "row" }, del)),
    g ? h("section", { class: "panel", "aria-labelledby": "grp-facts" }, h("h2", { id: "grp-facts" }, "Now"),
      facts([["Resolves to", resolvedText(g)], ["Selected by globs or labels", g.resolved?.selected.join(", ") || "–"],
        ["Hooks", Object.entries(g.hooks || {}).filter(([, v]) => Array.isArray(v) && v.length).map(([k, v]) => `${k}: ${v.length}`).join(", ") || "none"],
        ["Updated", g.updated]])) : null,
    h("section", { class: "panel", "aria-labelledby": "grp-edit" }, h("h2", { id: "grp-edit" }, writable ? "Edit" : "Settings"), form));
}

export async function render(ctx) {
  const [name] = ctx.params;
  if (name === undefined) return list(ctx);
  return page(ctx, name === "new" ? null : name);
}
