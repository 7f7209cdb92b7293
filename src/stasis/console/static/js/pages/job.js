// One job: what it does, its state and bytes live, its log as it is written (the API's
// Server-Sent Events), what it made once it ended, and a Cancel button while it runs.

import { api, follow } from "../api.js";
import { h, replace, link, badge, bytes, time, duration, facts, problem, announce } from "../dom.js";

const ENDED = ["succeeded", "failed", "interrupted"];

function outcome(j) {
  const parts = Object.entries(j.result || {});
  if (!parts.length) return null;
  return h("ul", {}, parts.map(([what, p]) => h("li", {}, h("strong", {}, what), ": ",
    p.point ? ["point ", link(`#/points/${p.point}`, p.point_name ? `${p.point_name} (${p.point.slice(0, 12)})` : p.point.slice(0, 12))] : null,
    p.consistency ? `, ${p.consistency} consistent` : "",
    p.restored_as ? ["restored as ", link(`#/vms/${encodeURIComponent(p.restored_as)}`, p.restored_as), p.started ? ", started" : ""] : null,
    p.error ? h("span", { class: "error" }, ` ${p.error}`) : "")));
}

export async function render(ctx) {
  const [id] = ctx.params;
  const job = await api(`/jobs/${id}`);
  const state = h("span", { "data-testid": "job-state" }, badge(job.state));
  const read = h("span", { "data-testid": "job-read" }, bytes(job.bytes_read));
  const written = h("span", {}, bytes(job.bytes_written));
  const bar = h("progress", { "aria-label": "Job progress" });
  const log = h("pre", { class: "log", tabindex: 0, "aria-label": "Job log", "data-testid": "job-log" });
  const result = h("div", { "aria-live": "polite", "data-testid": "job-result" });
  const message = h("div", { "aria-live": "polite" });
  const cancel = ctx.can("jobs:cancel") ? h("button", { type: "button", class: "danger", onclick: async () => {
    cancel.disabled = true;
    try {
      const done = await api(`/jobs/${id}/cancel`, { method: "POST" });
      replace(message, h("p", { class: "notice" }, `Cancel: the job was ${done.was}; ${done.action}.`));
    } catch (e) { replace(message, problem(e)); cancel.disabled = false; }
  } }, "Cancel job") : null;

  const show = (j) => {
    replace(state, badge(j.state));
    replace(read, bytes(j.bytes_read));
    replace(written, bytes(j.bytes_written));
    if (ENDED.includes(j.state)) {
      bar.max = 1; bar.value = 1;
      if (cancel) cancel.hidden = true;
    }
  };
  const line = (l) => {
    log.append(h("span", { class: l.level }, `${l.time ? l.time.slice(11, 19) + " " : ""}${l.text}\n`));
    log.scrollTop = log.scrollHeight;
  };
  const ended = (j) => {
    show(j);
    replace(result, j.error ? h("p", { class: "error" }, h("strong", {}, `${j.state}: `), j.error) : null, outcome(j));
    announce(`Job ${id} ${j.state}`);
  };
  if (ENDED.includes(job.state)) {
    show(job);
    const page = await api(`/jobs/${id}/log`);
    page.lines.forEach(line);
    ended(job);
  } else {
    ctx.onLeave(follow(id, {
      onProgress: (p) => show({ ...job, ...p }),
      onLog: line,
      onEnd: ended,
    }));
  }
  return h("div", {},
    h("p", { class: "crumbs" }, link("#/jobs", "Jobs"), " / "),
    h("div", { class: "spread" }, h("h1", {}, `Job ${id}: ${job.kind} ${job.vms.join(", ") || job.name}`),
      h("div", { class: "row" }, cancel)),
    message,
    h("section", { class: "panel", "aria-labelledby": "job-facts" },
      h("h2", { id: "job-facts" }, "Progress"),
      facts([["State", state], ["Read", read], ["Written", written],
        ["VMs", job.vms.map((v, i) => [i ? ", " : "", link(`#/vms/${encodeURIComponent(v)}`, v)])],
        ["Repository", job.repo || "–"], ["Queued", time(job.queued)],
        job.by ? ["Started by", job.by] : null, job.policy ? ["Policy", job.policy] : null]),
      h("div", { class: "row" }, bar),
      result),
    h("section", { class: "panel", "aria-labelledby": "job-log-title" },
      h("h2", { id: "job-log-title" }, "Log"), log));
}
