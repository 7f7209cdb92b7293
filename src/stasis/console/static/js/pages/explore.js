// Explore a disk of a point: browse its partitions and file systems (as the API's files
// routes read them), find files by name, download a file, or a directory as zip or
// tar.zst, or select several files and directories and download them as one zip (the
// archive route takes a list of paths; the selection lasts while the page is open).

import { api, href } from "../api.js";
import { h, svg, replace, link, bytes, when, table, problem } from "../dom.js";

// Small line icons, drawn here (no icon font or file to fetch).
const SHAPES = {
  dir: "M1.5 3.5h4l1.5 1.5h7.5v8.5h-13z",
  file: "M3.5 1.5h6l3 3v10h-9z M9.5 1.5v3h3",
  symlink: "M2 11c0-4 3-6 7-6h4 M10 2l3 3-3 3",
  volume: "M1.5 4.5h13v7h-13z M4 8h.5",
};
const icon = (kind) => svg("svg", { class: "icon", viewBox: "0 0 16 16", "aria-hidden": "true" },
  svg("path", { d: SHAPES[kind] || SHAPES.file }));

function split(path) {
  const m = path.match(/^([^/]*):(\/.*)?$/);
  return m ? [m[1], m[2] || "/"] : [null, path || "/"];
}

function join(volume, dir, name) {
  const p = `${dir.replace(/\/$/, "")}/${name}`;
  return volume !== null ? `${volume}:${p}` : p;
}

