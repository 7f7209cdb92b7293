// A recovery point: its VMs and disks, the consistency each VM reached, its hold; and
// what can be done with it: hold or release, restore a VM as a new one, clone it,
// explore its files, verify it deeply or copy it to another repository, delete it
// (after a confirmation that says what is lost).

import { all, api } from "../api.js";
import { h, replace, link, badge, bytes, time, table, facts, problem, startJob, announce } from "../dom.js";
import { field as formField, select as formSelect, placement, submitJob } from "../forms.js";

function field(id, label, input, hint) {
  return h("label", { for: id }, label, hint ? h("span", { class: "hint" }, hint) : null, input);
}

// The hold this page made last (the API answers a hold's reason and end when it is
// made), shown again once the page re-rendered.
let made = null;

function holdPanel(ctx, p, held, row) {
  const area = h("div", { "aria-live": "polite" },
    held && made?.point === p.id ? h("p", { class: "notice", "data-testid": "hold-made" }, made.description) : null);
  const status = h("div", {}, h("p", { "data-testid": "hold-state" }, held ? badge("held", "warn") : badge("not held"),
    held ? " Prune keeps this point while it is held." : " Retention decides about this point."),
  // the hold itself, as GET /points/{id}/hold reads it back (an expired one too)
  row ? h("div", { "data-testid": "hold-facts" }, facts([["Reason", row.reason || "none given"], ["Until", row.until ? time(row.until) : "released by hand"],
    ["By", row.by || "–"], ["Since", row.created ? time(row.created) : "–"],
    held ? null : ["State", "expired: retention decides again"]])) : null);
  if (!ctx.can("points:hold")) return h("section", { class: "panel", "aria-labelledby": "p-hold" }, h("h2", { id: "p-hold" }, "Hold"), status);
  const reason = h("input", { id: "hold-reason", name: "reason", maxlength: 500 });
  const until = h("input", { id: "hold-until", name: "until", placeholder: "2027-01-31, or 90d" });
  const submit = h("button", { type: "submit" }, "Hold point");
  const form = h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      const row = await api(`/points/${p.id}/hold`, { method: "POST",
        body: { reason: reason.value, until: until.value.trim() || null,
          timezone: Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC" } });
      made = row;
      announce(row.description);
      ctx.go(location.hash);
    } catch (err) { replace(area, problem(err)); submit.disabled = false; }
  } },
  field("hold-reason", "Reason", reason),
  field("hold-until", "Until", until, " a date, a date and time, or a span; empty: until released"),
  h("div", {}, submit));
  const release = h("button", { type: "button", class: "quiet", onclick: async () => {
    release.disabled = true;
    try {
      const done = await api(`/points/${p.id}/hold`, { method: "DELETE" });
      announce(done.description ? `Released: ${done.description}` : "Released");
      ctx.go(location.hash);
    } catch (err) { replace(area, problem(err)); release.disabled = false; }
  } }, "Release hold");
  return h("section", { class: "panel", "aria-labelledby": "p-hold" },
    h("h2", { id: "p-hold" }, "Hold"), status, area, held ? release : form);
}

function restorePanel(ctx, p) {
  const area = h("div", { "aria-live": "polite" });
  const vmSel = h("select", { id: "r-vm", name: "vm" }, p.vms.map((v) => h("option", { value: v.name }, v.name)));
  const name = h("input", { id: "r-name", name: "name", required: true, value: `${p.vms[0].name}-restored` });
  vmSel.addEventListener("change", () => { name.value = `${vmSel.value}-restored`; });
  const where = placement(ctx, "r", { storageHint: " a directory for the new disks; empty: beside the original ones" });
  const start = h("input", { id: "r-start", name: "start", type: "checkbox", checked: true });
  const submit = h("button", { type: "submit" }, "Restore as new VM");
  const form = h("form", { class: "stack", onsubmit: (e) => {
    e.preventDefault();
    const body = { what: "vm", point: p.id, name: name.value.trim(), start: start.checked, ...where.values() };
    if (p.vms.length > 1) body.vm = vmSel.value;
    submitJob(ctx, form, area, "/restores", body, submit, { name: "r-name", vm: "r-vm", ...where.fields });
  } },
  p.vms.length > 1 ? formField("r-vm", "VM of the point", vmSel) : null,
  formField("r-name", "New VM's name", name),
  where.nodes,
  h("label", { class: "check", for: "r-start" }, start, "Start it once restored"),
  h("div", {}, submit), area);
  return h("section", { class: "panel", "aria-labelledby": "p-restore" },
    h("h2", { id: "p-restore" }, "Restore as a new VM"),
    h("p", { class: "muted" }, "A new VM with a new name, UUID and MAC addresses, beside the original."), form);
}

