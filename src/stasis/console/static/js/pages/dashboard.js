// The dashboard: every VM and group against its RPO, running and recent jobs, and the
// repositories' sizes, from GET /status, /vms, /groups, /jobs and /repositories.

import { all, api } from "../api.js";
import { h, link, badge, bytes, ago, since, table, problem } from "../dom.js";

// What a VM's protection looks like at a glance, from its status row and last backup.
export function health(status, lastBackup) {
  if (lastBackup && ["failed", "interrupted"].includes(lastBackup.state)) {
    return ["failing", "bad", `last backup ${lastBackup.state}: ${lastBackup.error || "see its job"}`];
  }
  if (!status || (!status.newest_point && !status.policies.length)) {
    return ["unprotected", "", "no point and no policy"];
  }
  if (status.rpo === "breached") return ["overdue", "warn", status.rpo_detail];
  if (status.rpo === "met") return ["ok", "ok", status.rpo_detail];
  if (!status.newest_point) return ["unprotected", "", status.rpo_detail || "no point yet"];
  return ["ok", "ok", status.rpo_detail || "no RPO set"];
}

const ORDER = { failing: 0, overdue: 1, unprotected: 2, ok: 3 };

async function maybe(promise) {
  try { return await promise; } catch (e) { return e; }
}

export async function render({ can }) {
  const [vms, status, groups, jobs, repos] = await Promise.all([
    can("vms:read") ? maybe(all("/vms")) : [],
    can("status:read") ? maybe(all("/status")) : [],
    can("groups:read") ? maybe(all("/groups")) : [],
    can("jobs:read") ? maybe(api("/jobs", { query: { limit: 200 } })) : { items: [] },
    can("repositories:read") ? maybe(all("/repositories")) : [],
  ]);
  const failed = [vms, status, groups, jobs, repos].filter((x) => x instanceof Error);
  const jobList = jobs instanceof Error ? [] : jobs.items;
  const lastBackup = new Map();
  for (const j of jobList) {  // newest first
    if (j.kind !== "backup" || j.state === "queued" || j.state === "running") continue;
    for (const v of j.vms) if (!lastBackup.has(v)) lastBackup.set(v, j);
  }
  const byVm = new Map((status instanceof Error ? [] : status).map((s) => [s.vm, s]));
  const names = new Set([...(vms instanceof Error ? [] : vms).map((v) => v.name), ...byVm.keys()]);
  const rows = [...names].map((name) => {
    const s = byVm.get(name);
    const [state, kind, why] = health(s, lastBackup.get(name));
    return { name, s, state, kind, why };
  }).sort((a, b) => ORDER[a.state] - ORDER[b.state] || a.name.localeCompare(b.name));
  const count = (st) => rows.filter((r) => r.state === st).length;
  const vmState = new Map(rows.map((r) => [r.name, r]));

  const tiles = h("div", { class: "tiles", role: "list", "aria-label": "Protection at a glance" },
    [["ok", "ok", "OK"], ["overdue", "warn", "Overdue"], ["failing", "bad", "Failing"],
      ["unprotected", "", "Unprotected"]].map(([st, cls, label]) =>
      h("div", { class: `tile ${cls}`, role: "listitem", "data-testid": `tile-${st}` },
        h("div", { class: "count" }, count(st)), h("div", { class: "what" }, `${label} VMs`))));

  const vmTable = table("Protected VMs", ["VM", "State", "Newest point", "Policies", "Why"],
    rows.map((r) => h("tr", {},
      h("td", {}, link(`#/vms/${encodeURIComponent(r.name)}`, r.name)),
      h("td", {}, badge(r.state, r.kind)),
      h("td", { class: "nowrap" }, r.s?.newest_time ? h("time", { datetime: r.s.newest_time, title: r.s.newest_time }, ago(r.s.age_s)) : "–"),
      h("td", {}, r.s?.policies.join(", ") || "–"),
      h("td", { class: "muted" }, r.why))), "No VMs.");

  const groupRows = (groups instanceof Error ? [] : groups).map((g) => {
    const members = g.resolved ? g.resolved.selected : g.members;
    const worst = members.map((m) => vmState.get(m)?.state || "unprotected")
      .sort((a, b) => ORDER[a] - ORDER[b])[0] || "unprotected";
    const cls = { ok: "ok", overdue: "warn", failing: "bad", unprotected: "" }[worst];
    return h("tr", {}, h("td", {}, g.name), h("td", {}, badge(worst, cls)),
      h("td", {}, members.map((m, i) => [i ? ", " : "", link(`#/vms/${encodeURIComponent(m)}`, m)])));
  });

  const running = jobList.filter((j) => j.state === "running" || j.state === "queued");
  const recent = jobList.filter((j) => !running.includes(j)).slice(0, 8);
  const jobRow = (j) => h("tr", {},
    h("td", {}, link(`#/jobs/${j.id}`, `#${j.id}`)), h("td", {}, j.kind),
    h("td", { class: "break" }, j.vms.join(", ") || j.name), h("td", {}, badge(j.state)),
    h("td", { class: "nowrap" }, since(j.ended || j.started || j.queued)));

  const repoRows = (repos instanceof Error ? [] : repos).map((r) => h("tr", {},
    h("td", { class: "break" }, r.name, r.default ? h("span", { class: "muted" }, " (default)") : ""),
    h("td", { class: "num" }, r.info.points),
    h("td", { class: "num" }, bytes(r.info.logical_size)),
    h("td", { class: "num" }, bytes(r.info.stored_size)),
    h("td", { class: "num" }, `${r.info.dedup_ratio.toFixed(2)}×`),
    h("td", { class: "num" }, `${r.info.compression_ratio.toFixed(2)}×`)));

  return h("div", {},
    h("h1", {}, "Dashboard"),
    failed.map((e) => problem(e)),
    tiles,
    h("section", { class: "panel", "aria-labelledby": "d-vms" }, h("h2", { id: "d-vms" }, "VMs"), vmTable),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "d-jobs" },
        h("h2", { id: "d-jobs" }, "Jobs"),
        h("h3", { class: "muted" }, `Running and queued (${running.length})`),
        table("Running jobs", ["Job", "Kind", "What", "State", "Since"], running.map(jobRow), "None running."),
        h("h3", { class: "muted" }, "Recent"),
        table("Recent jobs", ["Job", "Kind", "What", "State", "Ended"], recent.map(jobRow), "No jobs yet.")),
      can("repositories:read") ? h("section", { class: "panel", "aria-labelledby": "d-repos" },
        h("h2", { id: "d-repos" }, "Repositories"),
        table("Repositories", ["Name", ["Points", "num"], ["Logical", "num"], ["Stored", "num"],
          ["Dedup", "num"], ["Compression", "num"]], repoRows, "No repository served.")) : null),
    can("groups:read") ? h("section", { class: "panel", "aria-labelledby": "d-groups" },
      h("h2", { id: "d-groups" }, "Groups"),
      table("Groups", ["Group", "State", "Members"], groupRows, "No groups.")) : null);
}
