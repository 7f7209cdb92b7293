// The restore wizards of a point: a disk to a path or attached read-only to a running
// VM, instant recovery (a VM running from the repository at once, then finalized or
// discarded), a group's VMs into an isolated network (suffix, network, start order),
// a clone (full or linked), and a VM over itself in place (only while it is shut off). The jobs end on their
// page, which follows them live.

import { all, api } from "../api.js";
import { h, replace, link, bytes, problem, startJob, announce } from "../dom.js";
import { field, input, select, words, placement, submitJob, showProblem, checkField } from "../forms.js";

function vmChoice(p, id, onChange) {
  const sel = select(id, p.vms.map((v) => [v.name]), p.vms[0].name);
  if (onChange) sel.addEventListener("change", () => onChange(sel.value));
  return sel;
}

function panel(id, title, intro, ...children) {
  return h("section", { class: "panel", id: `w-${id}`, "aria-labelledby": `${id}-title` },
    h("h2", { id: `${id}-title` }, title), intro ? h("p", { class: "muted" }, intro) : null, ...children);
}

function diskWizard(ctx, p, running) {
  const area = h("div", { "aria-live": "polite" });
  const disks = p.vms.flatMap((v) => v.disks.map((d) => [`${v.name}/${d.target || d.name}`,
    `${v.name} ${d.target || d.name} (${d.format}, ${bytes(d.virtual_size)})`]));
  const disk = select("d-disk", disks, disks[0]?.[0]);
  const how = h("fieldset", { class: "choice" }, h("legend", {}, "Restore it"),
    h("label", { class: "check", for: "d-how-path" }, h("input", { type: "radio", name: "d-how", id: "d-how-path", value: "path", checked: true }), "to a path (a new image file)"),
    h("label", { class: "check", for: "d-how-attach" }, h("input", { type: "radio", name: "d-how", id: "d-how-attach", value: "attach", disabled: !running.length }),
      "attached read-only to a running VM", running.length ? "" : h("span", { class: "hint" }, " (no VM runs)")));
  const to = input("d-to", { placeholder: ctx.me.tenant?.restore_dirs[0] ? `${ctx.me.tenant.restore_dirs[0]}/disk.qcow2` : "/var/lib/libvirt/images/restored.qcow2" });
  const format = select("d-format", [["", "as in the point"], ["qcow2"], ["raw"]], "");
  const force = h("input", { type: "checkbox", id: "d-force" });
  const onto = select("d-onto", running.map((v) => [v.name]), running[0]?.name);
  const target = input("d-target", { placeholder: "the next free (vdb...)" });
  const pools = ctx.me.tenant?.restore_pools || [];
  const pool = input("d-pool", { list: "d-pools", placeholder: pools[0] || "none: a file" });
  const pathPart = h("div", { class: "stack" }, field("d-to", "Image to write", to, " a file path on the host"),
    field("d-pool", "Pool", pool, " or a libvirt storage pool: the image is then its new volume, named as above"),
    h("datalist", { id: "d-pools", "data-testid": "d-pools" }, pools.map((d) => h("option", { value: d }))),
    field("d-format", "Format", format), checkField(force, "Overwrite it if it exists"));
  const attachPart = h("div", { class: "stack", hidden: true }, field("d-onto", "Running VM", onto), field("d-target", "Device in the guest", target));
  how.addEventListener("change", () => {
    const attach = how.querySelector("input:checked").value === "attach";
    pathPart.hidden = attach; attachPart.hidden = !attach;
  });
  const submit = h("button", { type: "submit" }, "Restore disk");
  const form = h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    const [vm, d] = disk.value.split("/");
    if (how.querySelector("input:checked").value === "path") {
      const body = { what: "disk", point: p.id, vm, disk: d, to: to.value.trim(), force: force.checked };
      if (format.value) body.format = format.value;
      if (pool.value.trim()) body.pool = pool.value.trim();
      submitJob(ctx, form, area, "/restores", body, submit, { to: "d-to", pool: "d-pool", force: "d-force", format: "d-format" });
      return;
    }
    submit.disabled = true;
    try {
      const done = await api("/attachments", { method: "POST", body: { point: p.id, vm, disk: d, to: onto.value,
        target: target.value.trim() || null } });
      announce(`Attached as ${done.target} of ${done.vm}`);
      const detach = h("button", { type: "button", class: "quiet", onclick: async () => {
        detach.disabled = true;
        try {
          await api(`/attachments/${encodeURIComponent(done.vm)}/${encodeURIComponent(done.target)}`, { method: "DELETE" });
          replace(area, h("p", { class: "notice" }, `Detached ${done.target} from ${done.vm}; its export stopped.`));
        } catch (err) { replace(area, problem(err)); detach.disabled = false; }
      } }, "Detach");
      replace(area, h("p", { class: "notice", "data-testid": "attached" }, `${done.source_vm} ${done.disk} of the point is attached read-only to `,
        link(`#/vms/${encodeURIComponent(done.vm)}`, done.vm), ` as ${done.target}. `, detach));
    } catch (err) { replace(area, problem(err)); }
    submit.disabled = false;
  } }, field("d-disk", "Disk of the point", disk), how, pathPart, attachPart, h("div", {}, submit), area);
  return panel("disk", "A disk", "One disk of the point: as a new image file, or read-only into a running VM (its guest sees it as a new disk).", form);
}