export async function render(ctx) {
  const [id] = ctx.params;
  const vm = ctx.query.get("vm");
  const disk = ctx.query.get("disk");
  const path = ctx.query.get("path") || "/";
  const [volume, dir] = split(path);
  const here = (p) => `#/points/${id}/explore?${new URLSearchParams({ vm, disk, path: p })}`;
  const base = { vm, disk };
  const [point, listing] = await Promise.all([
    api(`/points/${encodeURIComponent(id)}`),
    api(`/points/${encodeURIComponent(id)}/files`, { query: { ...base, path, limit: 1000 } }).catch((e) => e),
  ]);

  // The selection: paths of this disk, each with the name shown.
  const selected = new Map();
  const boxes = new Map();  // path -> its checkboxes (a file listed and found shows twice)
  const chosen = h("span", { role: "status", "data-testid": "selected-count" });
  const zipSelected = h("a", { class: "button small", download: "selection.zip", hidden: true }, "Download selected as zip");
  const clear = h("button", { type: "button", class: "quiet small", hidden: true, onclick: () => {
    selected.clear();
    for (const list of boxes.values()) for (const b of list) b.checked = false;
    showSelection();
  } }, "Clear selection");
  function showSelection() {
    const n = selected.size;
    replace(chosen, n ? `${n} selected: ${[...selected.values()].slice(0, 3).join(", ")}${n > 3 ? ", …" : ""}` : "Nothing selected");
    zipSelected.hidden = clear.hidden = !n;
    zipSelected.href = n ? href(`/points/${id}/files/archive`, { ...base, path: [...selected.keys()], format: "zip" }) : "";
    zipSelected.setAttribute("aria-label", `Download the ${n} selected as zip`);
  }
  const pick = (p, label) => {
    const box = h("input", { type: "checkbox", checked: selected.has(p), "aria-label": `Select ${label}`,
      onchange: () => {
        if (box.checked) selected.set(p, label); else selected.delete(p);
        for (const b of boxes.get(p) || []) b.checked = box.checked;
        showSelection();
      } });
    boxes.set(p, [...(boxes.get(p) || []), box]);
    return box;
  };
  showSelection();

  const entryRow = (e, from) => {
    if (e.type === "volume") {
      return h("tr", {}, h("td", {}), h("td", {}, icon("volume"), link(here(`${e.name}:/`), e.name)),
        h("td", {}, e.filesystem || e.error || "no file system read"), h("td", { class: "num" }, bytes(e.size)),
        h("td", {}, e.description), h("td", {}));
    }
    const p = from ? e.path : join(volume, dir, e.name);
    const shown = from ? `${e.vm ?? vm}/${e.disk ?? disk}: ${e.path}` : e.name;
    const q = { vm: e.vm ?? vm, disk: e.disk ?? disk };
    const nameCell = e.type === "dir"
      ? h("td", {}, icon("dir"), link(here(p), shown), "/")
      : h("td", {}, icon(e.type), shown,
        e.link ? h("span", { class: "muted" }, ` → ${e.link}`) : "");
    const actions = e.type === "file"
      ? h("a", { href: href(`/points/${id}/files/content`, { ...q, path: p }), download: e.name,
        "aria-label": `Download ${e.name}` }, "Download")
      : e.type === "dir"
        ? [h("a", { href: href(`/points/${id}/files/archive`, { ...q, path: p, format: "zip" }), download: `${e.name}.zip`,
          "aria-label": `Download ${e.name} as zip` }, "zip"), " · ",
        h("a", { href: href(`/points/${id}/files/archive`, { ...q, path: p, format: "tar.zst" }), download: `${e.name}.tar.zst`,
          "aria-label": `Download ${e.name} as tar.zst` }, "tar.zst")]
        : null;
    // only this disk's files go in the selection (an archive is of one disk)
    const mine = !from || ((e.vm ?? vm) === vm && (e.disk ?? disk) === disk);
    return h("tr", { "data-path": p },
      h("td", { class: "select-col" }, mine && e.type !== "symlink" ? pick(p, from ? e.path : e.name) : null),
      nameCell, h("td", { class: "mono" }, e.mode_text), h("td", { class: "num" }, e.type === "file" ? bytes(e.size) : ""),
      h("td", { class: "nowrap" }, when(e.mtime)), h("td", {}, actions));
  };

  // Breadcrumbs: the disk, its volume, then each directory down to here.
  const crumbs = [link(here("/"), `${vm} ${disk}`)];
  let walked = volume !== null ? `${volume}:` : "";
  if (volume !== null) crumbs.push(" / ", link(here(`${volume}:/`), volume));
  for (const part of dir.split("/").filter(Boolean)) {
    walked = `${walked}/${part}`;
    crumbs.push(" / ", link(here(walked), part));
  }

  const results = h("div", { "aria-live": "polite" });
  const pattern = h("input", { id: "find", type: "search", placeholder: "leaf.txt, *.conf" });
  const find = h("form", { class: "row", role: "search", onsubmit: async (e) => {
    e.preventDefault();
    const text = pattern.value.trim();
    if (!text) return;
    // A plain word finds names that contain it; a glob is the API's own.
    const glob = /[*?[]/.test(text) ? text : `*${text}*`;
    replace(results, h("p", { role: "status" }, "Searching…"));
    try {
      const found = await api(`/points/${encodeURIComponent(id)}/files/find`, { query: { ...base, pattern: glob, limit: 500 } });
      replace(results, h("h3", {}, `${found.items.length}${found.next ? "+" : ""} found for ${glob}`),
        table("Files found", [["Select", "select-col"], "Path", "Mode", ["Size", "num"], "Modified", "Download"],
          found.items.map((x) => entryRow(x, true)), "Nothing matches."));
    } catch (err) { replace(results, problem(err)); }
  } }, h("label", { for: "find" }, "Find by name"), pattern, h("button", { type: "submit" }, "Find"));

  const whole = dir === "/" && volume === null ? "the disk" : (dir.split("/").filter(Boolean).pop() || volume);
  const archive = (fmt) => h("a", { class: "button quiet small", download: "",
    href: href(`/points/${id}/files/archive`, { ...base, path, format: fmt }) }, `Download ${whole} as ${fmt}`);

  return h("div", {},
    h("p", { class: "crumbs" }, link(`#/vms/${encodeURIComponent(vm)}`, vm), " / ",
      link(`#/points/${id}`, `point ${point.name} of ${new Date(point.time).toLocaleString()}`), " /"),
    h("h1", {}, `Files of ${vm} ${disk}`),
    h("section", { class: "panel", "aria-label": "Find files" }, find, results),
    h("section", { class: "panel row", "aria-label": "Selection" }, chosen, zipSelected, clear),
    h("section", { class: "panel", "aria-labelledby": "dir-title" },
      h("div", { class: "spread" },
        h("h2", { id: "dir-title" }, h("nav", { class: "path", "aria-label": "Path" }, crumbs)),
        listing instanceof Error || !listing.items.length || listing.items[0].type === "volume" ? null
          : h("div", { class: "row" }, archive("zip"), archive("tar.zst"))),
      listing instanceof Error ? problem(listing)
        : table("Directory", [["Select", "select-col"], "Name", "Mode", ["Size", "num"], "Modified", "Download"],
          listing.items.map((e) => entryRow(e, false)), "This directory is empty.")));
}
