// Policies: the list (members, schedule, next run in the policy's own time zone,
// retention), one policy's page with its editor and the retention preview (which
// existing points each rule keeps, which it would remove, and why), a new policy, and
// a policy file imported (TOML) or exported.

import { all, api, href } from "../api.js";
import { h, replace, link, badge, table, facts, problem, announce } from "../dom.js";
import { field, input, select, words, pairs, pairsText, showProblem, clearErrors } from "../forms.js";

const LEVELS = ["crash", "filesystem", "application"];
const RULES = ["last", "hourly", "daily", "weekly", "monthly", "yearly"];

// "2026-03-30T02:00:00+02:00" as the policy's zone wrote it: date, time, offset.
export function zoned(iso) {
  const m = /^(\d{4}-\d\d-\d\d)T(\d\d:\d\d)(?::\d\d(?:\.\d+)?)?(Z|[+-]\d\d:\d\d)?$/.exec(iso || "");
  return m ? `${m[1]} ${m[2]} ${m[3] === "Z" || !m[3] ? "UTC" : m[3]}` : iso || "–";
}

export function retentionText(r) {
  const counts = Object.entries(r.counts || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`);
  if (r.keep_within) counts.push(`all within ${r.keep_within}`);
  if (r.min_age) counts.push(`none younger than ${r.min_age}`);
  return counts.join(", ") || "keep everything";
}

function scheduleText(s) {
  return s.cron ? `cron ${s.cron} (${s.timezone})` : s.every ? `every ${s.every} (${s.timezone})` : "not scheduled";
}

function membersText(m) {
  return [m.vms.length ? `VMs ${m.vms.join(", ")}` : null, m.groups.length ? `groups ${m.groups.join(", ")}` : null,
    m.select.length ? `names ${m.select.join(", ")}` : null,
    Object.keys(m.labels).length ? `labels ${pairsText(m.labels)}` : null].filter(Boolean).join("; ") || "none";
}

async function list(ctx) {
  const rows = await all("/policies");
  const area = h("div", { "aria-live": "polite" });
  const file = h("input", { id: "pol-file", type: "file", accept: ".toml,application/toml" });
  const importForm = ctx.can("policies:write") ? h("form", { class: "row", onsubmit: async (e) => {
    e.preventDefault();
    const f = file.files[0];
    if (!f) { replace(area, h("p", { class: "error", role: "alert" }, "Choose a policy file (TOML) first.")); return; }
    try {
      const made = await api("/policies", { method: "POST", text: await f.text(), textType: "application/toml" });
      announce(`Imported ${made.map((p) => p.name).join(", ")}`);
      ctx.go(`#/policies/${encodeURIComponent(made[0].name)}`);
    } catch (err) {
      replace(area, problem(err), err.problem?.problems ? h("ul", { class: "problems" },
        err.problem.problems.map((p) => h("li", {}, p))) : null);
    }
  } }, h("label", { for: "pol-file" }, "Import a policy file"), file, h("button", { type: "submit", class: "quiet" }, "Import")) : null;
  return h("div", {},
    h("div", { class: "spread" }, h("h1", {}, "Policies"),
      ctx.can("policies:write") ? h("a", { class: "button", href: "#/policies/new" }, "New policy") : null),
    h("section", { class: "panel", "aria-label": "Policies" },
      table("Policies", ["Name", "Members", "Schedule", "Next run (its zone)", "Retention", "RPO"], rows.map((p) => h("tr", {},
        h("td", {}, link(`#/policies/${encodeURIComponent(p.name)}`, p.name),
          p.template ? [" ", badge("template")] : null, p.tenant ? h("span", { class: "muted" }, ` (${p.tenant})`) : null),
        h("td", {}, membersText(p.policy.members)), h("td", {}, scheduleText(p.policy.schedule)),
        h("td", { class: "nowrap" }, zoned(p.policy.next_runs[0])), h("td", {}, retentionText(p.policy.retention)),
        h("td", {}, p.policy.rpo || "–"))), "No policies yet."),
      importForm, area));
}

// The editor's fields: input ids by the policy's keys (a problem naming a key is
// shown next to its field).
const KEYS = {
  name: "pf-name", description: "pf-description", vms: "pf-vms", groups: "pf-groups", select: "pf-select",
  labels: "pf-labels", every: "pf-every", cron: "pf-cron", timezone: "pf-timezone", consistency: "pf-consistency",
  rpo: "pf-rpo", repository: "pf-repository", "retention.keep_within": "pf-keep_within",
  "retention.min_age": "pf-min_age", retention: "pf-keep_last", policy: "pf-name",
  ...Object.fromEntries(RULES.map((r) => [`retention.keep_${r}`, `pf-keep_${r}`])),
};