function instantWizard(ctx, p) {
  const area = h("div", { "aria-live": "polite" });
  const name = input("i-name", { required: true, value: `${p.vms[0].name}-instant` });
  const vm = vmChoice(p, "i-vm", (v) => { name.value = `${v}-instant`; });
  const where = placement(ctx, "i", { storageHint: " a directory for the overlays (the writes)", pool: false });
  const submit = h("button", { type: "submit" }, "Start instant recovery");
  const form = h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    submit.disabled = true;
    replace(area, h("p", { role: "status" }, "Starting the VM from the repository…"));
    try {
      const body = { point: p.id, name: name.value.trim(), ...where.values() };
      if (p.vms.length > 1) body.vm = vm.value;
      const done = await api("/instant", { method: "POST", body });
      announce(`${done.name} runs from the repository`);
      ctx.go(`#/instant?started=${encodeURIComponent(done.name)}`);
    } catch (err) { replace(area, problem(err)); submit.disabled = false; }
  } }, p.vms.length > 1 ? field("i-vm", "VM of the point", vm) : null, field("i-name", "New VM's name", name),
  where.nodes, h("div", {}, submit), area);
  return panel("instant", "Instant recovery",
    "The VM runs at once from the repository (its disks read on demand, its writes kept beside). Then finalize it (its disks copied to local storage while it runs, a job) or discard it.", form);
}

function groupWizard(ctx, p) {
  const area = h("div", { "aria-live": "polite" });
  const suffix = input("g-suffix", { required: true, value: "-drill" });
  const where = placement(ctx, "g");
  const order = input("g-order", { value: p.vms.map((v) => v.name).join(", ") });
  const start = h("input", { type: "checkbox", id: "g-start", checked: true });
  const submit = h("button", { type: "submit" }, "Restore the group");
  const form = h("form", { class: "stack", onsubmit: (e) => {
    e.preventDefault();
    const body = { what: "group", point: p.id, suffix: suffix.value, start: start.checked, ...where.values() };
    if (words(order.value).length) body.order = words(order.value);
    submitJob(ctx, form, area, "/restores", body, submit, { suffix: "g-suffix", order: "g-order", ...where.fields });
  } }, field("g-suffix", "Suffix", suffix, " added to each VM's name"), where.nodes,
  field("g-order", "Start order", order, " VM names, first started first"),
  h("label", { class: "check", for: "g-start" }, start, "Start them once restored"), h("div", {}, submit), area);
  return panel("group", "The group, into an isolated network",
    `Every VM of the point (${p.vms.map((v) => v.name).join(", ")}) as a new VM named with the suffix; give an isolated network for a drill beside the originals.`, form);
}

// A clone: a new VM (new name, UUID, MACs) from the point, either a full sparse copy
// (a job: its page follows it) or linked (qcow2 overlays on an export of the point,
// made at once: the new VM's page; removed from the page of what runs from a
// repository, and the point held while it lives).
function cloneWizard(ctx, p) {
  const area = h("div", { "aria-live": "polite" });
  const chosen = p.vms.some((v) => v.name === ctx.query.get("vm")) ? ctx.query.get("vm") : p.vms[0].name;
  const name = input("c-name", { required: true, value: `${chosen}-clone` });
  const vm = vmChoice(p, "c-vm", (v) => { name.value = `${v}-clone`; });
  vm.value = chosen;
  const how = h("fieldset", { class: "choice" }, h("legend", {}, "Clone"),
    h("label", { class: "check", for: "c-full" }, h("input", { type: "radio", name: "c-how", id: "c-full", value: "full", checked: true }),
      "a full copy (its own disks, a job)"),
    h("label", { class: "check", for: "c-linked" }, h("input", { type: "radio", name: "c-how", id: "c-linked", value: "linked" }),
      "linked (overlays on the point, at once; the point is held while it lives)"));
  const where = placement(ctx, "c", { storageHint: " a directory for its disks (linked: its overlays)" });
  const start = h("input", { type: "checkbox", id: "c-start" });
  const submit = h("button", { type: "submit" }, "Make the clone");
  const form = h("form", { class: "stack", onsubmit: async (e) => {
    e.preventDefault();
    const linked = how.querySelector("input:checked").value === "linked";
    const body = { point: p.id, name: name.value.trim(), linked, start: start.checked, ...where.values() };
    if (p.vms.length > 1) body.vm = vm.value;
    submit.disabled = true;
    replace(area, linked ? h("p", { role: "status" }, "Making the linked clone…") : null);
    try {
      const made = await api("/clones", { method: "POST", body });
      if (made.job) { ctx.go(`#/jobs/${made.job.id}`); return; }
      announce(`${made.name} made, linked to point ${p.name}`);
      ctx.go(`#/vms/${encodeURIComponent(made.name)}?cloned=${encodeURIComponent(p.id)}`);
    } catch (err) {
      submit.disabled = false;
      showProblem(form, area, err, { name: "c-name", vm: "c-vm", linked: "c-linked", ...where.fields });
    }
  } }, p.vms.length > 1 ? field("c-vm", "VM of the point", vm) : null, field("c-name", "New VM's name", name),
  how, where.nodes, h("label", { class: "check", for: "c-start" }, start, "Start it once made"), h("div", {}, submit), area);
  return panel("clone", "A clone", "A new VM from the point, with a new name, UUID and MAC addresses, beside the original.", form);
}

