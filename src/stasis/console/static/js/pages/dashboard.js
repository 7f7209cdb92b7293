// The dashboard: every VM and group against its RPO with a strip of its last 30 days,
// running and recent jobs, the repositories' used space, dedup, growth and forecast,
// and the copy lag per second site, from GET /status, /vms, /groups, /jobs,
// /history, /copy-lag, /repositories and /repositories/{name}/usage.

import { all, api } from "../api.js";
import { h, svg, link, badge, bytes, ago, since, table, problem } from "../dom.js";

const DAYS = 30;

// One cell per day: met (green), breached (red; amber when a point came that day but
// the RPO was breached at some moment), no RPO (blue with a point, grey without),
// before the first point (dashed).
export function strip(history, label) {
  if (!history) return h("span", { class: "muted" }, "–");
  const made = history.days.filter((d) => d.points).length;
  const breached = history.days.filter((d) => d.rpo === "breached").length;
  const met = history.days.filter((d) => d.rpo === "met").length;
  const summary = history.rpo_s === null
    ? `no RPO set; points on ${made} of ${history.days.length} days`
    : `RPO met on ${met} days, breached on ${breached}; points on ${made} of ${history.days.length} days`;
  return h("div", { class: "strip", role: "img", "data-testid": `strip-${history.kind}-${history.name}`,
    "aria-label": `${label}, last ${history.days.length} days: ${summary}` },
  history.days.map((d) => h("span", { class: `${d.rpo}${d.points ? " made" : ""}`,
    title: `${d.day}: ${d.points} point${d.points === 1 ? "" : "s"}, RPO ${d.rpo === "before" ? "not known (before the first point)" : d.rpo}` })));
}

function legend() {
  return h("p", { class: "legend", "aria-hidden": "true" },
    [["met", "RPO met all day"], ["breached made", "a point, RPO breached at times"], ["breached", "breached, no point"],
      ["none made", "a point (no RPO)"], ["empty", "no point"], ["before", "before the first point"]]
      .map(([cls, text]) => h("span", {}, h("i", { class: cls }), text)));
}

function growthChart(u) {
  const ys = u.days.map((d) => d.stored);
  const top = Math.max(...ys, 1);
  const pts = ys.map((y, i) => `${(i / Math.max(ys.length - 1, 1)) * 100},${60 - (y / top) * 56}`).join(" ");
  return svg("svg", { class: "growth", viewBox: "0 0 100 64", preserveAspectRatio: "none", role: "img",
    "aria-label": `stored size over the last ${ys.length} days: from ${bytes(ys[0])} to ${bytes(ys[ys.length - 1])}` },
  svg("line", { x1: 0, y1: 60, x2: 100, y2: 60 }), svg("polyline", { points: pts }));
}

// How full the repository's filesystem is (a width set through the CSSOM: the page's
// policy refuses inline style attributes).
function meter(used) {
  const fill = h("span");
  fill.style.width = `${Math.round(used * 100)}%`;
  return h("div", { class: "meter", role: "img", "aria-label": `its filesystem is ${Math.round(used * 100)}% full` }, fill);
}