// A deep verify of this point (every chunk read and checked) and a copy of it to another
// served repository: each a job of the system's (repositories:maintain), on its page.
// The repositories (whose listing reads each one's size) come after the page is shown.
function maintainPanel(ctx, p) {
  const area = h("div", { "aria-live": "polite" });
  const verify = h("button", { type: "button", onclick: (e) => startJob(ctx, "/verifications",
    { points: [p.id], deep: true }, e.currentTarget, area) }, "Verify the point");
  const to = formSelect("p-copy-to", [], null);
  const copy = h("button", { type: "submit", disabled: true }, "Copy the point");
  to.disabled = true;
  const form = h("form", { class: "stack", onsubmit: (e) => {
    e.preventDefault();
    submitJob(ctx, form, area, "/copies", { points: [p.id], to: to.value }, copy, { to: "p-copy-to", points: "p-copy-to" });
  } }, formField("p-copy-to", "Copy to", to, " another served repository; only what it lacks is sent"), h("div", {}, copy));
  const alone = h("p", { class: "muted", hidden: true }, "Copies go to another served repository: this server serves one.");
  if (ctx.can("repositories:read")) {
    all("/repositories").then((repos) => {
      const others = repos.filter((r) => !r.default);
      replace(to, others.map((r) => h("option", { value: r.name }, r.name)));
      to.disabled = copy.disabled = !others.length;
      form.hidden = !others.length;
      alone.hidden = !!others.length;
    }).catch((e) => replace(area, problem(e)));
  }
  return h("section", { class: "panel", "aria-labelledby": "p-maintain" },
    h("h2", { id: "p-maintain" }, "Verify and copy"),
    h("p", { class: "muted" }, "Verify reads every chunk of this point and checks it (a deep verify)."),
    h("div", { class: "row" }, verify), form, alone, area);
}

function deletePanel(ctx, p, held) {
  const area = h("div", { "aria-live": "polite" });
  const disks = p.vms.reduce((n, v) => n + v.disks.length, 0);
  const lost = `The point ${p.name} of ${new Date(p.time).toLocaleString()} (${p.id.slice(0, 12)}) will be gone: ` +
    `${p.vms.length} VM${p.vms.length > 1 ? "s" : ""} (${p.vms.map((v) => v.name).join(", ")}), ${disks} disk${disks > 1 ? "s" : ""}, ` +
    `${bytes(p.size)} as it was then. It can no longer be restored or explored. ` +
    "Data it shares with other points stays; what only it holds is freed by the next gc.";
  const dialog = h("dialog", { "aria-labelledby": "del-title", "aria-describedby": "del-what" },
    h("h2", { id: "del-title" }, "Delete this point?"),
    h("p", { id: "del-what" }, lost),
    h("form", { method: "dialog", class: "row end" },
      h("button", { value: "cancel", class: "quiet", autofocus: true }, "Keep it"),
      h("button", { value: "delete", class: "danger" }, "Delete the point")));
  dialog.addEventListener("close", async () => {
    if (dialog.returnValue !== "delete") return;
    try {
      await api(`/points/${p.id}`, { method: "DELETE" });
      announce(`Point ${p.name} deleted`);
      ctx.go(`#/vms/${encodeURIComponent(p.vms[0].name)}`);
    } catch (err) { replace(area, problem(err)); }
  });
  const open = h("button", { type: "button", class: "danger", disabled: held,
    onclick: () => { dialog.returnValue = ""; dialog.showModal(); } }, "Delete point…");
  return h("section", { class: "panel", "aria-labelledby": "p-delete" },
    h("h2", { id: "p-delete" }, "Delete"),
    held ? h("p", { class: "muted" }, "A held point cannot be deleted: release it first.") : null,
    open, dialog, area);
}