function inPlaceWizard(ctx, p, states) {
  const area = h("div", { "aria-live": "polite" });
  const warn = h("div", { "aria-live": "polite" });
  const start = h("input", { type: "checkbox", id: "ip-start" });
  const sure = h("input", { type: "checkbox", id: "ip-sure" });
  const submit = h("button", { type: "submit", class: "danger" }, "Restore in place");
  const vm = vmChoice(p, "ip-vm", () => show());
  const show = () => {
    const state = states.get(vm.value);
    const off = state === "shut off";
    replace(warn, off
      ? h("p", { class: "warning", "data-testid": "in-place-warning" }, `${vm.value}'s disks will be overwritten with the point's. What it wrote since ${new Date(p.time).toLocaleString()} is lost.`)
      : h("p", { class: "warning", "data-testid": "in-place-warning" }, state === undefined
        ? `${vm.value} is not defined on this host: restore it as a new VM instead.`
        : `${vm.value} is ${state}: a VM is restored in place only while it is shut off. Shut it down first.`));
    sure.disabled = !off;
    submit.disabled = !off || !sure.checked;
  };
  sure.addEventListener("change", show);
  const form = h("form", { class: "stack", onsubmit: (e) => {
    e.preventDefault();
    startJob(ctx, "/restores", { what: "vm", point: p.id, vm: vm.value, in_place: true, start: start.checked }, submit, area);
  } }, field("ip-vm", "VM", vm), warn,
  h("label", { class: "check", for: "ip-sure" }, sure, "Overwrite its disks"),
  h("label", { class: "check", for: "ip-start" }, start, "Start it once restored"), h("div", {}, submit), area);
  show();
  return panel("in-place", "A VM in place", "Over the VM itself, with its name, UUID and MAC addresses.", form);
}

export async function render(ctx) {
  const [id] = ctx.params;
  const p = await api(`/points/${encodeURIComponent(id)}`);
  const vms = ctx.can("vms:read") ? await all("/vms").catch(() => []) : [];
  const states = new Map(vms.map((v) => [v.name, v.state]));
  const running = vms.filter((v) => v.state === "running");
  const choose = ctx.query.get("what");
  const wizards = [
    ["disk", "a disk", () => diskWizard(ctx, p, running)],
    ["instant", "instant recovery", () => instantWizard(ctx, p)],
    p.vms.length > 1 || p.kind === "group" ? ["group", "the group", () => groupWizard(ctx, p)] : null,
    ["clone", "a clone", () => cloneWizard(ctx, p)],
    ["in-place", "a VM in place", () => inPlaceWizard(ctx, p, states)],
  ].filter(Boolean);
  const shown = wizards.filter(([k]) => !choose || k === choose);
  return h("div", {},
    h("p", { class: "crumbs" }, link(`#/points/${p.id}`, `Point ${p.name}`), " / "),
    h("h1", {}, `Recover from point ${p.name} `, h("span", { class: "muted" }, `of ${new Date(p.time).toLocaleString()}`)),
    ctx.can("restores:run") ? null : h("p", { class: "error", role: "alert" }, "Restoring needs the permission restores:run."),
    h("nav", { class: "row tabs", "aria-label": "Recover what" },
      h("a", { href: `#/points/${p.id}/recover`, "aria-current": choose ? null : "page" }, "everything"),
      wizards.map(([k, text]) => h("a", { href: `#/points/${p.id}/recover?what=${k}`, "aria-current": choose === k ? "page" : null }, text))),
    ctx.can("restores:run") ? h("div", { class: "grid" }, shown.map(([, , make]) => make())) : null);
}
