// Accounts: users (add, disable or enable, remove), tokens (one's own, or everyone's
// for an admin: make one, its secret shown once, revoke) and tenants (what they own,
// where they may restore). Users and tenants are the system's admins' (users:admin).

import { all, api } from "../api.js";
import { h, replace, badge, time, table, problem, announce } from "../dom.js";
import { field, input, select, words, pairs, pairsText, showProblem } from "../forms.js";

const UKEYS = { name: "u-name", role: "u-role", tenant: "u-tenant", password: "u-password" };
const TKEYS = { name: "t-name", expires: "t-expires", role: "t-role" };
const NKEYS = { name: "n-name", vms: "n-vms", labels: "n-labels", restore_dirs: "n-dirs", restore_networks: "n-nets", restore_pools: "n-pools" };

function removeButton(label, run, area) {
  return h("button", { type: "button", class: "small danger", "aria-label": label, onclick: async (e) => {
    if (!confirm(`${label}?`)) return;
    e.currentTarget.disabled = true;
    try { await run(); } catch (err) { replace(area, problem(err)); e.currentTarget.disabled = false; }
  } }, "Remove");
}

export async function users(ctx) {
  const [rows, roles, tenants] = await Promise.all([all("/users"), all("/roles"), all("/tenants")]);
  const area = h("div", { "aria-live": "polite" });
  const f = {
    name: input("u-name", { required: true, autocomplete: "off" }),
    role: select("u-role", roles.map((r) => [r.name]), "viewer"),
    tenant: select("u-tenant", [["", "the whole system"], ...tenants.map((t) => [t.name])], ""),
    password: input("u-password", { type: "password", required: true, autocomplete: "new-password", minlength: 8 }),
  };
  const submit = h("button", { type: "submit" }, "Add user");
  const form = h("form", { class: "stack", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      const made = await api("/users", { method: "POST", body: { name: f.name.value.trim(), role: f.role.value,
        tenant: f.tenant.value || null, password: f.password.value } });
      announce(`User ${made.name} added`);
      ctx.go("#/users");
    } catch (err) { submit.disabled = false; showProblem(form, area, err, UKEYS); }
  } }, field("u-name", "Name", f.name), field("u-role", "Role", f.role), field("u-tenant", "Tenant", f.tenant),
  field("u-password", "Password", f.password, " at least 8 characters"), h("div", {}, submit), area);
  const toggle = (u) => h("button", { type: "button", class: "small quiet", "aria-label": `${u.disabled ? "Enable" : "Disable"} ${u.name}`,
    onclick: async (e) => {
      e.currentTarget.disabled = true;
      try { await api(`/users/${encodeURIComponent(u.name)}`, { method: "PATCH", body: { disabled: !u.disabled } }); ctx.go(location.hash); }
      catch (err) { replace(area, problem(err)); }
    } }, u.disabled ? "Enable" : "Disable");
  return h("div", {},
    h("h1", {}, "Users"),
    h("div", { class: "grid wide-first" },
      h("section", { class: "panel", "aria-label": "Users" },
        table("Users", ["Name", "Role", "Tenant", "State", "Created", "Last sign-in", ""], rows.map((u) => h("tr", { "data-user": u.name },
          h("td", {}, u.name), h("td", {}, u.role), h("td", {}, u.tenant || "–"),
          h("td", {}, u.disabled ? badge("disabled", "warn") : badge("active", "ok")), h("td", {}, time(u.created)),
          h("td", {}, u.last_login ? time(u.last_login) : "never"),
          h("td", {}, h("span", { class: "row actions" }, toggle(u), removeButton(`Remove user ${u.name}`, async () => {
            await api(`/users/${encodeURIComponent(u.name)}`, { method: "DELETE" }); ctx.go(location.hash);
          }, area))))))),
      h("section", { class: "panel", "aria-labelledby": "u-add" }, h("h2", { id: "u-add" }, "Add a user"), form)));
}

