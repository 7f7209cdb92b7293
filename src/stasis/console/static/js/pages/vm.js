// One VM: its state and disks, its protection, its points on a timeline and in a list
// (full or incremental, consistency, size) and its jobs.

import { all, api } from "../api.js";
import { h, svg, link, badge, bytes, ago, since, time, table, facts, problem, startJob, duration } from "../dom.js";
import { disksText } from "./vms.js";

const PAGE = 25;

// A point's kind for one VM: "full" when every disk was read whole, else "incremental".
export function readMode(detail, vm) {
  const v = detail?.vms.find((x) => x.name === vm) || detail?.vms[0];
  if (!v) return "–";
  return v.disks.every((d) => d.mode === "full") ? "full" : "incremental";
}

function timeline(points, details, vm) {
  if (!points.length) return null;
  const times = points.map((p) => Date.parse(p.time));
  const lo = Math.min(...times);
  const hi = Math.max(...times);
  const x = (t) => 12 + (hi === lo ? 0.5 : (t - lo) / (hi - lo)) * 976;
  return h("figure", { class: "panel" },
    h("figcaption", { class: "muted" }, `Timeline of the ${points.length} newest points (green: full, blue: incremental)`),
    svg("svg", { class: "timeline", viewBox: "0 0 1000 44", preserveAspectRatio: "none", role: "img",
      "aria-label": `${points.length} points from ${new Date(lo).toLocaleString()} to ${new Date(hi).toLocaleString()}` },
    svg("line", { x1: 0, y1: 22, x2: 1000, y2: 22 }),
    points.map((p, i) => svg("a", { href: `#/points/${p.id}`, "aria-label": `point ${p.name} ${p.time}` },
      svg("circle", { cx: x(times[i]), cy: 22, r: 7, class: readMode(details.get(p.id), vm) },
        svg("title", {}, `${p.time} · ${readMode(details.get(p.id), vm)} · ${bytes(p.size)}`))))));
}

export async function render(ctx) {
  const [name] = ctx.params;
  const q = encodeURIComponent(name);
  const [vm, status, points, jobs] = await Promise.all([
    api(`/vms/${q}`),
    ctx.can("status:read") ? api(`/status/${q}`).catch(() => null) : null,
    ctx.can("points:read") ? api("/points", { query: { vm: name, sort: "-time", limit: PAGE } }) : { items: [] },
    ctx.can("jobs:read") ? api("/jobs", { query: { vm: name, limit: 15 } }) : { items: [] },
  ]);
  // The list's consistency and read mode are in each point's manifest.
  const details = new Map(await Promise.all(points.items.map((p) =>
    api(`/points/${p.id}`).then((d) => [p.id, d], () => [p.id, null]))));
  const message = h("div", { "aria-live": "polite" });
  const backup = ctx.can("backups:run") ? h("button", { type: "button",
    onclick: (e) => startJob(ctx, "/backups", { vms: [name] }, e.currentTarget, message) }, "Back up now") : null;

  const pointRows = points.items.map((p) => {
    const d = details.get(p.id);
    const v = d?.vms.find((x) => x.name === name);
    return h("tr", {},
      h("td", {}, link(`#/points/${p.id}`, time(p.time))),
      h("td", {}, p.name, p.kind === "group" ? h("span", { class: "muted" }, " (group)") : ""),
      h("td", {}, readMode(d, name)),
      h("td", {}, v ? badge(v.consistency, v.consistency === "crash" ? "" : "ok") : "–"),
      h("td", { class: "num" }, bytes(p.size)),
      h("td", { class: "mono" }, p.id.slice(0, 12)));
  });
  const jobRows = jobs.items.map((j) => h("tr", {},
    h("td", {}, link(`#/jobs/${j.id}`, `#${j.id}`)), h("td", {}, j.kind), h("td", {}, badge(j.state)),
    h("td", {}, since(j.queued)), h("td", { class: "num" }, duration(j.duration_s))));

  return h("div", {},
    h("p", { class: "crumbs" }, link("#/vms", "VMs"), " / "),
    h("div", { class: "spread" }, h("h1", {}, name), h("div", { class: "row" }, backup)),
    message,
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "vm-facts" }, h("h2", { id: "vm-facts" }, "Machine"),
        facts([["State", badge(vm.state, vm.state === "running" ? "ok" : "")], ["UUID", h("span", { class: "mono" }, vm.uuid)],
          ["Disks", disksText(vm.disks)], ["Change tracking", vm.checkpoint ? `checkpoint ${vm.checkpoint}` : "none yet"]])),
      h("section", { class: "panel", "aria-labelledby": "vm-prot" }, h("h2", { id: "vm-prot" }, "Protection"),
        status ? facts([["RPO", [badge(status.rpo), " ", status.rpo_detail]],
          ["Newest point", status.newest_time ? [time(status.newest_time), ` (${ago(status.age_s)})`] : "none"],
          ["Policies", status.policies.join(", ") || "none"], ["Next run", status.next_run ? time(status.next_run) : "–"]])
          : h("p", { class: "muted" }, "No point, policy or job of this VM yet."))),
    timeline(points.items, details, name),
    h("section", { class: "panel", "aria-labelledby": "vm-points" },
      h("h2", { id: "vm-points" }, "Points", points.next ? ` (the ${PAGE} newest)` : ""),
      table("Points", ["Taken", "Name", "Read", "Consistency", ["Size", "num"], "Id"], pointRows, "No points yet.")),
    h("section", { class: "panel", "aria-labelledby": "vm-jobs" },
      h("h2", { id: "vm-jobs" }, "Jobs"),
      table("Jobs", ["Job", "Kind", "State", "Queued", ["Took", "num"]], jobRows, "No jobs yet.")));
}
