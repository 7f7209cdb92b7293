// What runs from a repository: instant VMs (finalize: their disks copied to local
// storage, or to a libvirt pool, while they run, a job; discard: stopped and
// undefined, overlays removed), linked clones (removed: stopped and undefined, their
// overlays and export gone, the point's hold released with its last clone) and
// attached disks.

import { api } from "../api.js";
import { h, replace, link, badge, table, problem, announce } from "../dom.js";
import { field, input, submitJob } from "../forms.js";

// A dialog that says what is lost and asks; `act` runs on yes.
function confirmer(id, title, yes, act) {
  const what = h("p", { id: `${id}-what` });
  const dialog = h("dialog", { "aria-labelledby": `${id}-title`, "aria-describedby": `${id}-what` },
    h("h2", { id: `${id}-title` }, title), what,
    h("form", { method: "dialog", class: "row end" },
      h("button", { value: "cancel", class: "quiet", autofocus: true }, "Keep it"),
      h("button", { value: "yes", class: "danger" }, yes)));
  let target = null;
  dialog.addEventListener("close", () => { if (dialog.returnValue === "yes" && target) act(target); });
  const ask = (name, text) => { target = name; replace(what, text); dialog.returnValue = ""; dialog.showModal(); };
  return { dialog, ask };
}

// Finalize with the disks copied to the instant VM's storage directory, or to new
// volumes of a libvirt pool (the tenant's pools offered).
function finalizeForm(ctx, r, area) {
  const id = `fin-${r.name.replace(/[^A-Za-z0-9_-]/g, "_")}`;
  const pools = ctx.me.tenant?.restore_pools || [];
  const pool = input(`${id}-pool`, { list: `${id}-pools`, placeholder: pools[0] || "none: its storage" });
  const submit = h("button", { type: "submit", class: "small", "aria-label": `Finalize ${r.name}` }, "Finalize");
  const form = h("form", { class: "row actions", onsubmit: (e) => {
    e.preventDefault();
    const body = pool.value.trim() ? { pool: pool.value.trim() } : undefined;
    submitJob(ctx, form, area, `/instant/${encodeURIComponent(r.name)}/finalize`, body, submit, { pool: `${id}-pool` });
  } }, field(`${id}-pool`, h("span", {}, "Pool", h("span", { class: "sr-only" }, ` for ${r.name}`)), pool),
  h("datalist", { id: `${id}-pools` }, pools.map((d) => h("option", { value: d }))), submit);
  return form;
}

export async function render(ctx) {
  const rows = await api("/instant", { query: { limit: 1000 } });
  const started = ctx.query.get("started");
  const area = h("div", { "aria-live": "polite" });
  const discard = confirmer("disc", "Discard this instant VM?", "Discard the VM", async (name) => {
    try {
      await api(`/instant/${encodeURIComponent(name)}/discard`, { method: "POST" });
      announce(`${name} discarded`);
      ctx.go("#/instant");
    } catch (err) { replace(area, problem(err)); }
  });
  const remove = confirmer("rm", "Remove this linked clone?", "Remove the clone", async (name) => {
    try {
      const done = await api(`/clones/${encodeURIComponent(name)}`, { method: "DELETE" });
      announce(`${name} removed${done.hold ? `; the point is ${done.hold}` : ""}`);
      ctx.go("#/instant");
    } catch (err) { replace(area, problem(err)); }
  });
  const actions = (r) => {
    if (r.kind === "clone") {
      return h("button", { type: "button", class: "small danger", "aria-label": `Remove ${r.name}`, onclick: () =>
        remove.ask(r.name, `${r.name} will be stopped and undefined, its export stopped, and its overlays (all it wrote) removed. The point stays; its hold goes with its last clone.`) },
      "Remove…");
    }
    if (r.kind !== "instant") return null;
    const dis = h("button", { type: "button", class: "small danger", "aria-label": `Discard ${r.name}`, onclick: () =>
      discard.ask(r.name, `${r.name} will be stopped and undefined, its export stopped, and what it wrote since it started (its overlays) removed. The point stays.`) },
    "Discard…");
    return h("div", { class: "row actions" }, finalizeForm(ctx, r, area), dis);
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
    discard.dialog, remove.dialog);
}
