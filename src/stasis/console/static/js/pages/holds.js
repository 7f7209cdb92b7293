// The held points (prune never removes them while held), and a release for those who
// may hold.

import { api } from "../api.js";
import { h, replace, link, bytes, time, table, problem, announce } from "../dom.js";

export async function render(ctx) {
  const held = await api("/points", { query: { held: true, limit: 1000, sort: "-time" } });
  const area = h("div", { "aria-live": "polite" });
  const release = (p) => ctx.can("points:hold") ? h("button", { type: "button", class: "small quiet",
    "aria-label": `Release the hold of ${p.name} ${p.id.slice(0, 12)}`, onclick: async (e) => {
      e.currentTarget.disabled = true;
      try {
        const done = await api(`/points/${p.id}/hold`, { method: "DELETE" });
        announce(done?.description ? `Released: ${done.description}` : "Released");
        ctx.go(location.hash);
      } catch (err) { replace(area, problem(err)); }
    } }, "Release") : null;
  return h("div", {},
    h("h1", {}, "Holds"),
    h("p", { class: "muted" }, "Points held from retention: prune keeps them, and they cannot be deleted, until released."),
    area,
    h("section", { class: "panel", "aria-label": "Held points" },
      table("Held points", ["Taken", "Name", "VMs", ["Size", "num"], "Id", ""], held.items.map((p) => h("tr", { "data-point": p.id },
        h("td", {}, link(`#/points/${p.id}`, time(p.time))), h("td", {}, p.name), h("td", {}, p.vms.join(", ")),
        h("td", { class: "num" }, bytes(p.size)), h("td", { class: "mono" }, p.id.slice(0, 12)), h("td", {}, release(p)))),
      "No point is held.")));
}