function editor(ctx, stored, repos) {
  const p = stored?.policy;
  const s = p?.schedule || { timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" };
  const r = p?.retention || { counts: {} };
  const f = {
    name: input("pf-name", { required: true, value: stored?.name || "", readonly: !!stored, pattern: "[A-Za-z0-9][A-Za-z0-9._-]*" }),
    description: input("pf-description", { value: p?.description || "" }),
    vms: input("pf-vms", { value: (p?.members.vms || []).join(", ") }),
    groups: input("pf-groups", { value: (p?.members.groups || []).join(", ") }),
    select: input("pf-select", { value: (p?.members.select || []).join(", ") }),
    labels: input("pf-labels", { value: pairsText(p?.members.labels) }),
    every: input("pf-every", { value: s.every || "", placeholder: "6h" }),
    cron: input("pf-cron", { value: s.cron || "", placeholder: "0 2 * * *" }),
    timezone: input("pf-timezone", { value: s.timezone || "UTC" }),
    consistency: select("pf-consistency", LEVELS.map((l) => [l]), p?.consistency || "crash"),
    rpo: input("pf-rpo", { value: p?.rpo || "", placeholder: "26h" }),
    repository: select("pf-repository", [["", "the server's default"], ...repos.map((x) => [x.name])], p?.repository || ""),
    keep_within: input("pf-keep_within", { value: r.keep_within || "", placeholder: "2d" }),
    min_age: input("pf-min_age", { value: r.min_age || "", placeholder: "1d" }),
  };
  for (const rule of RULES) {
    f[`keep_${rule}`] = input(`pf-keep_${rule}`, { inputmode: "numeric", size: 4, value: r.counts?.[rule] || "" });
  }
  const fields = () => {
    const text = (el) => el.value.trim() || null;
    const count = (el) => {
      const t = el.value.trim();
      return t === "" || t === "0" ? null : /^\d+$/.test(t) ? Number(t) : t; // the API says what is wrong
    };
    const list = (el) => (words(el.value).length ? words(el.value) : null);
    const retention = { keep_within: text(f.keep_within), min_age: text(f.min_age) };
    for (const rule of RULES) retention[`keep_${rule}`] = count(f[`keep_${rule}`]);
    return {
      name: f.name.value.trim(), description: text(f.description), vms: list(f.vms), groups: list(f.groups),
      select: list(f.select), labels: Object.keys(pairs(f.labels.value)).length ? pairs(f.labels.value) : null,
      every: text(f.every), cron: text(f.cron), timezone: text(f.timezone), consistency: f.consistency.value,
      rpo: text(f.rpo), repository: f.repository.value || null, retention,
    };
  };
  return { f, fields };
}

function previewTable(preview, points) {
  const byId = new Map(points.map((x) => [x.id, x]));
  const rows = preview.points.map((d) => h("tr", { "data-point": d.id, "data-keep": String(d.keep) },
    h("td", {}, link(`#/points/${d.id}`, zoned(d.time))), h("td", {}, d.name),
    h("td", {}, d.vms.join(", ")), h("td", {}, d.series),
    h("td", {}, d.keep ? badge("keep", "ok") : badge("remove", "bad")),
    h("td", {}, d.reasons.join("; ")),
    h("td", { class: "mono" }, d.id.slice(0, 12), byId.get(d.id) ? "" : "")));
  return [
    h("p", { "data-testid": "preview-summary" },
      `${preview.kept.length} kept, ${preview.removed.length} would be removed`,
      preview.chains.length ? ` (chains ${preview.chains.join(", ")}, repository ${preview.repository})` : "",
      "."),
    table("Retention preview", ["Taken", "Chain", "VMs", "Series", "Decision", "Why", "Id"], rows,
      "No point of this policy yet: its runs' points will show here."),
  ];
}

async function page(ctx, name) {
  const creating = name === null;
  const [stored, repos] = await Promise.all([
    creating ? null : api(`/policies/${encodeURIComponent(name)}`),
    ctx.can("repositories:read") ? all("/repositories").catch(() => []) : [],
  ]);
  const writable = ctx.can("policies:write");
  const { f, fields } = editor(ctx, stored, repos);
  const area = h("div", { "aria-live": "polite" });
  const runs = h("ol", { class: "runs", "data-testid": "next-runs" });
  const previewArea = h("div", { "aria-live": "polite", "data-testid": "preview" });
  const showRuns = (summary) => replace(runs, summary.next_runs.map((t) => h("li", {}, zoned(t))));
  if (stored) showRuns(stored.policy);
  const form = h("form", { class: "editor", novalidate: true });
  const preview = async () => {
    clearErrors(form);
    replace(area);
    try {
      const got = await api("/policies/preview", { method: "POST", body: fields() });
      showRuns(got.policy);
      replace(previewArea, previewTable(got.retention, []));
      announce(`Preview: ${got.retention.kept.length} kept, ${got.retention.removed.length} removed`);
    } catch (e) { showProblem(form, area, e, KEYS); }
  };
  const save = h("button", { type: "submit" }, creating ? "Create policy" : "Save changes");
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    save.disabled = true;
    try {
      const body = fields();
      const done = creating
        ? (await api("/policies", { method: "POST", body: Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null)) }))[0]
        : await api(`/policies/${encodeURIComponent(name)}`, { method: "PATCH", body });
      announce(`Policy ${done.name} saved`);
      if (creating) { ctx.go(`#/policies/${encodeURIComponent(done.name)}`); return; }
      clearErrors(form);
      showRuns(done.policy);
      replace(area, h("p", { class: "notice", "data-testid": "saved" }, `Saved policy ${done.name}; the service takes it up at its next tick.`));
      save.disabled = false;
    } catch (err) { save.disabled = false; showProblem(form, area, err, KEYS); }
  });
  const group = (legend, ...children) => h("fieldset", {}, h("legend", {}, legend), ...children);
  const lock = (el) => { if (!writable) el.disabled = true; return el; };
  Object.values(f).forEach(lock);
  form.append(
    group("Policy", field("pf-name", "Name", f.name, creating ? null : " a policy's name cannot change"),
      field("pf-description", "Description", f.description)),
    group("Members", field("pf-vms", "VMs", f.vms, " names, by commas"), field("pf-groups", "Groups", f.groups),
      field("pf-select", "Name globs", f.select, " web-*"), field("pf-labels", "Labels", f.labels, " key=value, by commas")),
    group("Schedule", field("pf-every", "Every", f.every, " an interval (6h, 1d), or"),
      field("pf-cron", "Cron", f.cron, " five fields, in the time zone"), field("pf-timezone", "Time zone", f.timezone, " IANA, e.g. Europe/Paris"),
      field("pf-rpo", "RPO", f.rpo, " the age a newest point may reach"), field("pf-consistency", "Consistency", f.consistency),
      field("pf-repository", "Repository", f.repository)),
    group("Retention", h("div", { class: "counts" }, RULES.map((rule) => field(`pf-keep_${rule}`, `Keep ${rule}`, f[`keep_${rule}`]))),
      field("pf-keep_within", "Keep all within", f.keep_within), field("pf-min_age", "Remove none younger than", f.min_age)),
    h("div", { class: "row" }, writable ? save : null,
      h("button", { type: "button", class: "quiet", onclick: preview }, "Preview retention and runs"),
      stored ? h("a", { class: "button quiet", href: href(`/policies/${encodeURIComponent(name)}/export`), download: `${name}.toml` }, "Export (TOML)") : null),
    area);
  if (stored) {
    try {
      const saved = await api(`/policies/${encodeURIComponent(name)}/retention-preview`);
      replace(previewArea, previewTable(saved, []));
    } catch (e) { replace(previewArea, problem(e)); }
  } else {
    replace(previewArea, h("p", { class: "muted" }, "Fill in the policy and press Preview: its next runs and what its retention would keep show here before anything is saved."));
  }
  const p = stored?.policy;
  return h("div", {},
    h("p", { class: "crumbs" }, link("#/policies", "Policies"), " / "),
    h("h1", {}, creating ? "New policy" : `Policy ${name}`),
    stored ? h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "pol-facts" }, h("h2", { id: "pol-facts" }, "As it runs"),
        facts([["Members", membersText(p.members)], ["Schedule", scheduleText(p.schedule)],
          ["Retention", retentionText(p.retention)], ["RPO", p.rpo || "–"], ["Consistency", p.consistency],
          ["Repository", p.repository || "the server's default"],
          p.copies.length ? ["Copies", p.copies.map((c) => `to ${c.to} (${c.schedule})`).join("; ")] : null,
          ["Defined by", stored.tenant ? `tenant ${stored.tenant}` : "the system"], stored.template ? ["Template", "offered to tenants"] : null,
          ["Last run", stored.last_run ? zoned(stored.last_run) : "never"]])),
      h("section", { class: "panel", "aria-labelledby": "pol-runs" }, h("h2", { id: "pol-runs" }, "Next runs, in its time zone"), runs))
      : h("section", { class: "panel", "aria-labelledby": "pol-runs" }, h("h2", { id: "pol-runs" }, "Next runs, in its time zone"), runs),
    h("section", { class: "panel", "aria-labelledby": "pol-edit" }, h("h2", { id: "pol-edit" }, writable ? "Edit" : "Settings"), form),
    h("section", { class: "panel", "aria-labelledby": "pol-preview" }, h("h2", { id: "pol-preview" }, "Retention preview"),
      h("p", { class: "muted" }, "Which existing points of the policy's chains each rule keeps, and which it would remove now. Nothing is removed here."),
      previewArea));
}

export async function render(ctx) {
  const [name] = ctx.params;
  if (name === undefined) return list(ctx);
  return page(ctx, name === "new" ? null : name);
}
