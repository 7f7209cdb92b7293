// The console's shell: the session, the theme, the navigation and a hash router
// (#/vms/web1 ...). Each page is a module that renders into <main> from the API.

import { api, setCsrf } from "./api.js";
import { h, replace, announce, problem } from "./dom.js";
import * as signin from "./pages/signin.js";
import * as dashboard from "./pages/dashboard.js";
import * as vms from "./pages/vms.js";
import * as vm from "./pages/vm.js";
import * as job from "./pages/job.js";
import * as jobs from "./pages/jobs.js";
import * as point from "./pages/point.js";
import * as explore from "./pages/explore.js";
import { ROUTES2B, NAV2B } from "./pages/routes2b.js";

const ROUTES = [
  [/^\/$/, dashboard, "dashboard"],
  [/^\/vms$/, vms, "vms"],
  [/^\/vms\/([^/]+)$/, vm, "vms"],
  [/^\/jobs$/, jobs, "jobs"],
  [/^\/jobs\/(\d+)$/, job, "jobs"],
  [/^\/points\/([^/]+)$/, point, "vms"],
  [/^\/points\/([^/]+)\/explore$/, explore, "vms"],
  ...ROUTES2B,
];

const NAV = [
  ["#/", "Dashboard", "dashboard", "status:read"],
  ["#/vms", "VMs", "vms", "vms:read"],
  ["#/jobs", "Jobs", "jobs", "jobs:read"],
  ...NAV2B,
];

const main = document.getElementById("main");
let me = null;
let leaving = [];

function can(permission) {
  return !!me && me.permissions.some((p) => p.name === permission);
}

function go(hash) {
  if (location.hash === hash) route(); else location.hash = hash;
}

function parse() {
  const raw = location.hash.replace(/^#/, "") || "/";
  const [path, search] = raw.split("?");
  return { path, query: new URLSearchParams(search || "") };
}

function shell(section) {
  const nav = document.getElementById("nav");
  nav.hidden = !me;
  replace(nav, me ? h("ul", {}, NAV.filter(([, , , p]) => can(p)).map(([href, text, id]) =>
    h("li", {}, h("a", { href, "aria-current": id === section ? "page" : null }, text)))) : null);
  const who = document.getElementById("who");
  replace(who, me ? [
    h("span", { "data-testid": "whoami" }, `${me.user} · ${me.role}`,
      me.tenant ? ` · tenant ${me.tenant.name}` : ""),
    h("button", { type: "button", class: "quiet small", onclick: signOut }, "Sign out"),
  ] : null);
}

async function signOut() {
  try { await api("/session", { method: "DELETE" }); } catch (e) { /* gone already */ }
  me = null;
  setCsrf(null);
  announce("Signed out");
  route();
}

export async function signedIn(started) {
  setCsrf(started.csrf);
  me = { ...started.me, csrf: started.csrf };
  announce(`Signed in as ${me.user}`);
  route();
}

async function route() {
  for (const f of leaving) f();
  leaving = [];
  const { path, query } = parse();
  if (!me) {
    shell(null);
    replace(main, signin.render({ signedIn }));
    document.title = "Sign in · Stasis";
    main.querySelector("input")?.focus();
    return;
  }
  const found = ROUTES.map(([re, page, section]) => [path.match(re), page, section])
    .find(([m]) => m);
  shell(found ? found[2] : null);
  if (!found) {
    replace(main, h("h1", {}, "Not found"), h("p", {}, "No page here. ", h("a", { href: "#/" }, "Dashboard")));
    return;
  }
  const [match, page] = found;
  const ctx = {
    me, can, go, query, params: match.slice(1).map(decodeURIComponent),
    onLeave: (f) => leaving.push(f),
  };
  replace(main, h("p", { class: "loading", role: "status" }, "Loading…"));
  try {
    const node = await page.render(ctx);
    if (parse().path !== path) return; // the user went elsewhere meanwhile
    replace(main, node);
  } catch (e) {
    replace(main, h("h1", {}, "Something went wrong"), problem(e));
  }
  const heading = main.querySelector("h1");
  document.title = `${heading ? heading.textContent : "Stasis"} · Stasis`;
  main.focus({ preventScroll: true });
}

function theme() {
  const button = document.getElementById("theme");
  const dark = () => document.documentElement.dataset.theme === "dark" ||
    (!document.documentElement.dataset.theme && matchMedia("(prefers-color-scheme: dark)").matches);
  const show = () => {
    button.setAttribute("aria-pressed", String(dark()));
    button.textContent = dark() ? "Light theme" : "Dark theme";
  };
  const saved = localStorage.getItem("stasis-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  button.addEventListener("click", () => {
    const next = dark() ? "light" : "dark";
    document.documentElement.dataset.theme = next;
    localStorage.setItem("stasis-theme", next);
    show();
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", show);
  show();
}

async function start() {
  theme();
  window.addEventListener("hashchange", route);
  window.addEventListener("stasis:signed-out", () => {
    if (me) { me = null; setCsrf(null); route(); }
  });
  try {
    // A reloaded page: the session cookie is still there, and /me gives its CSRF token.
    me = await api("/me");
    setCsrf(me.csrf);
  } catch (e) {
    me = null;
  }
  route();
}

start();
