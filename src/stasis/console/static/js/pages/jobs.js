// The jobs the user may see, newest first, with a filter by state and kind.

import { api } from "../api.js";
import { h, link, badge, since, duration, bytes, table } from "../dom.js";

export async function render(ctx) {
  const state = ctx.query.get("state") || "";
  const kind = ctx.query.get("kind") || "";
  const jobs = await api("/jobs", { query: { state, kind, limit: 100 } });
  const select = (id, label, value, options) => h("span", { class: "row" }, h("label", { for: id }, label),
    h("select", { id, onchange: (e) => {
      const q = new URLSearchParams(ctx.query);
      if (e.target.value) q.set(id, e.target.value); else q.delete(id);
      ctx.go(`#/jobs?${q}`);
    } }, h("option", { value: "" }, "any"), options.map((o) => h("option", { value: o, selected: o === value }, o))));
  return h("div", {},
    h("h1", {}, "Jobs"),
    h("div", { class: "panel" },
      h("div", { class: "row" },
        select("state", "State", state, ["queued", "running", "succeeded", "failed", "interrupted"]),
        select("kind", "Kind", kind, ["backup", "restore", "verify", "prune", "gc", "copy"])),
      table("Jobs", ["Job", "Kind", "What", "State", "Queued", ["Took", "num"], ["Read", "num"], ["Written", "num"]],
        jobs.items.map((j) => h("tr", {},
          h("td", {}, link(`#/jobs/${j.id}`, `#${j.id}`)), h("td", {}, j.kind),
          h("td", {}, j.vms.join(", ") || j.name), h("td", {}, badge(j.state)),
          h("td", { class: "nowrap" }, since(j.queued)), h("td", { class: "num" }, duration(j.duration_s)),
          h("td", { class: "num" }, bytes(j.bytes_read)), h("td", { class: "num" }, bytes(j.bytes_written)))),
        "No jobs.")));
}
