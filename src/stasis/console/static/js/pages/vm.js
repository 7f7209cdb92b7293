// One VM: its state and disks, its protection, its points on a timeline and in a list
// (full or incremental, consistency, frozen window, size; the newest page of the
// API's listing, older pages on demand) and its jobs; a clone of its newest point.

import { api } from "../api.js";
import { h, svg, replace, link, badge, bytes, ago, since, time, table, facts, problem, startJob, duration } from "../dom.js";
import { disksText } from "./vms.js";

const PAGE = 100;

// A point's kind for one VM: "full" when every disk was read whole, else "incremental"
// (the points listing gives each VM's read mode: no request per point).
export function readMode(point, vm) {
  const v = point?.vm_records?.find((x) => x.name === vm) || point?.vm_records?.[0];
  return v ? v.mode : "–";
}

function consistencyOf(point, vm) {
  return (point.vm_records.find((x) => x.name === vm) || point.vm_records[0])?.consistency || "";
}

function frozenText(p) {
  return p.frozen_ms === null || p.frozen_ms === undefined ? "–" : `${p.frozen_ms.toFixed(1)} ms`;
}

// The loaded points (newest first) on a time axis: a bar per point, its height the
// bytes read (log scale), green for full and blue for incremental, a dot above it when
// the VM reached more than crash consistency. The table below says the same in text.
function timeline(points, vm) {
  if (!points.length) return null;  // the table says there are none
  const times = points.map((p) => Date.parse(p.time));
  const lo = Math.min(...times);
  const hi = Math.max(...times);
  const x = (t) => 8 + (hi === lo ? 0.5 : (t - lo) / (hi - lo)) * 984;
  const most = Math.max(...points.map((p) => p.bytes_read), 1);
  const tall = (b) => 6 + 30 * Math.log1p(b) / Math.log1p(most);
  return svg("svg", { class: "timeline", viewBox: "0 0 1000 56", preserveAspectRatio: "none", role: "img",
    "data-testid": "timeline",
    "aria-label": `${points.length} points from ${new Date(lo).toLocaleString()} to ${new Date(hi).toLocaleString()}` },
  svg("line", { x1: 0, y1: 48, x2: 1000, y2: 48 }),
  points.map((p, i) => {
    const mode = readMode(p, vm);
    const cons = consistencyOf(p, vm);
    const top = 48 - tall(p.bytes_read);
    return svg("a", { href: `#/points/${p.id}`, tabindex: "-1", class: `mark ${mode}` },
      svg("rect", { x: x(times[i]) - 2, y: top, width: 4, height: 48 - top }),
      cons && cons !== "crash" ? svg("circle", { cx: x(times[i]), cy: top - 5, r: 2.5 }) : null,
      svg("title", {}, `${p.time} · ${mode} · ${cons || "–"} · read ${bytes(p.bytes_read)} · frozen ${frozenText(p)}`));
  }));
}

function pointRow(p, name) {
  const cons = consistencyOf(p, name);
  return h("tr", {},
    h("td", {}, link(`#/points/${p.id}`, time(p.time))),
    h("td", {}, p.name, p.kind === "group" ? h("span", { class: "muted" }, " (group)") : ""),
    h("td", {}, readMode(p, name)),
    h("td", {}, cons ? badge(cons, cons === "crash" ? "" : "ok") : "–"),
    h("td", { class: "num" }, frozenText(p)),
    h("td", { class: "num" }, bytes(p.bytes_read)),
    h("td", { class: "num" }, bytes(p.size)),
    h("td", { class: "mono" }, p.id.slice(0, 12)));
}

// The points panel: one request for the newest page, one more per "Load older points".
function pointsPanel(first, name) {
  const loaded = [...first.items];
  let cursor = first.next;
  const caption = h("p", { class: "muted", "aria-live": "polite" });
  const figure = h("figure", { class: "timeline-box" });
  const body = h("div", {});
  const more = h("button", { type: "button", class: "quiet", onclick: async () => {
    more.disabled = true;
    try {
      const page = await api("/points", { query: { vm: name, sort: "-time", limit: PAGE, cursor } });
      loaded.push(...page.items);
      cursor = page.next;
      draw();
    } catch (e) { replace(body, problem(e)); }
    more.disabled = false;
  } }, `Load ${PAGE} older points`);
  function draw() {
    const span = loaded.length ? ` from ${new Date(loaded[loaded.length - 1].time).toLocaleString()} to ${new Date(loaded[0].time).toLocaleString()}` : "";
    if (!loaded.length) replace(caption); else replace(caption, cursor ? `The ${loaded.length} newest points${span}; older ones not loaded yet.`
      : `All ${loaded.length} points${span}.`,
    " Bars: bytes read; green full, blue incremental; a dot: more than crash consistency.");
    replace(figure, timeline(loaded, name));
    replace(body, table("Points", ["Taken", "Name", "Read", "Consistency", ["Frozen", "num"], ["Read bytes", "num"],
      ["Size", "num"], "Id"], loaded.map((p) => pointRow(p, name)), "No points yet."));
    more.hidden = !cursor;
  }
  draw();
  return h("section", { class: "panel", "aria-labelledby": "vm-points" },
    h("h2", { id: "vm-points" }, "Points"), caption, figure, body, h("div", { class: "row" }, more));
}

export async function render(ctx) {
  const [name] = ctx.params;
  const q = encodeURIComponent(name);
  const [vm, status, points, jobs] = await Promise.all([
    api(`/vms/${q}`),
    ctx.can("status:read") ? api(`/status/${q}`).catch(() => null) : null,
    ctx.can("points:read") ? api("/points", { query: { vm: name, sort: "-time", limit: PAGE } }) : { items: [], next: null },
    ctx.can("jobs:read") ? api("/jobs", { query: { vm: name, limit: 15 } }) : { items: [] },
  ]);
  const message = h("div", { "aria-live": "polite" });
  const backup = ctx.can("backups:run") ? h("button", { type: "button",
    onclick: (e) => startJob(ctx, "/backups", { vms: [name] }, e.currentTarget, message) }, "Back up now") : null;
  const newest = points.items[0];
  const clone = ctx.can("restores:run") && newest ? h("a", { class: "button quiet",
    href: `#/points/${newest.id}/recover?what=clone&vm=${q}` }, "Clone the newest point…") : null;
  const cloned = ctx.query.get("cloned");

  const jobRows = jobs.items.map((j) => h("tr", {},
    h("td", {}, link(`#/jobs/${j.id}`, `#${j.id}`)), h("td", {}, j.kind), h("td", {}, badge(j.state)),
    h("td", {}, since(j.queued)), h("td", { class: "num" }, duration(j.duration_s))));

  return h("div", {},
    h("p", { class: "crumbs" }, link("#/vms", "VMs"), " / "),
    h("div", { class: "spread" }, h("h1", {}, name), h("div", { class: "row" }, backup, clone)),
    cloned ? h("p", { class: "notice", "data-testid": "cloned" }, `${name} is a linked clone of point `,
      link(`#/points/${encodeURIComponent(cloned)}`, cloned.slice(0, 12)), ": it runs on overlays of the point, held while it lives. ",
      link("#/instant", "Remove it"), " from what runs from a repository.") : null,
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
    ctx.can("points:read") ? pointsPanel(points, name) : null,
    h("section", { class: "panel", "aria-labelledby": "vm-jobs" },
      h("h2", { id: "vm-jobs" }, "Jobs"),
      table("Jobs", ["Job", "Kind", "State", "Queued", ["Took", "num"]], jobRows, "No jobs yet.")));
}