export async function render(ctx) {
  const [id] = ctx.params;
  const p = await api(`/points/${encodeURIComponent(id)}`);
  const hold = await api(`/points/${encodeURIComponent(p.id)}/hold`).catch(() => null);
  const held = !!hold?.held;
  // verify and copy are the system's (a tenant's principal is refused them)
  const maintains = ctx.can("repositories:maintain") && !ctx.me.tenant;
  const explore = (v, d) => ctx.can("files:read")
    ? link(`#/points/${p.id}/explore?vm=${encodeURIComponent(v.name)}&disk=${encodeURIComponent(d.target || d.name)}`,
      "Explore files", h("span", { class: "sr-only" }, ` of ${v.name} ${d.target || d.name}`))
    : null;
  const diskRows = p.vms.flatMap((v) => v.disks.map((d) => h("tr", {},
    h("td", {}, link(`#/vms/${encodeURIComponent(v.name)}`, v.name)),
    h("td", {}, d.target || d.name), h("td", {}, d.format),
    h("td", { class: "num" }, bytes(d.virtual_size)),
    h("td", {}, d.mode, d.reason ? h("span", { class: "muted" }, ` (${d.reason})`) : ""),
    h("td", { class: "num" }, bytes(d.bytes_read)), h("td", { class: "num" }, bytes(d.stored_new)),
    h("td", {}, explore(v, d)))));
  const frozen = p.timings?.frozen_ms ?? p.extra?.frozen_ms;
  return h("div", {},
    h("p", { class: "crumbs" }, link("#/vms", "VMs"), " / ",
      p.vms.map((v, i) => [i ? ", " : "", link(`#/vms/${encodeURIComponent(v.name)}`, v.name)]), " /"),
    h("h1", {}, `Point ${p.name} `, h("span", { class: "muted" }, `of ${new Date(p.time).toLocaleString()}`)),
    ctx.can("restores:run") ? h("p", { class: "row" }, h("a", { class: "button quiet", href: `#/points/${p.id}/recover` },
      "Recover: a disk, instant recovery, the group, in place…"),
    h("a", { class: "button quiet", href: `#/points/${p.id}/recover?what=clone` }, "Clone…")) : null,
    h("div", { class: "grid" },
      h("section", { class: "panel", "aria-labelledby": "p-facts" }, h("h2", { id: "p-facts" }, "Point"),
        facts([["Id", h("span", { class: "mono" }, p.id)], ["Taken", time(p.time)], ["Kind", p.kind],
          ["Size", bytes(p.size)], ["Parent", p.parent ? link(`#/points/${p.parent}`, p.parent.slice(0, 12)) : "none (first of its chain)"],
          ["Host", p.host], frozen !== undefined ? ["Frozen", `${Number(frozen).toFixed(1)} ms`] : null,
          Object.keys(p.tags || {}).length ? ["Tags", Object.entries(p.tags).map(([k, v]) => `${k}=${v}`).join(", ")] : null])),
      h("section", { class: "panel", "aria-labelledby": "p-cons" }, h("h2", { id: "p-cons" }, "Consistency"),
        facts(p.vms.map((v) => [v.name, [badge(v.consistency, v.consistency === "crash" ? "" : "ok"),
          v.extra?.consistency_note ? h("span", { class: "muted" }, ` ${v.extra.consistency_note}`) : ""]]))),
      holdPanel(ctx, p, held, hold?.hold)),
    h("section", { class: "panel", "aria-labelledby": "p-disks" }, h("h2", { id: "p-disks" }, "VMs and disks"),
      table("Disks", ["VM", "Disk", "Format", ["Size", "num"], "Read", ["Read bytes", "num"], ["Stored new", "num"], "Files"], diskRows)),
    h("div", { class: "grid" },
      ctx.can("restores:run") ? restorePanel(ctx, p) : null,
      maintains ? maintainPanel(ctx, p) : null,
      ctx.can("points:delete") ? deletePanel(ctx, p, held) : null));
}