function lagText(s) {
  if (s === null || s === undefined) return "–";
  return s < 1 ? "in step" : ago(s).replace(" ago", " behind");
}

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
  const [vms, status, groups, jobs, repos, history, lag] = await Promise.all([
    can("vms:read") ? maybe(all("/vms")) : [],
    can("status:read") ? maybe(all("/status")) : [],
    can("groups:read") ? maybe(all("/groups")) : [],
    can("jobs:read") ? maybe(api("/jobs", { query: { limit: 200 } })) : { items: [] },
    can("repositories:read") ? maybe(all("/repositories").then((rs) => Promise.all(rs.map((r) =>
      api(`/repositories/${encodeURIComponent(r.name)}/usage`, { query: { days: DAYS } })
        .then((u) => ({ ...r, usage: u }), () => ({ ...r, usage: null })))))) : [],
    can("status:read") ? maybe(all("/history", { days: DAYS })) : [],
    can("status:read") ? maybe(all("/copy-lag")) : [],
  ]);
  const strips = new Map((history instanceof Error ? [] : history).map((x) => [`${x.kind}:${x.name}`, x]));
  const failed = [vms, status, groups, jobs, repos, history, lag].filter((x) => x instanceof Error);
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

  const vmTable = table("Protected VMs", ["VM", "State", "Newest point", `Last ${DAYS} days`, "Policies", "Why"],
    rows.map((r) => h("tr", {},
      h("td", {}, link(`#/vms/${encodeURIComponent(r.name)}`, r.name)),
      h("td", {}, badge(r.state, r.kind)),
      h("td", { class: "nowrap" }, r.s?.newest_time ? h("time", { datetime: r.s.newest_time, title: r.s.newest_time }, ago(r.s.age_s)) : "–"),
      h("td", {}, strip(strips.get(`vm:${r.name}`), r.name)),
      h("td", {}, r.s?.policies.join(", ") || "–"),
      h("td", { class: "muted" }, r.why))), "No VMs.");

  const groupRows = (groups instanceof Error ? [] : groups).map((g) => {
    const members = g.resolved ? g.resolved.selected : g.members;
    const worst = members.map((m) => vmState.get(m)?.state || "unprotected")
      .sort((a, b) => ORDER[a] - ORDER[b])[0] || "unprotected";
    const cls = { ok: "ok", overdue: "warn", failing: "bad", unprotected: "" }[worst];
    return h("tr", {}, h("td", {}, g.name), h("td", {}, badge(worst, cls)),
      h("td", {}, strip(strips.get(`group:${g.name}`), `group ${g.name}`)),
      h("td", {}, members.map((m, i) => [i ? ", " : "", link(`#/vms/${encodeURIComponent(m)}`, m)])));
  });

  const running = jobList.filter((j) => j.state === "running" || j.state === "queued");
  const recent = jobList.filter((j) => !running.includes(j)).slice(0, 8);
  const jobRow = (j) => h("tr", {},
    h("td", {}, link(`#/jobs/${j.id}`, `#${j.id}`)), h("td", {}, j.kind),
    h("td", { class: "break" }, j.vms.join(", ") || j.name), h("td", {}, badge(j.state)),
    h("td", { class: "nowrap" }, since(j.ended || j.started || j.queued)));

  const repoRows = (repos instanceof Error ? [] : repos).map((r) => {
    const u = r.usage;
    const used = u && u.capacity ? (u.capacity - u.free) / u.capacity : null;
    return h("tr", { "data-repo": r.name },
      h("td", { class: "break" }, r.name, r.default ? h("span", { class: "muted" }, " (default)") : ""),
      h("td", { class: "num" }, r.info.points),
      h("td", { class: "num" }, bytes(r.info.stored_size),
        used !== null ? meter(used) : null),
      h("td", { class: "num" }, `${r.info.dedup_ratio.toFixed(2)}×`),
      h("td", {}, u ? growthChart(u) : "–",
        u ? h("span", { class: "muted small" }, `${bytes(Math.max(u.growth_per_day, 0))} a day`) : null),
      h("td", { "data-testid": `forecast-${r.name}` }, u ? u.forecast : "–"));
  });

  const lagRows = (lag instanceof Error ? [] : lag).map((x) => h("tr", {},
    h("td", {}, x.policy), h("td", { class: "break" }, x.repository || x.repo_id || "–"),
    h("td", { class: "num" }, x.vms),
    h("td", {}, x.behind ? badge(`${x.behind} not copied yet`, "warn") : badge(lagText(x.lag_s), x.lag_s > 0 ? "" : "ok")),
    h("td", { class: "num" }, x.lag_points),
    h("td", { class: "nowrap" }, x.newest_time ? since(x.newest_time) : "never"),
    h("td", {}, x.worst_vm ? link(`#/vms/${encodeURIComponent(x.worst_vm)}`, x.worst_vm) : "–")));

  return h("div", {},
    h("h1", {}, "Dashboard"),
    failed.map((e) => problem(e)),
    tiles,
    h("section", { class: "panel", "aria-labelledby": "d-vms" }, h("h2", { id: "d-vms" }, "VMs"), legend(), vmTable),
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "d-jobs" },
        h("h2", { id: "d-jobs" }, "Jobs"),
        h("h3", { class: "muted" }, `Running and queued (${running.length})`),
        table("Running jobs", ["Job", "Kind", "What", "State", "Since"], running.map(jobRow), "None running."),
        h("h3", { class: "muted" }, "Recent"),
        table("Recent jobs", ["Job", "Kind", "What", "State", "Ended"], recent.map(jobRow), "No jobs yet.")),
      can("repositories:read") ? h("section", { class: "panel", "aria-labelledby": "d-repos" },
        h("h2", { id: "d-repos" }, "Repositories"),
        table("Repositories", ["Name", ["Points", "num"], ["Used", "num"], ["Dedup", "num"],
          `Growth (${DAYS} days)`, "Forecast"], repoRows, "No repository served.")) : null),
    can("groups:read") ? h("section", { class: "panel", "aria-labelledby": "d-groups" },
      h("h2", { id: "d-groups" }, "Groups"),
      table("Groups", ["Group", "State", `Last ${DAYS} days`, "Members"], groupRows, "No groups.")) : null,
    can("status:read") ? h("section", { class: "panel", "aria-labelledby": "d-lag" },
      h("h2", { id: "d-lag" }, "Copies to second sites"),
      table("Copy lag", ["Policy", "Site", ["VMs", "num"], "Lag", ["Points behind", "num"], "Newest copy", "Furthest behind"],
        lagRows, "No policy copies to a second site.")) : null);
}
