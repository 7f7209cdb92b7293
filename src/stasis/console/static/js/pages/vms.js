// The VMs: a searchable list with state, disks, labels, the protecting policies and the
// newest point with its age; "Back up now" starts a backup job and opens its page,
// "Clone…" and "Restore…" start from the newest point.

import { all } from "../api.js";
import { h, replace, link, badge, bytes, since, table, problem, startJob } from "../dom.js";

const VM_STATES = { running: "ok", paused: "warn", crashed: "bad" };

export function disksText(disks) {
  return disks.map((d) => `${d.target} ${bytes(d.virtual_size)}`).join(", ") || "–";
}

export async function render(ctx) {
  const [vms, status] = await Promise.all([
    all("/vms"),
    ctx.can("status:read") ? all("/status").catch(() => []) : [],
  ]);
  const byVm = new Map(status.map((s) => [s.vm, s]));
  const message = h("div", { "aria-live": "polite" });
  const rows = vms.map((v) => {
    const s = byVm.get(v.name);
    const lab = v.labels || {};  // in the listing: no request per VM
    const text = [v.name, v.state, ...Object.entries(lab).map(([k, x]) => `${k}=${x}`),
      ...(s?.policies || [])].join(" ").toLowerCase();
    const backup = ctx.can("backups:run") ? h("button", { type: "button", class: "small",
      "aria-label": `Back up ${v.name} now`,
      onclick: (e) => startJob(ctx, "/backups", { vms: [v.name] }, e.currentTarget, message) },
    "Back up now") : null;
    // clone and restore start from the VM's newest point (its page offers older ones)
    const fromNewest = ctx.can("restores:run") && v.newest_point ? [
      h("a", { class: "button quiet small", href: `#/points/${v.newest_point.id}/recover?what=clone&vm=${encodeURIComponent(v.name)}`,
        "aria-label": `Clone ${v.name}'s newest point` }, "Clone…"),
      h("a", { class: "button quiet small", href: `#/points/${v.newest_point.id}`,
        "aria-label": `Restore ${v.name} from its newest point` }, "Restore…")] : null;
    const tr = h("tr", { "data-search": text, "data-vm": v.name },
      h("td", {}, link(`#/vms/${encodeURIComponent(v.name)}`, v.name)),
      h("td", {}, badge(v.state, VM_STATES[v.state] ?? "")),
      h("td", {}, disksText(v.disks)),
      h("td", {}, Object.entries(lab).map(([k, x]) => h("span", { class: "badge" }, `${k}=${x}`)), Object.keys(lab).length ? "" : "–"),
      h("td", {}, s?.policies.join(", ") || "–"),
      h("td", { class: "nowrap" }, v.newest_point ? link(`#/points/${v.newest_point.id}`, since(v.newest_point.time)) : "none"),
      h("td", {}, h("span", { class: "row actions" }, backup, fromNewest)));
    return tr;
  });
  const count = h("p", { class: "muted", role: "status" }, `${rows.length} VMs`);
  const search = h("input", { type: "search", id: "vm-search", placeholder: "name, state, label, policy",
    oninput: () => {
      const q = search.value.trim().toLowerCase();
      let shown = 0;
      for (const tr of rows) {
        tr.hidden = !!q && !tr.dataset.search.includes(q);
        if (!tr.hidden) shown++;
      }
      replace(count, `${shown} of ${rows.length} VMs`);
    } });
  return h("div", {},
    h("h1", {}, "VMs"),
    h("div", { class: "panel" },
      h("div", { class: "spread" },
        h("div", { class: "row" }, h("label", { for: "vm-search" }, "Search"), search), count),
      message,
      table("VMs", ["Name", "State", "Disks", "Labels", "Policies", "Newest point", "Actions"], rows, "No VMs.")));
}