export async function tokens(ctx) {
  const admin = ctx.can("users:admin");
  const everyone = admin && ctx.query.get("all") === "1";
  const [rows, roles] = await Promise.all([all("/tokens", everyone ? { all: true } : {}),
    admin ? all("/roles").catch(() => []) : []]);
  const area = h("div", { "aria-live": "polite" });
  const secret = h("div", { "aria-live": "polite" });
  const f = {
    name: input("t-name", { required: true, autocomplete: "off" }),
    expires: input("t-expires", { value: "30d" }),
    role: select("t-role", [["", "as my role"], ...roles.map((r) => [r.name])], ""),
  };
  const submit = h("button", { type: "submit" }, "Make token");
  const form = h("form", { class: "stack", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      const made = await api("/tokens", { method: "POST", body: { name: f.name.value.trim(),
        expires: f.expires.value.trim() || null, role: f.role.value || null } });
      announce(`Token ${made.token.name} made`);
      const out = h("input", { id: "t-secret", readonly: true, value: made.secret, class: "mono", size: 60 });
      replace(secret, h("div", { class: "notice secret", "data-testid": "token-secret" },
        h("p", {}, h("strong", {}, `Token ${made.token.name}: `), "copy its secret now; it is shown this once and stored only as its hash."),
        h("label", { for: "t-secret" }, "Secret"), out));
      out.select();
      submit.disabled = false;
      f.name.value = "";
      replace(list, tokenTable(await all("/tokens", everyone ? { all: true } : {})));
    } catch (err) { submit.disabled = false; showProblem(form, area, err, TKEYS); }
  } }, field("t-name", "Name", f.name), field("t-expires", "Expires", f.expires, " 30d, 12h, a date; empty: never"),
  admin || roles.length ? field("t-role", "Narrower role", f.role) : null, h("div", {}, submit), area);
  const tokenTable = (items) => table("Tokens", ["Name", "User", "Starts", "Role", "State", "Expires", "Last used", ""], items.map((t) => h("tr", { "data-token": t.name },
    h("td", {}, t.name), h("td", {}, t.user), h("td", { class: "mono" }, `stasis_${t.prefix}_…`), h("td", {}, t.role || "the user's"),
    h("td", {}, badge(t.state, t.state === "active" ? "ok" : "warn")), h("td", {}, t.expires ? time(t.expires) : "never"),
    h("td", {}, t.last_used ? time(t.last_used) : "never"),
    h("td", {}, t.state === "active" ? h("button", { type: "button", class: "small danger", "aria-label": `Revoke token ${t.name}`, onclick: async (e) => {
      e.currentTarget.disabled = true;
      try {
        await api(`/tokens/${t.id}`, { method: "DELETE" });
        announce(`Token ${t.name} revoked`);
        replace(list, tokenTable(await all("/tokens", everyone ? { all: true } : {})));
      } catch (err) { replace(area, problem(err)); }
    } }, "Revoke") : null))), "No tokens.");
  const list = h("div", {}, tokenTable(rows));
  return h("div", {},
    h("div", { class: "spread" }, h("h1", {}, everyone ? "Every user's tokens" : "My tokens"),
      admin ? h("a", { href: everyone ? "#/tokens" : "#/tokens?all=1" }, everyone ? "Only mine" : "Every user's") : null),
    secret,
    h("div", { class: "grid wide-first" },
      h("section", { class: "panel", "aria-label": "Tokens" }, list),
      h("section", { class: "panel", "aria-labelledby": "t-add" }, h("h2", { id: "t-add" }, "Make a token"), form)));
}

export async function tenants(ctx) {
  const rows = await all("/tenants");
  const area = h("div", { "aria-live": "polite" });
  const f = {
    name: input("n-name", { required: true }), vms: input("n-vms"), labels: input("n-labels"),
    dirs: input("n-dirs"), nets: input("n-nets"), pools: input("n-pools"),
  };
  const submit = h("button", { type: "submit" }, "Add tenant");
  const form = h("form", { class: "stack", novalidate: true, onsubmit: async (e) => {
    e.preventDefault();
    submit.disabled = true;
    try {
      const made = await api("/tenants", { method: "POST", body: { name: f.name.value.trim(), vms: words(f.vms.value),
        labels: pairs(f.labels.value), restore_dirs: words(f.dirs.value), restore_networks: words(f.nets.value),
        restore_pools: words(f.pools.value) } });
      announce(`Tenant ${made.name} added`);
      ctx.go("#/tenants");
    } catch (err) { submit.disabled = false; showProblem(form, area, err, NKEYS); }
  } }, field("n-name", "Name", f.name), field("n-vms", "VMs it owns", f.vms, " names, by commas"),
  field("n-labels", "And the VMs labelled", f.labels, " key=value"), field("n-dirs", "Restore directories", f.dirs),
  field("n-nets", "Restore networks", f.nets), field("n-pools", "Restore storage pools", f.pools), h("div", {}, submit), area);
  return h("div", {},
    h("h1", {}, "Tenants"),
    h("div", { class: "grid wide-first" },
      h("section", { class: "panel", "aria-label": "Tenants" },
        table("Tenants", ["Name", "VMs", "Labels", "Restores to", "Users", ""], rows.map((t) => h("tr", { "data-tenant": t.name },
          h("td", {}, t.name), h("td", {}, t.vms.join(", ") || "–"), h("td", {}, pairsText(t.labels) || "–"),
          h("td", {}, [...t.restore_dirs, ...t.restore_networks.map((n) => `network ${n}`), ...t.restore_pools.map((p) => `pool ${p}`)].join(", ") || "–"),
          h("td", {}, t.users.join(", ") || "–"),
          h("td", {}, removeButton(`Remove tenant ${t.name}`, async () => {
            await api(`/tenants/${encodeURIComponent(t.name)}`, { method: "DELETE" }); ctx.go(location.hash);
          }, area)))), "No tenants.")),
      h("section", { class: "panel", "aria-labelledby": "n-add" }, h("h2", { id: "n-add" }, "Add a tenant"), form)));
}
