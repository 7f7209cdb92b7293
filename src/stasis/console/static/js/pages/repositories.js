// The served repositories: sizes, deduplication and compression; and for those who
// maintain them: verify (quick or deep), gc (a dry run says what it would free) and
// copies to another served repository — each a job, followed on its page.

import { all } from "../api.js";
import { h, bytes, facts, startJob } from "../dom.js";
import { field, input, select } from "../forms.js";

function actions(ctx, r, others) {
  const area = h("div", { "aria-live": "polite" });
  const k = r.name.replace(/[^A-Za-z0-9_-]/g, "_");
  const deep = h("input", { type: "checkbox", id: `v-deep-${k}` });
  const verify = h("button", { type: "button", "aria-label": `Verify ${r.name}`, onclick: (e) =>
    startJob(ctx, "/verifications", { repository: r.name, deep: deep.checked }, e.currentTarget, area) }, "Verify");
  const dry = h("input", { type: "checkbox", id: `gc-dry-${k}`, checked: true });
  const gc = h("button", { type: "button", "aria-label": `Collect garbage of ${r.name}`, onclick: (e) =>
    startJob(ctx, "/gc", { repository: r.name, dry_run: dry.checked }, e.currentTarget, area) }, "Collect garbage");
  const to = select(`c-to-${k}`, others.map((o) => [o.name]), others[0]?.name);
  const what = input(`c-what-${k}`, { placeholder: "every point" });
  const copyDry = h("input", { type: "checkbox", id: `c-dry-${k}` });
  const copy = h("button", { type: "button", "aria-label": `Copy from ${r.name}`, disabled: !others.length, onclick: (e) => {
    const body = { repository: r.name, to: to.value, dry_run: copyDry.checked };
    const w = what.value.trim();
    if (!w) body.all = true;
    else if (w.startsWith("policy:")) body.policy = w.slice(7);
    else body.name = w;
    startJob(ctx, "/copies", body, e.currentTarget, area);
  } }, "Copy");
  return h("div", { class: "stack" },
    h("div", { class: "row" }, verify, h("label", { class: "check", for: `v-deep-${k}` }, deep, "deep (read and check every chunk)")),
    h("div", { class: "row" }, gc, h("label", { class: "check", for: `gc-dry-${k}` }, dry, "dry run (say what it would free)")),
    others.length ? h("div", { class: "row" }, field(`c-to-${k}`, "Copy to", to),
      field(`c-what-${k}`, "Points", what, " a chain's name, policy:NAME, or empty: all"),
      h("label", { class: "check", for: `c-dry-${k}` }, copyDry, "dry run"), copy)
      : h("p", { class: "muted" }, "Copies go to another served repository: this server serves one."),
    area);
}

export async function render(ctx) {
  const repos = await all("/repositories");
  return h("div", {},
    h("h1", {}, "Repositories"),
    repos.map((r) => h("section", { class: "panel", "aria-labelledby": `repo-${r.name}`, "data-repo": r.name },
      h("h2", { id: `repo-${r.name}` }, r.name, r.default ? h("span", { class: "muted" }, " (default)") : ""),
      h("div", { class: "grid" },
        h("div", {}, facts([["URL", h("span", { class: "mono break" }, r.url)], ["Id", h("span", { class: "mono" }, r.id)],
          ["Points", String(r.info.points)], ["Logical", bytes(r.info.logical_size)], ["Stored", bytes(r.info.stored_size)],
          ["Deduplication", `${r.info.dedup_ratio.toFixed(2)}×`], ["Compression", `${r.info.compression_ratio.toFixed(2)}×`],
          ["Chunks", `${r.info.chunk_count} of ${bytes(r.info.chunk_size)}`], ["Encryption", r.info.encryption],
          ["Format", `version ${r.info.format_version}`]])),
        ctx.can("repositories:maintain") ? actions(ctx, r, repos.filter((o) => o.name !== r.name)) : null))));
}
