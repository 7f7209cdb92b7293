// The audit log: who did what to which object, when, and how it ended; newest first,
// filtered by user and action as the API filters.

import { api } from "../api.js";
import { h, badge, time, table } from "../dom.js";
import { field, input } from "../forms.js";

export async function render(ctx) {
  const user = ctx.query.get("user") || "";
  const action = ctx.query.get("action") || "";
  const cursor = ctx.query.get("cursor") || "";
  const page = await api("/audit", { query: { user, action, cursor, limit: 100 } });
  const u = input("a-user", { value: user });
  const a = input("a-action", { value: action, placeholder: "login, token., policy." });
  const go = (extra = {}) => {
    const q = new URLSearchParams();
    if (u.value.trim()) q.set("user", u.value.trim());
    if (a.value.trim()) q.set("action", a.value.trim());
    for (const [k, v] of Object.entries(extra)) q.set(k, v);
    ctx.go(`#/audit?${q}`);
  };
  return h("div", {},
    h("h1", {}, "Audit log"),
    h("section", { class: "panel", "aria-label": "Audit log" },
      h("form", { class: "row filters", role: "search", onsubmit: (e) => { e.preventDefault(); go(); } },
        field("a-user", "User", u), field("a-action", "Action", a, " starts with"), h("button", { type: "submit", class: "quiet" }, "Filter")),
      table("Audit log", ["When", "User", "Action", "Object", "Result", "From", "Detail"], page.items.map((l) => h("tr", {},
        h("td", { class: "nowrap" }, time(l.time)), h("td", {}, l.user || "–", l.token ? h("span", { class: "muted" }, ` (token ${l.token})`) : "",
          l.tenant ? h("span", { class: "muted" }, ` · ${l.tenant}`) : ""),
        h("td", {}, l.action), h("td", { class: "break" }, l.object),
        h("td", {}, badge(l.result, l.result === "ok" ? "ok" : "bad")), h("td", {}, l.address || "–"),
        h("td", { class: "break mono" }, Object.keys(l.detail).length ? JSON.stringify(l.detail) : ""))), "No lines."),
      page.next ? h("p", {}, h("button", { type: "button", class: "quiet", onclick: () => go({ cursor: page.next }) }, "Older lines")) : null));
}
