// What runs from a repository: instant VMs (finalize: their disks copied to local
// storage while they run, a job; discard: stopped and undefined, overlays removed),
// linked clones and attached disks.

import { api } from "../api.js";
import { h, replace, link, badge, table, problem, startJob, announce } from "../dom.js";

export async function render(ctx) {
  const rows = await api("/instant", { query: { limit: 1000 } });
  const started = ctx.query.get("started");
  const area = h("div", { "aria-live": "polite" });
  const dialog = h("dialog", { "aria-labelledby": "disc-title", "aria-describedby": "disc-what" },
    h("h2", { id: "disc-title" }, "Discard this instant VM?"), h("p", { id: "disc-what" }),
    h("form", { method: "dialog", class: "row end" },
      h("button", { value: "cancel", class: "quiet", autofocus: true }, "Keep it"),
      h("button", { value: "discard", class: "danger" }, "Discard the VM")));
  let discarding = null;
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "discard" || !discarding) return;
    try {
      const done = await api(`/instant/${encodeURIComponent(discarding)}/discard`, { method: "POST" });
      announce(`${discarding} discarded`);
      ctx.go("#/instant");
      void done;
    } catch (err) { replace(area, problem(err)); }
  });
  const actions = (r) => {
    if (r.kind !== "instant") return null;
    const fin = h("button", { type: "button", class: "small", "aria-label": `Finalize ${r.name}`,
      onclick: (e) => startJob(ctx, `/instant/${encodeURIComponent(r.name)}/finalize`, undefined, e.currentTarget, area) }, "Finalize");
    const dis = h("button", { type: "button", class: "small danger", "aria-label": `Discard ${r.name}`, onclick: () => {
      discarding = r.name;
      replace(dialog.querySelector("#disc-what"), `${r.name} will be stopped and undefined, its export stopped, and what it wrote since it started (its overlays) removed. The point stays.`);
      dialog.returnValue = ""; dialog.showModal();
    } }, "Discard…");
    return h("span", { class: "row actions" }, fin, dis);
  };
  return h("div", {},
    h("h1", {}, "Running from a repository"),
    started ? h("p", { class: "notice", "data-testid": "instant-started" }, `${started} runs from the repository. Finalize it to keep it, or discard it.`) : null,
    area,
    h("section", { class: "panel", "aria-label": "Instant VMs, clones and attached disks" },
      table("Running from a repository", ["Name", "Kind", "From", "Point", "State", "VM state", "Export", ""], rows.items.map((r) => h("tr", { "data-name": r.name },
        h("td", {}, r.kind === "attach" ? `${r.name} ${r.target || ""}` : link(`#/vms/${encodeURIComponent(r.name)}`, r.name)),
        h("td", {}, r.kind), h("td", {}, r.vm, r.disk ? ` ${r.disk}` : ""),
        h("td", { class: "mono" }, link(`#/points/${r.point}`, r.point.slice(0, 12))),
        h("td", {}, badge(r.state, r.state === "running" ? "ok" : "warn")), h("td", {}, r.vm_state),
        h("td", {}, r.export_alive ? badge("serving", "ok") : badge("stopped", "bad")),
        h("td", {}, actions(r)))), "Nothing runs from a repository.")),
    dialog);
}
